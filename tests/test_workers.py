"""kbsim.workers: an ordered, bounded map over worker processes; failures reach the parent."""

from __future__ import annotations

import math
import multiprocessing
import os
import time

import pytest

from kbsim.workers import WorkerError, Workers

FORK = "fork" in multiprocessing.get_all_start_methods()
fork_only = pytest.mark.skipif(not FORK, reason="the platform has no fork")


def _ctx(method: str = "fork"):
    return multiprocessing.get_context(method if FORK else "spawn")


def _slow_square(x: int) -> int:
    time.sleep(0.02 * (x % 3))  # later tasks often finish first
    return x * x


class Unpicklable(Exception):
    def __init__(self, message: str, handle) -> None:
        super().__init__(message)
        self.handle = handle

    def __reduce__(self):
        raise TypeError("cannot pickle this")


def _raise_unpicklable(x: int) -> int:
    raise Unpicklable(f"bad record {x}", object())


def _fail_init() -> None:
    raise ValueError("no layout named 'xx'")


_STATE: dict = {}


def _set_state(value: int) -> None:
    _STATE["v"] = value


def _read_state(x: int) -> int:
    return _STATE["v"] + x


def test_results_come_in_input_order_whatever_finishes_first():
    with Workers(2, context=_ctx()) as pool:
        assert list(pool.map(_slow_square, range(12))) == [x * x for x in range(12)]
        # The same workers serve a second map.
        assert list(pool.map(abs, [-3, 4, -5])) == [3, 4, 5]


def test_init_runs_in_every_worker_before_its_tasks():
    with Workers(2, _set_state, (100,), context=_ctx()) as pool:
        assert list(pool.map(_read_state, range(5))) == [100, 101, 102, 103, 104]


def _init_slowly(folder: str) -> None:
    time.sleep(0.5)
    with open(os.path.join(folder, str(os.getpid())), "w") as f:
        f.write("set up")


def _exit_3() -> None:
    os._exit(3)


def test_wait_ready_returns_once_every_worker_is_set_up(tmp_path):
    with Workers(3, _init_slowly, (str(tmp_path),), context=_ctx()) as pool:
        assert len(list(tmp_path.iterdir())) < 3  # set-up still running
        pool.wait_ready()
        assert len(list(tmp_path.iterdir())) == 3
        pool.wait_ready()  # a second call returns at once
        assert list(pool.map(abs, [-1, -2])) == [1, 2]
        pool.wait_ready()  # and so does one after a map


def test_a_failed_set_up_is_raised_by_wait_ready():
    with Workers(2, _fail_init, context=_ctx()) as pool:
        with pytest.raises(ValueError, match="no layout named 'xx'"):
            pool.wait_ready()
        with pytest.raises(RuntimeError, match="closed or failed"):
            list(pool.map(abs, [1]))


def test_a_worker_that_dies_in_set_up_is_an_error_from_wait_ready():
    with Workers(2, _exit_3, context=_ctx()) as pool:
        with pytest.raises(WorkerError, match=r"exited unexpectedly \(exit code 3\)"):
            pool.wait_ready()


def test_tasks_are_read_lazily_with_bounded_look_ahead():
    pulled = []

    def tasks():
        for x in range(50):
            pulled.append(x)
            yield x

    with Workers(2, context=_ctx()) as pool:
        results = pool.map(abs, tasks(), ahead=3)
        assert next(results) == 0
        assert len(pulled) <= 3  # no more than `ahead` tasks out before the first result
        for k, r in enumerate(results, start=1):
            assert r == k
            assert len(pulled) <= k + 3
    assert len(pulled) == 50


def test_a_task_error_is_raised_in_the_parent_as_itself():
    with Workers(2, context=_ctx()) as pool:
        with pytest.raises(ValueError, match="math domain error"):
            list(pool.map(math.sqrt, [4.0, 1.0, -1.0, 9.0]))


@fork_only
def test_an_unpicklable_error_still_reaches_the_parent_with_its_message():
    with Workers(1, context=_ctx("fork")) as pool:
        with pytest.raises(WorkerError, match=r"Unpicklable: bad record 7"):
            list(pool.map(_raise_unpicklable, [7]))


def test_a_failed_set_up_fails_the_tasks_with_its_error():
    with Workers(2, _fail_init, context=_ctx()) as pool:
        with pytest.raises(ValueError, match="no layout named 'xx'"):
            list(pool.map(abs, [1, 2]))


def test_a_worker_that_dies_is_an_error_not_a_hang():
    t = time.perf_counter()
    with Workers(2, context=_ctx()) as pool:
        with pytest.raises(WorkerError, match=r"exited unexpectedly \(exit code 3\)"):
            list(pool.map(os._exit, [3, 3, 3]))
    assert time.perf_counter() - t < 30


def test_close_does_not_hang_on_results_never_taken():
    pool = Workers(2, context=_ctx())
    results = pool.map(bytes, [1 << 20] * 6)  # 1 MB each: more than a pipe holds
    assert len(next(results)) == 1 << 20
    results.close()
    pool.close()


def test_spawned_workers_work_too():
    with Workers(2, _set_state, (7,), context=multiprocessing.get_context("spawn")) as pool:
        assert list(pool.map(_read_state, [1, 2, 3])) == [8, 9, 10]


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one worker"):
        Workers(0)


def test_a_map_left_early_does_not_leak_into_the_next():
    with Workers(2, context=_ctx()) as pool:
        first = pool.map(_slow_square, range(10))
        assert next(first) == 0
        first.close()  # its other results are still on their way
        assert list(pool.map(abs, [-1, -2, -3])) == [1, 2, 3]


def test_stop_lets_the_workers_go_and_close_waits_for_them():
    pool = Workers(2, context=_ctx())
    assert list(pool.map(abs, [-1, -2])) == [1, 2]
    pool.stop()
    pool.stop()  # once is enough; a second call changes nothing
    with pytest.raises(RuntimeError, match="stopped"):
        list(pool.map(abs, [1]))
    pool.close()


def test_after_a_failure_the_workers_refuse_more_work():
    with Workers(1, context=_ctx()) as pool:
        with pytest.raises(ValueError):
            list(pool.map(math.sqrt, [-1.0]))
        with pytest.raises(RuntimeError, match="closed or failed"):
            list(pool.map(abs, [1]))
