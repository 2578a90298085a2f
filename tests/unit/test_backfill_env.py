"""Backfill's worker processes start with numeric libraries' thread pools at one thread."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import pytest

from moonstream.jobs.backfill import SINGLE_THREAD_ENV, single_threaded_workers


def _child_view() -> tuple[tuple[str | None, ...], int]:
    """In the worker: the variables, and its threads once numpy (and its OpenBLAS) is loaded."""
    import numpy  # noqa: F401  (loads OpenBLAS, which starts its thread pool)

    return tuple(os.environ.get(name) for name in SINGLE_THREAD_ENV), len(os.listdir("/proc/self/task"))


def _run_child() -> tuple[tuple[str | None, ...], int]:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_child_view).result()


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux's /proc to count threads")
def test_workers_get_one_math_thread_and_the_operator_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SINGLE_THREAD_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # an operator's own setting
    _, threads_by_default = _run_child()
    with single_threaded_workers():
        variables, threads = _run_child()
    assert variables == ("1", "3", "1")
    assert "OPENBLAS_NUM_THREADS" not in os.environ and os.environ["OMP_NUM_THREADS"] == "3"  # restored
    assert threads == 1
    if (os.cpu_count() or 1) > 1:
        assert threads_by_default > 1  # what the setting saves: OpenBLAS's pool, one thread per core
