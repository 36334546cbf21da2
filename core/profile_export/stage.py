"""Stage 05: name, describe and explain each segment; export profiles for AI agents and a report for people.

Reads the order lines, catalog and customers' identifier columns (stage 01,
the last only to keep them out of the exports), the enriched datasets, the
fitted feature transform and each customer's value, churn risk and the holdout
check of those estimates (stage 02), the latent space and training history
(stage 03), the assignments and method comparison (stage 04). Writes to
``artifacts/05_profile_export/``: ``segment_profiles.json`` and
``segment_profiles.yaml`` (same content, validated against
``schemas/segment_profiles.schema.json``), ``cluster_insights.csv``,
``customers_with_segments.parquet``, ``report.html`` and its charts as PNG
(``segment-sizes.png``, ``department-heatmap.png``, ``projection.png``,
``calibration.png``, ``loss-curve.png``), and each customer's next-best classes
(``recommendations.parquet``, measured in ``recommendation_evaluation.json``:
:mod:`core.profile_export.recommendation_outputs`). Run ``python 05_profile_export.py --help``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from core.domain.columns import ID_COLUMN, identifier_columns
from core.domain.customer_ids import to_keys, with_source_ids
from core.domain.tables import IDENTITY_COLUMNS
from core.profile_export import export, line_totals, migration, plots, profiling
from core.prepare_features.columns import CLASS_SPEND, class_column, describable_columns
from core.framework import memory, paths
from core.framework.errors import PipelineError
from core.framework.progress import Progress
from core.framework.threads import in_thread, read_ahead
from core.framework.stage import Stage, StageContext


log = logging.getLogger(__name__)

# Where each part of the stage ends, in % of its time, for the estimate of what is left. From the parts' wall time at
# a million customers with the next-best classes in their thread (benchmarks/RESULTS.md, "Stage 05 at a million
# customers, both cores"): inputs 6.6 s, class spend 4.5, spend by month and attribute 13.9, then the profiles and
# charts and the wait for the next-best classes (37 s together), the rest 3 s.
PROGRESS = {"inputs": 10, "class_spend": 17, "line_totals": 38, "next_best": 95, "report": 99}


def run(ctx: StageContext) -> None:
    """Read this stage's inputs, compute, write its outputs (see the module docstring)."""
    # Its NumPy work makes and drops arrays of tens to hundreds of MB in several threads: kept and reused
    # instead of faulted in afresh each time (core/framework/memory.py; about 5 CPU-s at a million customers).
    memory.keep_freed_memory()
    started, started_cpu = time.perf_counter(), time.process_time()
    seconds: dict[str, float] = {}
    with Progress(paths.PROFILE_EXPORT, total=100, unit="%", heartbeat=True) as progress:
        _run(ctx, progress, seconds)
    # Issue 18 budgets the next-best classes (issue 15) apart from the rest of the stage: both are logged. The
    # next-best classes are fitted in a thread beside the class spend and the line pass: their own time is that
    # thread's, and the stage's time charged to them is what it waited for them after its own parts, plus the
    # write. CPU seconds per part are the thread's that ran it (Arrow's and BLAS's own threads not counted).
    total, total_cpu = time.perf_counter() - started, time.process_time() - started_cpu
    next_best = seconds.get("next_best_fit", 0.0) + seconds.get("next_best_write", 0.0)
    parts = ", ".join(f"{part} {value:.1f}/{seconds[part + '_cpu']:.1f}" for part, value in seconds.items()
                      if not part.startswith("next_best") and not part.endswith("_cpu"))
    log.info("%s took %.1f s (%.1f CPU-s of the process): next-best classes %.1f s (fitted in a thread in %.1f s, "
             "%.1f CPU-s, of which the stage waited %.1f s after its own parts; write %.1f s), everything else "
             "%.1f s (wall/CPU s: %s)", paths.PROFILE_EXPORT, total, total_cpu, next_best,
             seconds.get("next_best_thread", 0.0), seconds.get("next_best_thread_cpu", 0.0),
             seconds.get("next_best_fit", 0.0), seconds.get("next_best_write", 0.0), total - next_best, parts)


