"""Worker processes that map a function over a stream of tasks, results back in input order.

What `kbsim simulate --workers N` runs its chunks on. Leaner than `multiprocessing.Pool`: no
helper threads in the parent (a Pool runs three, which woke for every task and result and took
about a tenth of a core from the workers on the 2-core machine), one shared task queue that
idle workers pull from (so a slow chunk never holds the others back), one result pipe per
worker, and a bounded look-ahead: at most `ahead` tasks are queued or running at any time, so
memory stays bounded whatever the input's size.

    with Workers(2, init, init_args) as pool:
        pool.wait_ready()                    # optional: every worker set up
        for result in pool.map(fn, tasks):   # in the order of `tasks`
            ...

A task that raises in a worker re-raises the same exception in the parent (with the worker's
traceback in its message when the exception cannot travel between processes); a worker that
dies (killed, out of memory) is an error naming its exit code, never a hang or a lost task.
`fn` and `init` must be importable module-level functions and the tasks picklable, so that any
start method works (fork, spawn, forkserver).
"""

from __future__ import annotations

import os
import pickle
import traceback
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import wait
from typing import Any


class WorkerError(RuntimeError):
    """A worker process died, or raised something that could not be sent back."""


def _failure(k: int, e: BaseException) -> tuple[int, bool, BaseException]:
    """A task's failure as it travels back: the exception itself when it pickles, else a
    `WorkerError` carrying its type, message and traceback."""
    try:
        pickle.dumps(e)
    except Exception:  # noqa: BLE001 - whatever stops it from pickling
        e = WorkerError(f"worker {os.getpid()} raised {type(e).__name__}: {e}\n"
                        + "".join(traceback.format_exception(e)))
    return k, False, e


_READY = -1
"""The id of the message a worker sends first, once set up (ok, or its set-up's failure)."""


