"""Tests of the progress reporter (core/framework/progress.py) and of the sampled fits that keep stages 02 and 03
from growing with the customer count (issue 18)."""

from __future__ import annotations

import io
import logging
import threading

import numpy as np
import pytest

from core.framework import progress
from core.framework.progress import Progress, format_seconds, output_mode


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_log_lines_come_at_most_once_per_interval_with_the_time_left(caplog):
    clock = Clock()
    caplog.set_level(logging.INFO, logger="core.framework.progress")
    with Progress("02: features", total=200, unit="customers", mode="log", interval=10, clock=clock) as bar:
        clock.now += 4
        bar.advance(40)  # 4 s in: too soon for a line
        assert caplog.messages == []
        clock.now += 6
        bar.advance(10, "customer sums")  # 10 s for 50 of 200: 30 s left at that pace
        clock.now += 1
        bar.advance(50)  # 1 s after the last line: none
    assert caplog.messages == ["02: features: 25% (50 of 200 customers) [customer sums], 10 s, about 30 s left",
                               "02: features: done in 11 s"]


def test_a_step_that_ends_before_the_first_interval_logs_nothing(caplog):
    caplog.set_level(logging.INFO, logger="core.framework.progress")
    clock = Clock()
    with Progress("quick", total=3, mode="log", interval=10, clock=clock) as bar:
        for _ in range(3):
            clock.now += 1
            bar.advance()
    assert caplog.messages == []


def test_the_console_bar_redraws_one_line_and_ends_it():
    clock, stream = Clock(), io.StringIO()
    with Progress("04: fitting", total=4, unit="models", mode="bar", stream=stream, interval=0, clock=clock) as bar:
        for _ in range(2):
            clock.now += 5
            bar.advance()
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    drawings = text.rstrip("\n").split("\r")
    assert drawings[0] == "[######..................] 04: fitting: 25% (1 of 4 models), 5 s, about 15 s left"
    assert drawings[1].startswith("[############............] 04: fitting: 50% (2 of 4 models), 10 s, about 10 s left")


def test_the_estimate_counts_down_while_a_long_part_reports_nothing(caplog):
    # Stage 05 sat at 3% for 11 minutes in a part worth 70%: at the pace so far the estimate grew to 6 hours.
    caplog.set_level(logging.INFO, logger="core.framework.progress")
    clock = Clock()
    with Progress("05", total=100, unit="%", mode="log", interval=10, clock=clock) as bar:
        clock.now += 3
        bar.update(3, "inputs read")
        with bar.step(70, "next-best classes"):
            for _ in range(4):
                clock.now += 30
                bar.update(bar.done)  # a heartbeat: nothing moved
        clock.now += 1
    assert caplog.messages[:4] == ["05: 3% [next-best classes], 33 s, about 1 min 07 s left",
                                   "05: 3% [next-best classes], 1 min 03 s, about 37 s left",
                                   "05: 3% [next-best classes], 1 min 33 s, about 7 s left",
                                   "05: 3% [next-best classes], 2 min 03 s, longer than estimated"]


def test_report_moves_the_enclosing_step_within_its_share_and_does_nothing_outside():
    clock = Clock()
    progress.report(0.5)  # no reporter open: nothing happens, nothing fails
    with Progress("stage", total=100, unit="%", mode="off", clock=clock) as bar:
        with bar.step(60, "features"):
            progress.report(0.5, "half way")
            assert bar.done == 30 and bar.note == "half way"
        assert bar.done == 60
        with bar.step(40, "writing"):
            progress.report(2.0)  # beyond the step's end: capped at its share
            assert bar.done == 100
    progress.report(0.5)
    assert bar.done == 100