def _run(ctx: StageContext, progress: Progress, seconds: dict[str, float]) -> None:
    """:func:`run`, telling ``progress`` how far it is (shares of the time measured on 200,000 customers)
    and ``seconds`` how long each part took (``next_best_fit`` and ``next_best_write``: the next-best classes)."""
    lap = _Laps(seconds)
    cfg = ctx.config.profile_export
    hierarchy = ctx.config.hierarchy
    # Next-best classes per customer, measured on a temporal holdout (issue 15); the model's cross-sell lists
    # replace the lift heuristic's in the segments where they did better. Imported when the stage runs
    # (SciPy, scikit-learn): status and skips never need them. They run in a thread from the stage's start, on
    # their own read of the few columns they need, beside the inputs, the class spend, the order-line pass, the
    # profiles and the charts (none needs them; NumPy, SciPy and Arrow leave the interpreter lock in their long
    # calls, so the two cores both work): they are the stage's longest part. The profiles wait for their
    # cross-sell lists.
    from core.profile_export import recommendation_outputs

    stop = threading.Event()  # an input error found meanwhile stops them at their next check
    # Their read of the order lines also sums each segmentation's spend by month and attribute, handed over here.
    line_spend = concurrent.futures.Future()
    next_best = _Background(_fit_next_best, ctx, line_spend, stop, stop=stop)
    with next_best:
        # Stage 04 chose the primary segmentation (config may say auto); its choice is in comparison.json.
        chosen = ctx.read_json(paths.CLUSTER, paths.COMPARISON_JSON)["primary"]
        primary = f"{chosen['method']}_{chosen['space']}"
        customers = ctx.read_parquet(paths.PREPARE_FEATURES, paths.ENRICHED_DEPARTMENT)
        assignments = _aligned(ctx.read_parquet(paths.CLUSTER, paths.ASSIGNMENTS,
                                                columns=_assignment_columns(ctx, primary)), customers)
        mapping = ctx.read_parquet(paths.GENERATE_DATA, paths.CUSTOMER_IDS)
        values, value_model = _customer_values(ctx, customers, mapping)
        value_note = "" if value_model["estimated"] else f"not estimated: {value_model['reason']}"
        # The profiles read the value columns beside the features (null when stage 02 could not estimate them).
        customers = customers.join(values, on="customer_id")
        model_columns = list(ctx.read_joblib(paths.PREPARE_FEATURES, paths.FEATURE_SCALER).columns)
        _check_inputs_agree(ctx, customers, assignments, primary)
        progress.update(PROGRESS["inputs"], "inputs read")
        lap("inputs")
        segmentations = [primary, *cfg.also_profile]
        class_spend = {segmentation: _class_spend(ctx, segmentation, primary, assignments, customers)
                       for segmentation in segmentations}
        progress.update(PROGRESS["class_spend"], "class spend")
        lap("class_spend")
        # Summed in the next-best classes' thread, from the one read of the order lines both need.
        line_totals_of = next_best.wait_for(line_spend)
        progress.update(PROGRESS["line_totals"], "spend by month and attribute")
        lap("line_totals")
        totals = {segmentation: (*class_spend[segmentation], *line_totals_of[segmentation])
                  for segmentation in segmentations}
        # Still beside the next-best classes: every profile without the model's cross-sell lists (the one part of
        # a profile they change, applied below), the names, customers_with_segments and the report's charts
        # (drawn into a temporary folder, copied into place once the exports passed their checks).
        drafts = {segmentation: profiling.profile_segments(
            customers, pd.Series(totals[segmentation][0]), hierarchy, cfg, ctx.config.strategies, model_columns,
            class_spend=totals[segmentation][1], monthly_spend=totals[segmentation][2],
            attribute_spend=totals[segmentation][3], horizon_days=value_model["horizon_days"], value_note=value_note)
            for segmentation in segmentations}
        draft_profiles, draft_shown = _shown_profiles(ctx, drafts[primary], True)
        names = {p["segment_id"]: p["name"] for p in draft_profiles}
        with_segments = with_source_ids(profiling.customers_with_segments(assignments, names, values), mapping)
        lap("profiles")
        customer_value = {"note": value_note, "horizon_days": value_model["horizon_days"],
                          "evaluation": ctx.read_json(paths.PREPARE_FEATURES, paths.CUSTOMER_VALUE_EVALUATION)}
        charts = _Deferred()
        drawn = _draw_charts(ctx, charts, customers, assignments, draft_shown, names, customer_value)
        lap("report")
        # Encoded now, written once the exports passed their checks.
        with_segments_bytes = ctx.parquet_bytes(paths.CUSTOMERS_WITH_SEGMENTS, with_segments)
        # The exports' identifier check reads and normalises customers.parquet's identifiers: done now, while the
        # next-best classes are still fitted, instead of after them (about 1.5 s at a million customers).
        identifiers = profiling.NormalisedIdentifiers(itertools.chain([customers], _customer_identifiers(ctx)))
        lap("identifiers")
        progress.update(PROGRESS["line_totals"], "next-best classes")
        recommended = next_best.result()
    seconds["next_best_thread"], seconds["next_best_thread_cpu"] = next_best.seconds, next_best.cpu_seconds
    progress.update(PROGRESS["next_best"], "next-best classes fitted")
    lap("next_best_fit")
    # Encoded beside the exports' checks and the report (Arrow leaves the interpreter lock while it encodes);
    # written last.
    recommendations_bytes = in_thread(recommendation_outputs.encode_recommendations, ctx, recommended, mapping,
                                      name="recommendations")

    exported = {segmentation: _export(ctx, drafts[segmentation], segmentation, primary, recommended, customers,
                                      identifiers, lap)
                for segmentation in segmentations}
    # Written only once every export passed its checks: a refused one leaves no file of this run behind.
    _write_exports(ctx, exported, primary)
    lap("exports")

    profiles, shown, _ = exported[primary]
    if {p["segment_id"]: p["name"] for p in profiles} != names or _charted(shown) != _charted(draft_shown):
        # Not expected (names and chart figures never read the cross-sell lists), but never written stale.
        names = {p["segment_id"]: p["name"] for p in profiles}
        with_segments = with_source_ids(profiling.customers_with_segments(assignments, names, values), mapping)
        with_segments_bytes = ctx.parquet_bytes(paths.CUSTOMERS_WITH_SEGMENTS, with_segments)
        drawn = _draw_charts(ctx, charts, customers, assignments, shown, names, customer_value)
    # Joined on by people and other systems: the ids as the source wrote them (core/domain/customer_ids.py).
    ctx.write_bytes(paths.CUSTOMERS_WITH_SEGMENTS, with_segments_bytes)
    lap("customers_with_segments")
    charts.write(ctx)
    _write_report(ctx, customers, assignments, shown, names, customer_value, drawn, recommended.document)
    progress.update(PROGRESS["report"], "profiles, exports and report written; next-best classes")
    lap("report")
    _describe(ctx, exported, primary, names, value_note, len(customers))
    # Next-best classes per customer, measured on a temporal holdout (issue 15).
    lap("summary")
    recommendation_outputs.write_recommendations(ctx, recommended, table_bytes=recommendations_bytes.result())
    lap("next_best_write")


