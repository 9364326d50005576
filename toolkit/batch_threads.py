"""A batch run's thread and collector handling: ``prefetched`` reads the next items on a thread
while the caller works on this one; ``collector_for_run`` sets the garbage collector for a run
whose rows wait for the journal's writing thread (``JournalWriter``)."""

from __future__ import annotations

import gc
import queue
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

YOUNG_COLLECTION = 20_000  # net allocations between young collections in a run (Python: 700, which walked the
# rows waiting for the writer about 110 times in 50,000 wine rows, freeing nothing: rows hold no cycles)


@contextmanager
def collector_for_run() -> Iterator[None]:
    """Within the block, full collections skip what lives at its start (``gc.freeze``: modules, the
    model) and the youngest generation is collected every ``YOUNG_COLLECTION`` net allocations at
    least; both restored after it, also when it raises."""
    gc.freeze()
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], YOUNG_COLLECTION), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def prefetched(items: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """``items`` as a thread computes them, up to ``depth`` ahead: reading the next RecordBatch
    overlaps predicting this one (Arrow's parsing and ONNX Runtime release the GIL, so on two
    cores the reader's Python work runs while the model does). The reader's errors are raised
    here, in order. The thread is a daemon that stops when the consumer does."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as e:  # raised in the consumer
            put((end, e))

    threading.Thread(target=read, name="aitk-reader", daemon=True).start()
    try:
        while True:
            try:
                item, error = ready.get(timeout=0.2)
            except queue.Empty:
                # Ctrl-C's signal may go to a thread blocked in read(2) (stdin); Python runs the
                # handler only here, in the main thread, so waiting must not block unboundedly
                continue
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()
