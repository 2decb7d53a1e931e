"""One interface for running many independent jobs: local processes, or a Dask cluster.

The active-learning loop sends its parallel work (MD walkers, exploration sources,
labelling chunks) through :meth:`Executor.as_completed`, which yields each result as
soon as its job finishes, so that the loop stores it at once (a crash loses only the
jobs still running); :meth:`Executor.map` returns them all, in order. Jobs are plain
picklable functions with picklable arguments. Choose by configuration, not by code:

* ``make_executor(workers=1)``: run in this process (no pickling, easiest to debug).
* ``make_executor(workers=N)``: N spawned local processes (spawn, not fork: torch and
  OpenMM threads do not survive a fork).
* ``make_executor(scheduler="tcp://host:8786")``: a running Dask distributed cluster
  (``pip install 'advmd[cluster]'``); the workers need advmd installed.
"""

from __future__ import annotations

import abc
import concurrent.futures
import multiprocessing
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple

__all__ = ["Executor", "SerialExecutor", "ProcessExecutor", "DaskExecutor", "make_executor"]


class Executor(abc.ABC):
    """Runs ``fn`` over items and returns the results in order."""

    name = "executor"

    @abc.abstractmethod
    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> List[Any]:
        """``[fn(item) for item in items]``, possibly in parallel."""

    @abc.abstractmethod
    def as_completed(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Tuple[int, Any]]:
        """``(index, fn(item))`` for every item, each as soon as its job finishes (any order).

        A job's exception is raised when its turn comes; the results yielded before it are the
        caller's to keep, and jobs not yet started are cancelled.
        """

    def close(self) -> None:
        """Release workers (idempotent)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _in_process(fn: Callable[[Any], Any], item: Any) -> Any:
    """Run a job in this process, then restore torch's thread count: a job sets its own (``[executor] threads``),
    and the main process's training must not inherit it (results would depend on the executor and on the step a
    run resumed at)."""
    import torch

    threads = torch.get_num_threads()
    try:
        return fn(item)
    finally:
        torch.set_num_threads(threads)


class SerialExecutor(Executor):
    name = "serial"

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> List[Any]:
        return [_in_process(fn, item) for item in items]

    def as_completed(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Tuple[int, Any]]:
        for index, item in enumerate(items):
            yield index, _in_process(fn, item)


def _initialise_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class ProcessExecutor(Executor):
    """A pool of ``workers`` spawned processes, each with ``threads`` torch threads."""

    name = "processes"

    def __init__(self, workers: int, threads: int = 1) -> None:
        self.workers = int(workers)
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_initialise_worker,
            initargs=(int(threads),),
        )

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> List[Any]:
        return list(self._pool.map(fn, list(items)))

    def as_completed(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Tuple[int, Any]]:
        futures = {self._pool.submit(fn, item): index for index, item in enumerate(items)}
        try:
            for future in concurrent.futures.as_completed(futures):
                yield futures[future], future.result()
        finally:
            for future in futures:
                future.cancel()  # those not started; a no-op once all are done

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor(Executor):
    """Jobs on a Dask distributed cluster (``scheduler`` address, or a ``distributed.Client``)."""

    name = "dask"

    def __init__(self, scheduler: Any) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise ImportError(
                "[executor] scheduler is set but Dask is not installed; install it with pip install 'advmd[cluster]'"
            ) from None
        self._own = not isinstance(scheduler, Client)
        self.client = Client(scheduler) if self._own else scheduler
        self.address = self.client.scheduler.address

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> List[Any]:
        items = list(items)
        # pure=False: a job is an action (it may write files), never deduplicated by Dask.
        futures = self.client.map(fn, items, pure=False)
        return self.client.gather(futures)

    def as_completed(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Tuple[int, Any]]:
        from distributed import as_completed

        futures = self.client.map(fn, list(items), pure=False)
        index = {future.key: k for k, future in enumerate(futures)}
        try:
            for future in as_completed(futures):
                yield index[future.key], future.result()
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def close(self) -> None:
        if self._own and self.client is not None:
            self.client.close()
            self.client = None


def make_executor(workers: int = 1, scheduler: Optional[Any] = None, threads: int = 1) -> Executor:
    """The executor a configuration names: Dask if ``scheduler`` is set, else local processes (or serial)."""
    if scheduler:
        return DaskExecutor(scheduler)
    if int(workers) != workers or workers < 1:
        raise ValueError(f"[executor] workers must be an integer >= 1, got {workers!r}")
    return SerialExecutor() if workers == 1 else ProcessExecutor(workers, threads)
