"""Micro-batching: concurrent requests share one call of the jitted query encoder and one index search.

A request announces itself when it arrives (`expecting`), is read and preprocessed, then puts its query in the
queue and awaits its answer. One worker task takes the first waiting query and waits, until `max_batch` are waiting
and at most `window_s` for each next one, while other requests are known to be on their way or fewer are waiting
than the demand: the last batch's size plus the queries it left waiting, less the requests refused since. The
clients that sent the last batch send the next one, but their requests arrive one by one, and between two of them
the event loop may see an empty queue and nothing announced; without the demand, such a wave splits into batches
that then stay split, and so it does when a fixed window ends before its last request. A lone client waits for
nothing, and a load that drops waits one window, once. The batch runs in one background thread, so the event loop
keeps accepting requests meanwhile, and whatever arrives while a batch runs forms the next one: batches grow with
the load.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any


class Busy(Exception):
    """The queue is full: the request is refused rather than left to wait without bound."""


@dataclasses.dataclass
class Answer:
    """A query's share of a batch: its result, the batch's size and when each stage happened."""
    result: Any
    batch_size: int
    queued_s: float
    run_s: float


@dataclasses.dataclass
class _Waiting:
    item: Any
    future: asyncio.Future
    queued_at: float


class MicroBatcher:
    """Gathers concurrent `submit` calls into batches for `run_batch(items) -> results` (one result per item).

    Args:
        run_batch: runs in a worker thread, one batch at a time; returns a list aligned with its input, or
            a single object that `split(result, i)` turns into item i's result.
        max_batch: the most items one batch may hold.
        window_s: how long a batch being formed waits for its next item, while items are announced by `expecting`
            or fewer than the demand wait; every item that comes starts the window again (0: take only what is
            already waiting).
        max_queue: items allowed to wait; `submit` raises Busy beyond it.
        split: see run_batch (default: index the returned list).
    """

    def __init__(self, run_batch: Callable[[Sequence[Any]], Any], *, max_batch: int, window_s: float,
                 max_queue: int = 1024, split: Callable[[Any, int], Any] | None = None):
        if max_batch < 1 or window_s < 0 or max_queue < 1:
            raise ValueError(f"max_batch ({max_batch}) and max_queue ({max_queue}) must be positive and window_s "
                             f"({window_s}) not negative")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.window_s = window_s
        self.max_queue = max_queue
        self.split = split or (lambda results, i: results[i])
        self.batch_sizes = collections.Counter()  # batches run, by size
        self._expected = 0
        self._demand = 1  # see the module's docstring
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._arrived = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mire-batch")
        self._task: asyncio.Task | None = None

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @contextlib.contextmanager
    def expecting(self):
        """Announce an item being prepared: a batch being formed waits for it (within the window). Leave the
        block right before `submit`, with no await between, so the worker never sees the item in neither place; an
        exception leaving the block (the request refused) means the item never comes."""
        self._expected += 1
        try:
            yield
        except BaseException:
            self._demand = max(1, self._demand - 1)
            raise
        finally:
            self._expected -= 1
            self._arrived.set()  # wake the worker: the item is queued next, or will never come

    def start(self) -> None:
        """Start the worker task (in the running event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._work(), name="mire-batcher")

    async def stop(self) -> None:
        """Stop the worker; queries still waiting are answered with Busy."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._waiting:
            waiting = self._waiting.popleft()
            if not waiting.future.done():
                waiting.future.set_exception(Busy("the server is shutting down"))
        self._executor.shutdown(wait=True)

    async def submit(self, item) -> Answer:
        """Queue one item and wait for its share of a batch.

        Raises:
            Busy: `max_queue` items are already waiting.
            Exception: whatever `run_batch` raised for the batch the item was in.
        """
        if len(self._waiting) >= self.max_queue:
            raise Busy(f"{len(self._waiting)} queries are waiting; retry shortly")
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(item, future, time.perf_counter()))
        self._arrived.set()
        return await future

    async def _next_batch(self) -> list[_Waiting]:
        while not self._waiting:
            self._arrived.clear()
            await self._arrived.wait()
        if self.window_s > 0:
            loop = asyncio.get_running_loop()
            deadline, arrived = loop.time() + self.window_s, len(self._waiting)
            while len(self._waiting) < self.max_batch and (self._expected > 0 or len(self._waiting) < self._demand):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                if len(self._waiting) > arrived:  # a query came: the window starts again
                    deadline, arrived = loop.time() + self.window_s, len(self._waiting)
        batch = []
        while self._waiting and len(batch) < self.max_batch:
            waiting = self._waiting.popleft()
            if not waiting.future.done():  # a client that went away cancels its future
                batch.append(waiting)
        self._demand = min(self.max_batch, len(batch) + len(self._waiting))
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self.run_batch, [w.item for w in batch])
            except Exception as error:  # the batch failed: every query in it gets the error, the server goes on
                for w in batch:
                    if not w.future.done():
                        w.future.set_exception(error)
                continue
            run_s = time.perf_counter() - started
            self.batch_sizes[len(batch)] += 1
            for i, w in enumerate(batch):
                if not w.future.done():
                    w.future.set_result(Answer(self.split(results, i), len(batch), started - w.queued_at, run_s))