def _worker_main(init: Callable[..., None] | None, init_args: tuple, tasks: Any,
                 results: Any) -> None:
    """A worker: set up once, report that on its pipe, then run tasks from the queue until the
    None sentinel. A set-up that fails also fails every task it is given, so the parent sees
    its exception either way. Ctrl-C is the parent's to handle (it stops the workers): a worker
    ignores SIGINT, which a terminal sends to the whole process group."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    failed = None
    try:
        if init is not None:
            init(*init_args)
    except BaseException as e:  # noqa: BLE001
        failed = e
    results.send((_READY, True, None) if failed is None else _failure(_READY, failed))
    while (item := tasks.get()) is not None:
        k, fn, arg = item
        if failed is not None:
            results.send(_failure(k, failed))
            continue
        try:
            out = (k, True, fn(arg))
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the parent
            out = _failure(k, e)
        results.send(out)
    results.close()


class Workers:
    """`n` worker processes, each set up once by `init(*init_args)`.

    Args:
        n: Number of processes (>= 1).
        init: Called once in each worker before its first task (None: nothing).
        init_args: Its arguments (picklable for spawn).
        context: A multiprocessing context (default: the platform's default).
    """

    def __init__(self, n: int, init: Callable[..., None] | None = None, init_args: tuple = (),
                 context: Any = None) -> None:
        import multiprocessing

        if n < 1:
            raise ValueError(f"need at least one worker, got {n}")
        ctx = context or multiprocessing.get_context()
        self._tasks = ctx.SimpleQueue()
        self._procs = []
        self._conns = []
        try:
            for _ in range(n):
                receive, send = ctx.Pipe(duplex=False)
                p = ctx.Process(target=_worker_main, args=(init, init_args, self._tasks, send),
                                daemon=True)
                p.start()
                send.close()  # the parent keeps only the reading end: EOF when the worker exits
                self._procs.append(p)
                self._conns.append(receive)
        except BaseException:
            self.terminate()
            raise
        self._busy = False
        self._waiting_ready = True  # each pipe's first message is its worker's ready report
        self._next_id = 0  # task ids run across maps, so a left-over result is never mistaken
        self._broken = False
        self._stopping = False  # the exit sentinels are queued

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        if kind is None:
            self.close()
        else:
            self.terminate()

    def wait_ready(self) -> None:
        """Waits until every worker has run its `init`, e.g. so that the set-up of a job is
        timed apart from its work. Without it, the tasks simply wait for the set-up (and after
        a `map` has begun, this returns at once).

        Raises:
            The exception a worker's `init` raised, or `WorkerError` if a worker died.
        """
        if not self._waiting_ready:
            return
        pending = list(self._conns)
        try:
            while pending:
                for conn in wait(pending):
                    k, ok, value = self._recv(conn)
                    pending.remove(conn)
                    if not ok:
                        raise value
        except BaseException:
            self._broken = True
            raise
        self._waiting_ready = False

    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any],
            ahead: int | None = None) -> Iterator[Any]:
        """`fn(task)` for each task, run in the workers, yielded in the order of `tasks`.

        Args:
            fn: A module-level function.
            tasks: Any iterable, consumed lazily: at most `ahead` tasks (default: twice the
                workers) are queued, running or waiting to be yielded at any time.

        Raises:
            The exception a task raised (the first one in input order that is reached), or
            `WorkerError` if a worker died. Either leaves the workers unusable: `terminate`.
        """
        if self._busy:
            raise RuntimeError("Workers.map is already running")
        if self._broken or self._stopping or not self._procs:
            raise RuntimeError("these workers are stopped, closed or failed; start new ones")
        ahead = ahead or 2 * len(self._procs)
        if ahead < 1:
            raise ValueError(f"ahead must be >= 1, got {ahead}")
        self._busy = True
        self._waiting_ready = False  # ready reports still to come are dropped by `_receive`
        source = iter(tasks)
        base = self._next_id
        sent = done = 0  # tasks queued so far; tasks yielded so far (ids from `base`)
        ready: dict[int, tuple[bool, Any]] = {}
        exhausted = False
        try:
            while True:
                while not exhausted and sent - done < ahead:
                    task = next(source, _END)
                    if task is _END:
                        exhausted = True
                    else:
                        self._tasks.put((base + sent, fn, task))
                        sent += 1
                        self._next_id += 1
                if exhausted and done == sent:
                    return
                while base + done not in ready:
                    self._receive(ready, base)
                ok, value = ready.pop(base + done)
                if not ok:
                    self._broken = True
                    raise value
                done += 1
                yield value
        finally:
            self._busy = False

    def _receive(self, ready: dict[int, tuple[bool, Any]], base: int) -> None:
        """Waits for at least one result (dropping those of earlier maps, abandoned before
        their end); a closed pipe means its worker died."""
        for conn in wait(self._conns):
            k, ok, value = self._recv(conn)
            if k >= base:  # a ready report (id -1) or a result of an earlier map is dropped
                ready[k] = (ok, value)

    def _recv(self, conn: Any) -> tuple[int, bool, Any]:
        """One message from a worker's pipe; a closed pipe means the worker died."""
        try:
            return conn.recv()
        except EOFError:
            p = self._procs[self._conns.index(conn)]
            p.join(timeout=5)
            self._broken = True
            raise WorkerError(f"worker process {p.pid} exited unexpectedly (exit code "
                              f"{p.exitcode})") from None

    def stop(self) -> None:
        """Tells every worker to exit once the tasks queued so far are done, without waiting
        (so that the caller can finish its own work meanwhile); `close` then waits. No `map`
        can follow."""
        if not self._stopping:
            self._stopping = True
            for _ in self._procs:
                self._tasks.put(None)

    def close(self) -> None:
        """Lets every worker finish what is queued (results not taken are dropped, so that no
        worker blocks on a full pipe) and waits for them."""
        self.stop()
        open_ = list(self._conns)
        while open_:
            for conn in wait(open_):
                try:
                    conn.recv()
                except EOFError:
                    open_.remove(conn)
        for p in self._procs:
            p.join()
        self._release()

    def terminate(self) -> None:
        """Stops every worker at once (after an error or an interrupt)."""
        for p in self._procs:
            if p.is_alive():
                p.terminate()
        for p in self._procs:
            p.join()
        self._release()

    def _release(self) -> None:
        for conn in self._conns:
            conn.close()
        self._tasks.close()
        self._conns, self._procs = [], []


_END = object()