def _class_spend(ctx: StageContext, segmentation: str, primary: str, assignments: pd.DataFrame,
                 customers: pd.DataFrame) -> tuple:
    """One segmentation's labels and class spend per segment (the profiles' sums apart from the order lines')."""
    hierarchy = ctx.config.hierarchy
    labels = assignments["segment" if segmentation == primary else f"{segmentation}_label"].to_numpy()
    segment_of = pd.Series(labels, index=customers["customer_id"].to_numpy())
    enriched_class = ctx.input_path(paths.PREPARE_FEATURES, paths.ENRICHED_CLASS)
    written = set(pq.read_schema(enriched_class).names)
    class_columns = [c for c in _class_spend_columns(hierarchy) if c in written]
    if not class_columns:
        return labels, None  # stage 02 writes no class columns for data without a hierarchy: no top classes then
    # Summed from the long file of each customer's non-zero classes, as the wide columns' batches would be (the
    # same values; a fifth of the CPU at a million customers); the wide columns, read in Arrow batches and summed
    # column by column, for a long file in another order than stage 02 writes.
    batches = pq.ParquetFile(enriched_class).iter_batches(batch_size=100_000, columns=["customer_id"])
    long = pq.ParquetFile(ctx.input_path(paths.PREPARE_FEATURES, paths.CLASS_SPEND_LONG),
                          read_dictionary=["department", "class"])
    try:
        return labels, profiling.class_spend_from_long(
            long.iter_batches(batch_size=1 << 20, columns=["customer_id", "department", "class", "spend"]),
            (b.column("customer_id").to_numpy() for b in batches), segment_of, hierarchy, written)
    except profiling.NotInWideOrder:
        return labels, profiling.class_spend_from_batches(pq.ParquetFile(enriched_class).iter_batches(
            batch_size=100_000, columns=["customer_id"] + class_columns), segment_of, hierarchy)


def _export(ctx: StageContext, profiles: list[dict], segmentation: str, primary: str, recommended,
            customers: pd.DataFrame, identifiers: profiling.NormalisedIdentifiers, lap) -> tuple:
    """One segmentation's final profiles (the primary's with the model's cross-sell lists), those shown, and its
    checked export document (``identifiers``: the customers' identifiers it must not carry)."""
    cfg = ctx.config.profile_export
    if segmentation == primary:
        profiles = profiling.with_cross_sell(profiles, recommended.cross_sell, ctx.config.strategies)
    profiles, shown = _shown_profiles(ctx, profiles, segmentation == primary)
    document = export.build_export(
        shown, run_id=ctx.run_id, config_hash=ctx.config_hash, method=segmentation.split("_")[0],
        space=segmentation.split("_")[1],
        primary=segmentation == primary, customers=len(customers),
        first_order=str(customers["first_order_date"].min().date()),
        last_order=str(customers["last_order_date"].max().date()),
        generated_at=ctx.started_at.isoformat(timespec="seconds"), currency=cfg.currency,
        min_segment_size=cfg.min_segment_size)
    lap("profiles")
    _check_export(ctx, document, customers, segmentation, identifiers)
    lap("export_check")
    return profiles, shown, document


def _write_exports(ctx: StageContext, exported: dict[str, tuple], primary: str) -> None:
    """Each segmentation's JSON and YAML export and insights table (the primary's under the plain names)."""
    for segmentation, (profiles, _, document) in exported.items():
        suffix = (lambda f: f) if segmentation == primary else (lambda f, s=segmentation: paths.extra_export_file(f, s))
        ctx.write_json(suffix(paths.SEGMENT_PROFILES_JSON), document)
        ctx.write_text(suffix(paths.SEGMENT_PROFILES_YAML),
                       yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100))
        ctx.write_csv(suffix(paths.CLUSTER_INSIGHTS), profiling.insights_table(profiles))


def _describe(ctx: StageContext, exported: dict[str, tuple], primary: str, names: dict, value_note: str,
              n_customers: int) -> None:
    """The manifest's details and summary line for the profiles written."""
    profiles, shown, _ = exported[primary]
    suppressed = sum(p["suppressed"] for p in shown)
    ctx.details = {"segmentations": list(exported), "segments": names, "suppressed_in_export": suppressed,
                   "strategy_rules": {p["name"]: p["strategy"]["rule"] for p in profiles},
                   "customer_value": value_note or "estimated",
                   "lifecycle_words": {p["name"]: p["lifecycle"]["state"] for p in profiles
                                       if p["lifecycle"]["state"] != "typical"}}
    ctx.summary = (f"{len(profiles)} segments ({suppressed} too small to describe) for {n_customers:,} "
                   f"customers ({primary}); report and {len(exported)} export(s) written")


