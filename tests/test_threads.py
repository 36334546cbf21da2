"""core/framework/threads.py: read_ahead gives the source's items in order, made a step ahead in a thread that never
outlives the caller's loop; in_thread runs one call beside the caller."""

from __future__ import annotations

import threading
import time

import pytest

from core.framework.threads import in_thread, read_ahead


def _threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


def _wait_until(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_the_items_come_in_order_and_the_next_is_made_while_the_caller_holds_one():
    made = []

    def source():
        for item in range(6):
            made.append(item)
            yield item

    seen = []
    for item in read_ahead(source(), depth=1, name="test-ahead"):
        if item == 0:
            # The caller still holds item 0: the thread has made item 1 meanwhile (and waits with item 2).
            assert _wait_until(lambda: len(made) >= 2)
        seen.append(item)
    assert seen == list(range(6))
    assert not _threads("test-ahead")


def test_the_sources_error_is_raised_where_its_item_would_have_come():
    def source():
        yield 1
        raise OSError("the order lines could not be read")

    seen = []
    with pytest.raises(OSError, match="could not be read"):
        for item in read_ahead(source(), name="test-failing"):
            seen.append(item)
    assert seen == [1]
    assert not _threads("test-failing")


def test_leaving_the_loop_early_stops_the_thread_and_reads_no_further():
    made = []

    def source():
        for item in range(1000):
            made.append(item)
            yield item

    for item in read_ahead(source(), depth=2, name="test-early"):
        if item == 3:
            break
    assert not _threads("test-early")
    assert len(made) <= 3 + 1 + 2 + 1  # the one held, at most depth waiting, one blocked on the queue


def test_a_depth_below_one_is_refused():
    with pytest.raises(ValueError, match="depth must be at least 1"):
        list(read_ahead(iter([1]), depth=0))


def test_one_call_in_a_thread_gives_its_result_or_its_error_and_the_thread_ends():
    assert in_thread(sum, [1, 2, 3], name="test-sum").result(timeout=10) == 6
    with pytest.raises(ZeroDivisionError):
        in_thread(lambda: 1 / 0, name="test-fail").result(timeout=10)
    assert _wait_until(lambda: not _threads("test-sum_0") and not _threads("test-fail_0"))