def test_output_mode_follows_the_console_ci_and_the_override(monkeypatch):
    class Console(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("PIPELINE_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    assert output_mode(Console()) == "bar"
    assert output_mode(io.StringIO()) == "log"  # a file or a pipe
    monkeypatch.setenv("CI", "true")
    assert output_mode(Console()) == "log"
    monkeypatch.setenv("PIPELINE_PROGRESS", "off")
    assert output_mode(Console()) == "off"
    with pytest.raises(ValueError, match="progress mode 'loud': use one of bar, log, off"):
        Progress("x", 1, mode="loud")


def test_format_seconds_reads_as_a_person_would_say_it():
    assert [format_seconds(s) for s in (0.4, 59, 61, 3599, 3720)] == ["0 s", "59 s", "1 min 01 s", "59 min 59 s",
                                                                      "1 h 02 min"]


# --- the sampled fits -----------------------------------------------------------


def test_stage_03_trains_on_everyone_up_to_the_sample_size_then_on_a_seeded_sample():
    from core.train_autoencoder.stage import fit_sample_rows

    assert fit_sample_rows(500, 500, seed=1) is None
    rows = fit_sample_rows(1000, 300, seed=1)
    assert len(rows) == 300 and len(np.unique(rows)) == 300 and np.all(np.diff(rows) > 0)
    assert np.array_equal(rows, fit_sample_rows(1000, 300, seed=1))
    assert not np.array_equal(rows, fit_sample_rows(1000, 300, seed=2))


def test_encoding_in_batches_gives_what_one_pass_gives():
    from core.train_autoencoder.autoencoder import AutoencoderTransformer
    from core.train_autoencoder.stage import encode_in_batches

    X = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    model = AutoencoderTransformer(hidden_units=(4,), latent_dim=2, epochs=2, batch_size=16, random_state=0).fit(X)
    latent, error = encode_in_batches(model, X, batch_rows=7)
    assert latent.shape == (50, 2) and error.shape == (50,)
    np.testing.assert_allclose(latent, model.transform(X), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(error, model.reconstruction_error(X), rtol=1e-6, atol=1e-7)


def test_customer_value_fitted_on_a_sample_still_predicts_for_every_customer():
    from core.prepare_features.customer_value import estimate_customer_value, fit_sample

    assert fit_sample(5, None).all() and fit_sample(5, 5).all()
    assert fit_sample(10, 4).sum() == 4
    rng = np.random.default_rng(3)
    n = 600
    orders = []
    for customer in range(n):
        visits = 1 + rng.poisson(4)
        days = np.sort(rng.choice(700, size=visits, replace=False))
        orders += [(customer, day, float(rng.gamma(4, 10))) for day in days]
    import pandas as pd

    frame = pd.DataFrame(orders, columns=["customer_id", "day", "order_value"])
    frame["order_date"] = pd.Timestamp("2023-01-01") + pd.to_timedelta(frame["day"], unit="D")
    whole = estimate_customer_value(frame, pd.Timestamp("2024-12-31"), 180)
    same = estimate_customer_value(frame, pd.Timestamp("2024-12-31"), 180, fit_sample_size=n)
    sampled = estimate_customer_value(frame, pd.Timestamp("2024-12-31"), 180, fit_sample_size=n // 2)
    assert same.purchase_model.params_ == whole.purchase_model.params_  # a sample as large as the data is all of it
    assert len(sampled.estimates) == n and np.isfinite(sampled.estimates["expected_revenue"]).all()
    assert sampled.purchase_model.params_ != whole.purchase_model.params_
    # Half the customers estimate the population's buying about as well: total expected orders within 10%.
    total, from_sample = whole.estimates["expected_orders"].sum(), sampled.estimates["expected_orders"].sum()
    assert abs(from_sample / total - 1) < 0.10


def test_a_heartbeat_keeps_reporting_while_a_long_part_counts_nothing(caplog):
    import time

    caplog.set_level(logging.INFO, logger="core.framework.progress")
    with Progress("04: fitting", total=4, unit="models", mode="log", interval=0.05, heartbeat=True):
        time.sleep(0.3)  # one model taking long: no advance at all
    lines = [m for m in caplog.messages if m.startswith("04: fitting: 0% (0 of 4 models)")]
    assert len(lines) >= 2, caplog.messages
    assert caplog.messages[-1].startswith("04: fitting: done in")


def test_a_requested_stop_comes_back_at_the_next_update_in_the_main_thread_only():
    reporter = progress.Progress("work", total=10, mode="off")
    try:
        progress.request_termination()
        outcome = {}
        worker = threading.Thread(target=lambda: outcome.update(done=reporter.update(3) is None))
        worker.start()
        worker.join()
        assert outcome == {"done": True}  # another thread goes on: its errors are its stage's to report
        with pytest.raises(KeyboardInterrupt):
            reporter.update(4)
        assert progress.termination_requested()
    finally:
        progress.clear_termination()
    reporter.update(5)
    assert reporter.done == 5 and not progress.termination_requested()