def _fit_next_best(ctx: StageContext, line_spend: concurrent.futures.Future, stop=None):
    """:func:`recommendation_outputs.fit_recommendations` on its own read of what it needs of the customers
    (their analysis date) and of the assignments (the segment), in the profile's customer order; ``stop`` (an
    Event) makes it give up at its next check.

    Its read of the order lines also gives each segmentation's spend by month and attribute
    (:class:`line_totals.SpendTotals`), set as ``line_spend``'s result (segmentation -> the tables) as soon as
    every line was read: the two read the same 136 M lines at a million customers, 9-11 CPU-s each.
    """
    from core.profile_export import recommendation_outputs

    chosen = ctx.read_json(paths.CLUSTER, paths.COMPARISON_JSON)["primary"]
    primary = f"{chosen['method']}_{chosen['space']}"
    segmentations = [primary, *ctx.config.profile_export.also_profile]
    labels = {s: "segment" if s == primary else f"{s}_label" for s in segmentations}
    customers = ctx.read_parquet(paths.PREPARE_FEATURES, paths.ENRICHED_DEPARTMENT,
                                 columns=["customer_id", "last_order_date", "recency_days"])
    assignments = _aligned(ctx.read_parquet(paths.CLUSTER, paths.ASSIGNMENTS,
                                            columns=["customer_id", *dict.fromkeys(labels.values())]), customers)
    # Seasonality and attribute mixes count what features count: purchases up to the analysis date.
    products, last_day = ctx.read_parquet(paths.GENERATE_DATA, paths.PRODUCTS), customers["last_order_date"].max()
    ids = customers["customer_id"].to_numpy()
    totals = {s: line_totals.SpendTotals(products, pd.Series(assignments[label].to_numpy(), index=ids), last_day)
              for s, label in labels.items()}
    return recommendation_outputs.fit_recommendations(ctx, customers, assignments[["customer_id", "segment"]],
                                                      stop, lines=_shared_lines(ctx, totals, line_spend))


def _shared_lines(ctx: StageContext, totals: dict, line_spend: concurrent.futures.Future):
    """The order lines' batches for the purchase history, each also added to ``totals`` (segmentation ->
    :class:`line_totals.SpendTotals`) in a thread of its own, batch after batch, while the history sums it; their
    tables set as ``line_spend``'s result once all were read, or the error that stopped the read as its exception
    (the stage's thread waits for them)."""
    from core.profile_export import recommendation_outputs

    columns = [c for t in totals.values() for c in t.columns]
    dictionary = [c for t in totals.values() for c in t.dictionary_columns or ()]
    pending: collections.deque = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="spend-totals") as summing:
        try:
            # Decoded up to two batches ahead in a thread of its own: Arrow's decoding and the history's work on
            # the batches before overlap (core/framework/threads.py). Each thread of the read may run up to three
            # batches ahead of the next (two before: the threads waited for each other, a fifth of a core idle).
            lines = recommendation_outputs.line_batches(ctx, columns, dictionary)
            for batch in read_ahead(lines, depth=2, name="order-lines"):
                pending.append(summing.submit(lambda b=batch: [spend.add(b) for spend in totals.values()]))
                while len(pending) > 3:  # at most three batches ahead: memory stays a few batches'
                    pending.popleft().result()
                yield batch
            while pending:
                pending.popleft().result()
            line_spend.set_result({s: spend.result() for s, spend in totals.items()})
        except BaseException as exc:  # noqa: BLE001 - the waiting thread raises it (GeneratorExit: not read through)
            for waiting in pending:
                waiting.cancel()
            if not line_spend.done():
                line_spend.set_exception(exc if isinstance(exc, Exception) else PipelineError(
                    "the order lines were not read through (the next-best classes stopped)"))
            raise


def _assignment_columns(ctx: StageContext, primary: str) -> list[str]:
    """The columns of assignments.parquet this stage reads: the primary segment with its strength, runner-up and
    outlier signal, and each profiled segmentation's labels (the primary's to check they agree). Not the other
    methods' strengths and uncertainties: at a million customers a third of the file's columns read, decoded
    and reordered (a quarter of a GB) instead of all 36. A column the file lacks is left to the checks that
    name it."""
    segmentations = [primary, *ctx.config.profile_export.also_profile]
    wanted = ["customer_id", "segment", "segment_strength", "segment_runner_up", "reconstruction_error",
              *(f"{s}_label" for s in segmentations)]
    written = set(pq.read_schema(ctx.input_path(paths.CLUSTER, paths.ASSIGNMENTS)).names)
    return [c for c in dict.fromkeys(wanted) if c in written]


