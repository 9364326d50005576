"""Dynamic batching: requests for one model gathered into one model call, as Triton's dynamic
batcher and Ray Serve's ``@serve.batch`` do.

Each model has one ``Batcher``: an asyncio task that takes the queued items, up to ``max_batch``
of them, and runs them in the model's own worker thread (one batch at a time, so the event loop
never blocks and the next batch gathers while the model runs). A batch waits up to ``max_wait``
seconds for more items only while other requests for the model are still on their way in
(being decoded), or while fewer items are queued than the previous batch held: under load the
clients it answered send their next requests at once, and a batch of a few items can cost a
model nearly as much as a full one (fraud with explanations: a record alone about 10 times its
share of a batch of 32). A lone client's request runs at once."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class QueueFull(Exception):
    """The model already holds ``max_queue`` items; the caller should retry later (HTTP 503)."""


class Ticket:
    """Room for ``count`` items held by one request (``Batcher.reserve``) until ``release``."""

    __slots__ = ("count", "arrived", "released")

    def __init__(self, count: int):
        self.count, self.arrived, self.released = count, False, False


class _Pending:
    """One ``submit``'s items on their way through the batches: its future is resolved with their
    results, in order, when the last one comes back (one future per request, not per item)."""

    __slots__ = ("future", "results", "left")

    def __init__(self, future: asyncio.Future, count: int):
        self.future, self.results, self.left = future, [None] * count, count

    def done(self, index: int, result: Any) -> None:
        self.results[index] = result
        self.left -= 1
        if not self.left and not self.future.done():
            self.future.set_result(self.results)

    def expire(self) -> None:
        if not self.future.done():
            self.future.set_exception(asyncio.TimeoutError())


class Batcher(Generic[T, R]):
    """``await submit(items)`` returns ``run(batch)``'s results for those items, in order.

    ``run`` takes a list of items and returns one result per item; it runs in a worker thread.
    ``on_batch(size)`` is called with the size of every batch run, ``on_held()`` after ``held`` changed
    (once per turn of the event loop)."""

    def __init__(self, name: str, run: Callable[[list[T]], list[R]], max_batch: int, max_wait: float, max_queue: int,
                 on_batch: Callable[[int], None] | None = None, on_held: Callable[[], None] | None = None):
        if max_batch < 1 or max_queue < 1 or max_wait < 0:
            raise ValueError("max_batch and max_queue must be at least 1, max_wait at least 0")
        self.name, self.run = name, run
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait, max_queue
        self.on_batch, self.on_held = on_batch, on_held or (lambda: None)
        self.held = 0  # items accepted and not yet answered: the bound of the queue
        self.arriving = 0  # requests accepted whose items are not queued yet (still decoding)
        self._items: deque[tuple[T, _Pending, int]] = deque()
        self._waiter: asyncio.Future | None = None
        self._ready: Callable[[], bool] = lambda: True  # what the batching task waits for
        self._task: asyncio.Task | None = None
        self._held_told = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"aitk-model-{name}")

    def start(self) -> None:
        """Start the batching task on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._serve(), name=f"aitk-batcher-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def reserve(self, count: int) -> Ticket:
        """Hold room for ``count`` items until ``release``; QueueFull if there is none.

        Until the ticket's items are submitted the request counts as arriving: a batch that
        starts meanwhile waits up to ``max_wait`` for it."""
        if self.held + count > self.max_queue:
            raise QueueFull(f"{self.name}: {self.held} records queued, the limit is {self.max_queue}")
        ticket = Ticket(count)
        self.held += count
        self.arriving += 1
        self._held_changed()
        return ticket

    def release(self, ticket: Ticket) -> None:
        """The request holding ``ticket`` is done with it (answered, refused or gone); once only."""
        if ticket.released:
            return
        ticket.released = True
        self.held -= ticket.count
        self._held_changed()
        self._arrived(ticket)

    async def submit(self, ticket: Ticket, items: list[T], deadline: float | None = None) -> list[R]:
        """Queue ``items`` (room held by ``ticket``) and wait for their results; TimeoutError at
        the loop time ``deadline`` (a timer on the request's one future, no task or scope of its own)."""
        loop = asyncio.get_running_loop()
        pending = _Pending(loop.create_future(), len(items))
        if len(items) == 1:
            self._items.append((items[0], pending, 0))
        else:
            self._items.extend((item, pending, i) for i, item in enumerate(items))
        self._arrived(ticket)
        timer = None if deadline is None else loop.call_at(deadline, pending.expire)
        try:
            return await pending.future
        finally:
            if timer is not None:
                timer.cancel()

    async def call(self, items: list[T]) -> list[R]:
        """``reserve``, ``submit`` and ``release`` in one step, for items that need no decoding first."""
        ticket = self.reserve(len(items))
        try:
            return await self.submit(ticket, items)
        finally:
            self.release(ticket)

    def _held_changed(self) -> None:
        """Tell ``on_held`` once per turn of the event loop, however many requests came and went in it."""
        if self._held_told:
            return
        try:
            asyncio.get_running_loop().call_soon(self._tell_held)
            self._held_told = True
        except RuntimeError:  # no loop running
            self.on_held()

    def _tell_held(self) -> None:
        self._held_told = False
        self.on_held()

    def _arrived(self, ticket: Ticket) -> None:
        if not ticket.arrived:
            ticket.arrived = True
            self.arriving -= 1
        self._signal()

    def _signal(self) -> None:
        """Wake the batching task if what it waits for is there (once per batch, not per request)."""
        if self._waiter is not None and self._ready():
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, ready: Callable[[], bool], deadline: float | None) -> bool:
        """Until ``ready()`` (True) or the loop time ``deadline`` (``ready()`` then); a plain future
        woken by ``_signal`` and a timer, no task per wake-up."""
        loop = asyncio.get_running_loop()
        self._ready = ready
        while not ready():
            if deadline is not None and loop.time() >= deadline:
                return False
            self._waiter = loop.create_future()
            timer = None if deadline is None else loop.call_at(deadline, self._wake)
            try:
                await self._waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        return True

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        expected = 1  # the items of the previous batch: under load, its clients send their next requests as it is answered
        while True:
            await self._wait(lambda: bool(self._items), None)
            deadline, wanted = loop.time() + self.max_wait, min(expected, self.max_batch)
            await self._wait(lambda: len(self._items) >= self.max_batch or (not self.arriving and len(self._items) >= wanted), deadline)
            batch = [self._items.popleft() for _ in range(min(self.max_batch, len(self._items)))]
            batch = [entry for entry in batch if not entry[1].future.done()]  # timed out or cancelled
            if not batch:
                continue
            expected = len(batch)
            if self.on_batch:
                self.on_batch(len(batch))
            try:
                results = await loop.run_in_executor(self._executor, self.run, [item for item, _, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} items")
            except Exception as e:  # the whole batch failed: every waiting request gets the error
                for _, pending, _ in batch:
                    if not pending.future.done():
                        pending.future.set_exception(e)
                continue
            for (_, pending, index), result in zip(batch, results):
                pending.done(index, result)


def run_in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in the default thread pool, awaited (for decoding and other blocking work)."""
    return asyncio.get_running_loop().run_in_executor(None, function, *args)
