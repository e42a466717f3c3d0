"""A consumer run on a background thread behind a bounded queue, so host work such as video
encoding overlaps the device's work on the next clip. Errors surface in the caller's thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

_STOP = object()


class BackgroundConsumer:
  """`put(item)` hands items to `consume` on a worker thread, in order. Use as a context
  manager: a clean exit waits for every item; an exception drops the items still queued."""

  def __init__(self, consume: Callable[[object], None], max_items: int = 16):
    self._consume = consume
    self._queue: queue.Queue = queue.Queue(max_items)
    self._error: BaseException | None = None
    self._abort = False
    self._thread = threading.Thread(target=self._work, daemon=True)
    self._thread.start()

  def _work(self) -> None:
    while (item := self._queue.get()) is not _STOP:
      if self._error is None and not self._abort:
        try:
          self._consume(item)
        except BaseException as e:  # re-raised in the caller's thread
          self._error = e

  def _raise(self) -> None:
    if self._error is not None:
      raise self._error

  def put(self, item) -> None:
    self._raise()
    self._queue.put(item)

  def close(self) -> None:
    """Waits until every queued item has been consumed; re-raises the consumer's error."""
    self._queue.put(_STOP)
    self._thread.join()
    self._raise()

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is None:
      self.close()
    else:
      self._abort = True
      self._queue.put(_STOP)
      self._thread.join()
    return False