def _aligned(assignments: pd.DataFrame, customers: pd.DataFrame) -> pd.DataFrame:
    """``assignments`` in the order of ``customers``' rows; an error when the two list different customers."""
    if not np.array_equal(np.sort(customers["customer_id"].to_numpy()), np.sort(assignments["customer_id"].to_numpy())):
        raise PipelineError(f"{paths.ASSIGNMENTS} and {paths.ENRICHED_DEPARTMENT} list different customers; "
                            f"rerun from stage {paths.CLUSTER}")
    return assignments.set_index("customer_id").loc[customers["customer_id"]].reset_index()


class _Laps:
    """Adds the seconds since its previous call (or its creation) to the named part of ``seconds``, and the
    calling thread's CPU seconds to ``<part>_cpu`` (on a shared machine wall time says more about the others;
    the thread's, not the process's: the next-best classes run in another thread meanwhile)."""

    def __init__(self, seconds: dict[str, float]):
        self.seconds, self.last, self.last_cpu = seconds, time.perf_counter(), time.thread_time()

    def __call__(self, part: str) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        self.seconds[part] = self.seconds.get(part, 0.0) + now - self.last
        self.seconds[f"{part}_cpu"] = self.seconds.get(f"{part}_cpu", 0.0) + cpu - self.last_cpu
        self.last, self.last_cpu = now, cpu


class _Background:
    """``function(*args)`` run in a thread from creation; :meth:`result` waits for it and returns its value
    or raises its exception in the caller's thread.

    A daemon thread, so an interrupted stage (Ctrl+C) does not wait for it at exit; it writes nothing, its
    caller writes what it returns. Used as a context manager: leaving the block by an exception of the
    caller's own sets ``stop`` (if given: a function that watches it gives up at its next check), waits for
    the thread (its work is not half-done when the caller's error is reported) and lets the caller's
    exception through. Threads, not processes: Windows starts processes by spawning, which
    would copy a million customers' inputs into the child; and NumPy, SciPy and Arrow release the
    interpreter lock in their long calls.
    """

    def __init__(self, function, *args, stop=None):
        import threading

        self.stop = stop  # an Event set when the caller's block ends by its own error (function may watch it)
        self.seconds = self.cpu_seconds = 0.0
        self._value, self._error = None, None
        self._thread = threading.Thread(target=self._work, args=(function, args), name="next-best-classes",
                                        daemon=True)
        self._thread.start()

    def _work(self, function, args) -> None:
        started, started_cpu = time.perf_counter(), time.thread_time()
        try:
            self._value = function(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread, which raises it
            self._error = exc
        finally:
            self.seconds, self.cpu_seconds = time.perf_counter() - started, time.thread_time() - started_cpu

    def wait_for(self, future: concurrent.futures.Future):
        """``future``'s result, which the function sets on its way; its exception, or the function's own when
        the thread ends without setting it."""
        while not future.done() and self._thread.is_alive():
            concurrent.futures.wait([future], timeout=0.5)  # in slices: Ctrl+C on Windows, a thread that died
        if not future.done():
            self.result()  # raises the function's error
            raise PipelineError("the next-best classes ended without the spend by month and attribute (a bug)")
        return future.result()

    def result(self):
        while self._thread.is_alive():
            self._thread.join(0.5)  # in slices: a plain join does not see Ctrl+C on Windows
        if self._error is not None:
            raise self._error
        return self._value

    def __enter__(self) -> "_Background":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and not issubclass(exc_type, KeyboardInterrupt):
            if self.stop is not None:
                self.stop.set()
            while self._thread.is_alive():
                self._thread.join(0.5)


def _shown_profiles(ctx: StageContext, profiles: list[dict], primary: bool) -> tuple[list[dict], list[dict]]:
    """The profiles with their export names (the neutral one for small segments), and as the export shows
    them (:func:`profiling.suppress_small_segments`); the primary segmentation's with their migration."""
    shown = profiling.suppress_small_segments(profiles, ctx.config.profile_export.min_segment_size)
    # One name per segment in every output, the neutral one for small segments.
    profiles = [{**p, "name": s["name"]} for p, s in zip(profiles, shown)]
    return _with_migration(ctx, profiles, shown) if primary else (profiles, shown)


def _charted(shown: list[dict]) -> list[tuple]:
    """What the report's charts read of the shown profiles."""
    return [(p["segment_id"], p["name"], p["suppressed"], p.get("share_of_customers"), p.get("revenue_share"))
            for p in shown]


class _Deferred:
    """Writes charts into a temporary folder now (``write_with``, as the stage context does) and into the
    stage's folder later (:meth:`write`), once the exports passed their checks: they are drawn while the
    next-best classes are fitted, and a refused export still leaves no chart of the run behind."""

    def __init__(self):
        self._folder = tempfile.TemporaryDirectory(prefix="profile-export-charts-")
        self.files: list[str] = []

    def write_with(self, file: str, writer) -> Path:
        path = Path(self._folder.name) / file
        writer(path)
        self.files.append(file)
        return path

    def write(self, ctx: StageContext) -> None:
        """Copy the charts into place through ``ctx`` (atomic, recorded in the manifest), then drop the folder."""
        for file in dict.fromkeys(self.files):
            ctx.write_with(file, lambda tmp, source=Path(self._folder.name) / file: shutil.copyfile(source, tmp))
        self._folder.cleanup()


def _with_migration(ctx: StageContext, profiles: list[dict], shown: list[dict]) -> tuple[list[dict], list[dict]]:
    """The profiles with their segment's ``migration`` (stage 04's snapshots); suppressed ones stay as they are."""
    moves = ctx.read(paths.CLUSTER, paths.TRANSITIONS)
    blocks = migration.segment_migration(moves, {p["segment_id"]: p["name"] for p in profiles})
    return ([{**p, "migration": blocks[p["segment_id"]]} for p in profiles],
            [s if s["suppressed"] else {**s, "migration": blocks[s["segment_id"]]} for s in shown])


def _customer_values(ctx: StageContext, customers: pd.DataFrame, mapping: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Stage 02's value columns of the segmented customers (indexed by key), and its saved model document.

    ``customer_value.parquet`` carries the source's ids; ``mapping`` turns them back into keys.

    Raises
    ------
    PipelineError
        When a segmented customer has no row (the two files come from different runs of stage 02).
    """
    model = ctx.read_json(paths.PREPARE_FEATURES, paths.CUSTOMER_VALUE_MODEL)
    from core.prepare_features.value_estimates import VALUE_COLUMNS  # loads SciPy: only when the stage runs

    table = ctx.read_parquet(paths.PREPARE_FEATURES, paths.CUSTOMER_VALUE, columns=["customer_id", *VALUE_COLUMNS])
    try:
        table["customer_id"] = to_keys(table["customer_id"], mapping)
    except ValueError as exc:
        raise PipelineError(f"{paths.CUSTOMER_VALUE}: {exc}; rerun from stage {paths.PREPARE_FEATURES}") from None
    values = table.set_index("customer_id")
    missing = ~customers["customer_id"].isin(values.index)
    if missing.any():
        raise PipelineError(f"{paths.CUSTOMER_VALUE} has no row for {int(missing.sum()):,} segmented customer(s) "
                            f"(e.g. {customers.loc[missing, 'customer_id'].iloc[0]}); rerun from stage "
                            f"{paths.PREPARE_FEATURES}")
    return values.loc[customers["customer_id"]], model


def _class_spend_columns(hierarchy) -> list[str]:
    return [class_column(CLASS_SPEND, d, c)
            for d in hierarchy.merchandise_departments for c in hierarchy.departments[d].classes]


def _check_inputs_agree(ctx: StageContext, customers: pd.DataFrame, assignments: pd.DataFrame, primary: str) -> None:
    """Stop when stage 04 ran with another primary method, or a describe column cannot be described."""
    named = ctx.config.cluster.primary
    method, space = primary.split("_")
    wanted = f"{method if named.method == 'auto' else named.method}_{space if named.space == 'auto' else named.space}"
    if (wanted != primary or f"{primary}_label" not in assignments
            or not (assignments["segment"] == assignments[f"{primary}_label"]).all()):
        raise PipelineError(f"{paths.ASSIGNMENTS} was made with another cluster.primary than {wanted} in "
                            f"{ctx.config.path}; rerun from stage {paths.CLUSTER}")
    cfg = ctx.config.profile_export
    available = describable_columns(customers.columns)
    for column in cfg.describe_columns:
        if column not in customers.columns:
            raise PipelineError(f"profile_export.describe_columns in {ctx.config.path} names '{column}', which the "
                                f"customer profile does not have; available: {', '.join(available)}")
        if pd.api.types.is_datetime64_any_dtype(customers[column]):
            raise PipelineError(f"profile_export.describe_columns in {ctx.config.path} names '{column}', a date: "
                                f"exact dates can single out customers; remove it")


def _customer_identifiers(ctx: StageContext):
    """customers.parquet's direct-identifier columns, in batches (see :func:`profiling.identifier_values`).

    For a retailer's data these are the columns its customer file mapped
    (names, email, phone, street address, postcode); for generated data,
    the fake identities. The profile stage 02 passes on never holds them.
    """
    names = pq.read_schema(ctx.input_path(paths.GENERATE_DATA, paths.CUSTOMERS)).names
    wanted = [c for c in dict.fromkeys([*identifier_columns(names), *(c for c in IDENTITY_COLUMNS if c in names)])
              if c != "customer_id"]
    if wanted:
        # As Arrow tables: profiling.known_identifiers matches them without a Python string per value.
        for batch in pq.ParquetFile(ctx.input_path(paths.GENERATE_DATA, paths.CUSTOMERS)).iter_batches(
                batch_size=100_000, columns=wanted):
            yield pa.Table.from_batches([batch])


def _check_export(ctx: StageContext, document: dict, customers: pd.DataFrame, segmentation: str,
                  identifiers: profiling.NormalisedIdentifiers) -> None:
    """Refuse to write an export that breaks its schema or carries a direct identifier.

    Looked for: every value of customers.parquet's identifier columns and of
    the profile's (``identifiers``, normalised once for every export), and
    email-, phone- and postcode-shaped text wherever it comes from. The message names where each one is and the fix, with the
    identifier itself masked (the log must not carry it either).
    """
    problems = export.schema_errors(document)
    if problems:
        raise PipelineError(f"the {segmentation} profile export does not match {paths.SEGMENT_PROFILES_SCHEMA.name} "
                            f"(a bug, or a strategies.yml value the schema refuses): " + "; ".join(problems[:5]))
    leaks = profiling.leaked_identifiers(document, [identifiers])
    if not leaks:
        return
    described = [c for c in ctx.config.profile_export.describe_columns if c in customers.columns]
    found, columns = [], []
    texts = {leak.text for leak in leaks}
    for leak in leaks[:3]:
        # The path may hold the identifier itself (a demographics key): masked there too.
        where = "/".join(profiling.masked(part) if isinstance(part, str) and any(t in part for t in texts)
                         else str(part) for part in leak.path)
        segment = (f"segment {document['segments'][leak.path[1]]['segment_id']} ({where})"
                   if len(leak.path) > 1 and leak.path[0] == "segments" else where)
        column = _source_column(leak, customers, described)
        columns += [column] if column and column not in columns else []
        found.append(f"{leak.kind} ({profiling.masked(leak.text)}) in {segment}"
                     + (f", from profile column '{column}'" if column else ""))
    more = f" and {len(leaks) - 3} more" if len(leaks) > 3 else ""
    fix = (f"remove {', '.join(repr(c) for c in columns)} from profile_export.describe_columns in "
           f"{ctx.config.path} (or clean that column of your customer file)" if columns else
           "find the text in config/strategies.yml, the hierarchy or your data and remove it")
    raise PipelineError(f"the {segmentation} profile export would carry {len(leaks)} direct identifier(s) of "
                        f"customers: {'; '.join(found)}{more}; nothing was written: {fix}")


def _source_column(leak, customers: pd.DataFrame, described: list[str]) -> str | None:
    """The describe column an identifier came from: the one it is summarised under, or one holding it."""
    path = leak.path
    if len(path) > 3 and path[2] == "demographics" and path[3] in described:
        return path[3]
    needle = leak.text.casefold()
    for column in described:
        values = customers[column].dropna()
        if not pd.api.types.is_numeric_dtype(values) and values.astype(str).str.casefold().str.contains(
                needle, regex=False).any():
            return column
    return None


def _draw_charts(ctx: StageContext, writer, customers: pd.DataFrame, assignments: pd.DataFrame, shown: list[dict],
                 names: dict[int, str], customer_value: dict) -> dict:
    """The report's charts as PNG files written by ``writer`` (the stage's context, or a :class:`_Deferred`);
    returns what :func:`_write_report` needs of them (``images``, ``over_time``, ``chosen``).

    Small (suppressed) segments are left out of every chart.
    """
    from core.cluster.clustering import sample_rows
    from core.profile_export import report  # scikit-learn's projection: only when the stage runs

    cfg = ctx.config.profile_export
    described = [p for p in shown if not p["suppressed"]]
    ids = [p["segment_id"] for p in described]
    images = {}
    if described:
        sizes = writer.write_with(paths.SEGMENT_SIZES_PLOT, lambda tmp: plots.save_segment_sizes_plot(
            [p["name"] for p in described], [p["share_of_customers"] for p in described],
            [p["revenue_share"] for p in described], tmp))
        images["segment_sizes"] = sizes.read_bytes()
        departments = ctx.config.hierarchy.merchandise_departments
        spend = profiling.department_spend(customers, departments).groupby(assignments["segment"].to_numpy()).sum()
        shares = spend.div(spend.sum(axis=1).replace(0, np.nan), axis=0).fillna(0.0)
        heatmap = writer.write_with(paths.DEPARTMENT_HEATMAP, lambda tmp: plots.save_department_heatmap(
            shares.loc[ids].rename(index=names), tmp))
        images["department_heatmap"] = heatmap.read_bytes()
    # The projection shows the space the segments were found in.
    chosen = ctx.read_json(paths.CLUSTER, paths.COMPARISON_JSON)["primary"]
    space = chosen["space"]
    if space == "latent":
        matrix = ctx.read_parquet(paths.TRAIN_AUTOENCODER, paths.LATENT).set_index("customer_id").filter(like="latent_")
    else:
        matrix = ctx.read_parquet(paths.PREPARE_FEATURES, paths.FEATURES).set_index("customer_id")
    labels = assignments["segment"].to_numpy()
    keep = np.flatnonzero(np.isin(labels, ids + [-1]))
    # The sample project_2d would draw, drawn first: only the sampled customers' rows are looked up (a million
    # otherwise), and project_2d, given no more than its sample size, keeps them all in order.
    rows = keep[sample_rows(len(keep), cfg.projection_sample_size, ctx.config.seed)]
    coords, sampled = report.project_2d(matrix.loc[assignments["customer_id"].to_numpy()[rows]].to_numpy(),
                                        labels[rows], cfg.projection_sample_size, ctx.config.seed)
    if len(coords):
        projection = writer.write_with(paths.PROJECTION_PLOT, lambda tmp: plots.save_projection_plot(
            coords, sampled, names, tmp))
        images["projection"] = projection.read_bytes()
    evaluation = customer_value["evaluation"]
    if not customer_value["note"] and evaluation.get("status") == "done":
        calibration = writer.write_with(paths.CALIBRATION_PLOT, lambda tmp: plots.save_calibration_plot(
            evaluation["deciles"], tmp, f"holdout {evaluation['cut_date']} to {evaluation['analysis_date']}, "
                                        f"{evaluation['customers']:,} customers"))
        images["calibration"] = calibration.read_bytes()
    over_time = _migration_charts(ctx, {p["segment_id"]: p["name"] for p in described}, images, writer)
    history = ctx.read_json(paths.TRAIN_AUTOENCODER, paths.TRAINING_HISTORY)
    loss = writer.write_with(paths.LOSS_CURVE, lambda tmp: plots.save_loss_plot(history, tmp))
    images["loss_curve"] = loss.read_bytes()
    return {"images": images, "over_time": over_time, "chosen": chosen}


def _write_report(ctx: StageContext, customers: pd.DataFrame, assignments: pd.DataFrame, shown: list[dict],
                  names: dict[int, str], customer_value: dict, drawn: dict, recommendations: dict | None = None) -> None:
    """The self-contained report.html built from the charts :func:`_draw_charts` drew.

    Small (suppressed) segments appear by name and size on their card only:
    they are left out of every chart and table.
    """
    from core.profile_export import report  # scikit-learn's projection: only when the stage runs

    cfg = ctx.config.profile_export
    described = [p for p in shown if not p["suppressed"]]
    ids = [p["segment_id"] for p in described]
    chosen, space, images, over_time = drawn["chosen"], drawn["chosen"]["space"], drawn["images"], drawn["over_time"]
    persona_table = None
    # A retailer's own data has no personas: the column is there (the table contract) but null.
    if "persona" in customers.columns and customers["persona"].notna().any() and described:
        segment_names = assignments["segment"].map(names).to_numpy()
        persona_table = pd.crosstab(customers["persona"], segment_names)[[names[i] for i in ids]]
    data = report.ReportData(
        title="Customer segments",
        metadata={"method": chosen["method"], "space": space,
                  "customers": len(customers), "segments": sum(p["segment_id"] != -1 for p in shown),
                  "data_period": {"first_order": str(customers["first_order_date"].min().date()),
                                  "last_order": str(customers["last_order_date"].max().date())},
                  "generated_at": ctx.started_at.isoformat(timespec="seconds"), "run_id": ctx.run_id},
        segments=shown, comparison=pd.read_csv(ctx.input_path(paths.CLUSTER, paths.COMPARISON)),
        persona_table=persona_table, images=images, currency=cfg.currency, customer_value=customer_value,
        recommendations=recommendations, over_time=over_time)
    ctx.write_text(paths.REPORT, report.render_report(data))


def _migration_charts(ctx: StageContext, names: dict[int, str], images: dict[str, bytes], writer=None) -> dict | None:
    """Segment sizes over time and the flow chart from stage 04's snapshots; the report's figures for them.

    None when stage 04 took no snapshot (``cluster.snapshots.enabled`` false).
    """
    writer = ctx if writer is None else writer
    history = ctx.read_parquet(paths.CLUSTER, paths.SEGMENT_HISTORY, columns=[ID_COLUMN, "snapshot_date", "segment"])
    if history.empty:
        return None
    moves = ctx.read(paths.CLUSTER, paths.TRANSITIONS)
    sizes = migration.sizes_over_time(history)
    if names and not sizes.empty:
        drawn = writer.write_with(paths.SEGMENT_SIZES_OVER_TIME_PLOT,
                               lambda tmp: migration.save_sizes_over_time_plot(sizes, names, tmp))
        images["sizes_over_time"] = drawn.read_bytes()
        if not moves.empty:
            drawn = writer.write_with(paths.SEGMENT_FLOW_PLOT,
                                   lambda tmp: migration.save_flow_plot(moves, sizes, names, tmp))
            images["segment_flows"] = drawn.read_bytes()
    return {"snapshots": [str(pd.Timestamp(d).date()) for d in sizes.index],
            "customers": migration.customers_followed(history), "window_days": ctx.config.cluster.snapshots.window_days}


STAGE = Stage(
    name=paths.PROFILE_EXPORT,
    inputs={
        # customers.parquet: its identifier columns are what the export must never carry.
        paths.GENERATE_DATA: (paths.TRANSACTIONS, paths.PRODUCTS, paths.CUSTOMERS, paths.CUSTOMER_IDS),
        # class_spend_long.parquet: the class spend per segment, summed from the non-zero rows only.
        paths.PREPARE_FEATURES: (paths.ENRICHED_DEPARTMENT, paths.ENRICHED_CLASS, paths.CLASS_SPEND_LONG,
                                 paths.FEATURE_SCALER, paths.FEATURES, paths.CUSTOMER_VALUE,
                                 paths.CUSTOMER_VALUE_MODEL, paths.CUSTOMER_VALUE_EVALUATION),
        paths.TRAIN_AUTOENCODER: (paths.LATENT, paths.TRAINING_HISTORY),
        paths.CLUSTER: (paths.ASSIGNMENTS, paths.COMPARISON, paths.COMPARISON_JSON, paths.SEGMENT_HISTORY,
                        paths.TRANSITIONS),
    },
    description="Profile, name, explain and give strategies to the segments; export JSON/YAML/CSV and a report.",
    # cluster: the primary method and space named in the export.
    sections=("seed", "profile_export", "cluster", "hierarchy", "strategies"),
    run=run,
)
