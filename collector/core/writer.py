"""The writer thread: batches points, POSTs them to InfluxDB's v1 ``/write``, and only
then lets the messages be acknowledged.

- A batch is flushed when it holds ``batch_size`` points, when its oldest point has waited
  ``flush_interval_s``, or when input pauses for ``linger_s`` (typically because every
  message the broker may have in flight — MQTT Receive Maximum — is waiting for us).
- 5xx, timeouts and refused connections are retried forever with exponential backoff
  (``retry_initial_s`` doubling up to ``retry_max_s``, with jitter). Nothing is
  acknowledged meanwhile, so the broker keeps the messages and stops sending once the
  Receive Maximum is reached: memory stays bounded and nothing is lost.
- 400 (a point InfluxDB will never take, e.g. a field type conflict) is bisected down to
  the offending message, which is dead-lettered as ``influx_rejected``; the rest is written.
- 404 "database not found" creates the database once when ``create_database`` is on.
- Any other 4xx (401/403 bad credentials, ...) is fatal: no retry can fix it. The writer
  stops without acknowledging, calls ``on_fatal`` and the service exits with a clear error.

Before a batch is written, the result index (:mod:`collector.core.integrity`) turns a
result whose id is stored with other content into a ``conflict`` dead letter and one
beyond a probe's daily ``isp``/``target`` limit into a ``cardinality`` one. After the
write (and the dead letters' fsync), ``on_done`` gets the batch: the service publishes
the receipts, then acknowledges the messages (docs/protocol.md, "Receipts").
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from collector.config import WriterSettings
from collector.core.deadletters import DeadLetter, DeadLetterStore
from collector.core.influx import InfluxClient, InfluxError
from collector.core.integrity import ResultIndex
from collector.core.selfmetrics import Stats
from netmon.contract import ResultMessage
from netmon.errors import NetmonError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Item:
    """One message's worth of work: its points and/or its dead letter, and how to ack it."""

    lines: list[str]
    dead: DeadLetter | None = None
    #: (mid, qos, connection generation) for the MQTT acknowledgement; None: nothing to ack.
    ack: tuple[int, int, int] | None = None
    #: (topic, payload) kept so a point InfluxDB rejects can still be dead-lettered.
    source: tuple[str, bytes] | None = None
    kind: str = field(default="")
    #: The probe (from the topic) and result id a receipt names once this item is
    #: stored (as a point or as a dead letter); None for statuses and unreadable ids.
    receipt: tuple[str, str] | None = None
    #: The parsed result and its content digest, for the result index.
    result: ResultMessage | None = None
    digest: bytes | None = None


class FatalWriteError(NetmonError, RuntimeError):
    """InfluxDB refused writes in a way no retry can fix (wrong credentials, ...)."""


_STOP = object()


class _Flush:
    """A flush request in the writer's queue; ``done`` is set once everything queued
    before it is written (or dead-lettered) and acknowledged."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class Writer:
    """Background writer; :meth:`submit` is cheap and thread-safe."""

    def __init__(self, client: InfluxClient, settings: WriterSettings, stats: Stats,
                 on_done: Callable[[list[Item]], None] | None = None,
                 dead_store: DeadLetterStore | None = None,
                 publish_dead: Callable[[DeadLetter], None] | None = None,
                 on_fatal: Callable[[Exception], None] | None = None,
                 create_database: bool = False, compress: bool | None = None,
                 is_stale: Callable[[Item], bool] | None = None,
                 index: ResultIndex | None = None) -> None:
        self.client = client
        self.settings = settings
        self.stats = stats
        self.on_done = on_done
        self.dead_store = dead_store
        self.publish_dead = publish_dead
        self.on_fatal = on_fatal
        self.create_database = create_database
        self.compress = settings.gzip if compress is None else compress
        self.fatal: Exception | None = None
        #: True for an item received on an MQTT connection that has since dropped: the
        #: broker redelivers it, so holding on to it would only grow memory.
        self.is_stale = is_stale
        self.index = index
        self._q: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._abort = threading.Event()
        #: Items the writer thread has taken from the queue and not finished yet.
        self._in_progress = 0
        self._thread: threading.Thread | None = None
        self._created_db = False

    # ------------------------------------------------------------------ public

    def start(self) -> Writer:
        """Start the thread."""
        self._thread = threading.Thread(target=self._run, name="influx-writer", daemon=True)
        self._thread.start()
        return self

    def submit(self, item: Item) -> None:
        """Queue one message's work (never blocks: the broker's Receive Maximum bounds it)."""
        # No lock and no counter: a flush is a marker in the same queue (the network
        # thread calls this for every message).
        self._q.put(item)

    def pending(self) -> int:
        """Items submitted and not yet finished (approximate while both threads run)."""
        return self._q.qsize() + self._in_progress

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted so far is written and acked (or fatal)."""
        if self._thread is None or not self._thread.is_alive():
            return self.fatal is None and self.pending() == 0
        # Behind everything submitted so far: the writer thread sets it once the batches
        # holding those items are done.
        marker = _Flush()
        self._q.put(marker)
        deadline = time.monotonic() + timeout
        while not marker.done.wait(min(max(deadline - time.monotonic(), 0), 0.2)):
            if self.fatal is not None or time.monotonic() >= deadline:
                return False
        return self.fatal is None

    def stop(self, timeout: float = 30.0) -> bool:
        """Write what is queued, then end the thread. If InfluxDB stays unreachable past
        ``timeout``, give up *without* acknowledging: the broker redelivers later."""
        if self._thread is None:
            return True
        self._q.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("writer: InfluxDB still failing at shutdown; leaving %d messages "
                        "unacknowledged for redelivery", self.pending())
            self._abort.set()
            self._thread.join(10)
        alive = self._thread.is_alive()
        self._thread = None
        return not alive

    # ------------------------------------------------------------------ loop

    def _collect(self, first: Item, flushes: list[_Flush]) -> tuple[list[Item], bool]:
        # Sleep-and-drain rather than a blocking get() per item: waking this thread for
        # every message would hand the GIL back and forth with the network thread and
        # halve throughput. A flush marker ends the batch (it is set once it is written).
        batch = [first]
        self._in_progress = 1
        points = len(first.lines)
        deadline = time.monotonic() + self.settings.flush_interval_s
        linger = self.settings.linger_s
        batch_size = self.settings.batch_size
        get = self._q.get_nowait
        while True:
            got = 0
            while points < batch_size:
                try:
                    nxt = get()
                except queue.Empty:
                    break
                if nxt.__class__ is not Item and not isinstance(nxt, Item):
                    if nxt is _STOP:
                        return batch, True
                    assert isinstance(nxt, _Flush)
                    flushes.append(nxt)
                    return batch, False
                assert isinstance(nxt, Item)
                batch.append(nxt)
                self._in_progress += 1
                points += len(nxt.lines)
                got += 1
            if points >= batch_size or linger <= 0:
                return batch, False
            left = deadline - time.monotonic()
            if left <= 0 or (got == 0 and len(batch) > 1):
                # input paused (all in-flight messages are here) or the batch is old enough
                return batch, False
            time.sleep(min(linger, left))
            if self._q.empty():
                return batch, False

    def _run(self) -> None:
        stop = False
        while not stop:
            try:
                first = self._q.get(timeout=0.5)
            except queue.Empty:
                continue
            if first is _STOP:
                break
            if isinstance(first, _Flush):
                first.done.set()  # everything before it is written
                continue
            assert isinstance(first, Item)
            flushes: list[_Flush] = []
            batch, stop = self._collect(first, flushes)
            try:
                self.process_batch(batch)
            except _Aborted:
                return
            except Exception as exc:  # fatal: 4xx that no retry fixes, or a bug
                self.fatal = exc
                log.critical("writer stopped: %s. Nothing more is acknowledged; the broker "
                             "keeps the messages until the collector runs again.", exc)
                if self.on_fatal:
                    self.on_fatal(exc)
                return
            self._in_progress = 0
            for marker in flushes:
                marker.done.set()

    def process_batch(self, batch: list[Item]) -> list[DeadLetter]:
        """Write one batch synchronously (retrying), store its dead letters, then ack it.

        Returns the batch's dead letters (invalid messages, conflicts, results over a
        daily limit and points InfluxDB refused).
        """
        if self.index is not None:
            self._admit(batch)
        while True:
            try:
                rejected = self._write_items(batch)
                break
            except _Stale:
                batch = [it for it in batch if not self._stale(it)]
        dead = [it.dead for it in batch if it.dead is not None]
        for item, why in rejected:
            topic, payload = item.source or ("", b"")
            parts = topic.split("/")
            probe = parts[-2] if len(parts) >= 3 and parts[-3] == "probes" else None
            rec = DeadLetter.from_raw(topic, payload, "influx_rejected", why, probe_id=probe)
            dead.append(rec)
        if rejected and self.index is not None:
            # Not stored: a corrected message with the same id is not a conflict.
            self.index.forget([str(it.result.id) for it, _ in rejected if it.result])
        for rec in dead:
            self.stats.dead(rec.reason)
        if dead and self.dead_store is not None:
            # Durable before the receipt and the ack: a crash after this line cannot lose
            # the record.
            rotated = self.dead_store.append(dead)
            if rotated:
                self.stats.add(dead_rotated=rotated)
        if self.on_done:
            self.on_done(batch)
        if dead and self.publish_dead is not None:
            for rec in dead:
                try:
                    self.publish_dead(rec)
                except Exception as exc:  # the file is the durable copy; MQTT is a courtesy
                    log.warning("dead letter not published to MQTT: %s", exc)
        return dead

    def _admit(self, batch: list[Item]) -> None:
        """Dead-letter the batch's conflicts and results over a daily limit (in place)."""
        assert self.index is not None
        todo = [it for it in batch if it.result is not None and it.dead is None
                and it.digest is not None]
        if not todo:
            return
        verdicts = self.index.admit(
            [(it.result, it.digest) for it in todo
             if it.result is not None and it.digest is not None],
            # validate() turned each id into a string once already (the receipt's).
            [it.receipt[1] if it.receipt is not None and it.receipt[1] else str(it.result.id)
             for it in todo if it.result is not None])
        for item, verdict in zip(todo, verdicts, strict=True):
            if verdict is None:
                continue
            topic, payload = item.source or ("", b"")
            assert item.result is not None
            item.dead = DeadLetter.from_raw(topic, payload, verdict.reason, verdict.detail,
                                            probe_id=item.result.probe_id)
            item.lines = []
            item.kind = "dead"

    def _stale(self, item: Item) -> bool:
        return self.is_stale is not None and item.ack is not None and self.is_stale(item)

    def _write_items(self, items: list[Item]) -> list[tuple[Item, str]]:
        """Write the items' lines; return items InfluxDB refuses on their own (400)."""
        lines = [ln for it in items for ln in it.lines]
        if not lines:
            return []
        try:
            self._write_retrying(lines, items)
            return []
        except InfluxError as exc:
            if exc.status not in (400, 413):
                raise
            if len(items) == 1:
                if items[0].ack is None and items[0].source is None:
                    log.warning("own point refused by InfluxDB: %s", exc)
                    return []
                return [(items[0], str(exc))]
            mid = len(items) // 2
            return self._write_items(items[:mid]) + self._write_items(items[mid:])

    def _write_retrying(self, lines: list[str], items: list[Item]) -> None:
        delay = self.settings.retry_initial_s
        failures = 0
        while True:
            t0 = time.monotonic()
            try:
                self.client.write_lines(lines, compress=self.compress)
            except InfluxError as exc:
                self.stats.add(influx_errors=1)
                if exc.status == 404 and self.create_database and not self._created_db:
                    self._created_db = True
                    log.warning("InfluxDB: %s; creating database %r", exc,
                                self.client.settings.database)
                    self.client.ensure_database()
                    continue
                if exc.status in (400, 413):
                    raise
                if not exc.retryable:
                    raise FatalWriteError(
                        f"InfluxDB refused the write and no retry can fix it "
                        f"(check url, database and credentials): {exc}") from None
                failures += 1
                self.stats.add(retries=1)
                if any(self._stale(it) for it in items):
                    raise _Stale() from None
                if failures == 1 or failures % 10 == 0:
                    log.warning("InfluxDB write failed (%d points, attempt %d), retrying in "
                                "%.1fs; messages stay unacknowledged: %s", len(lines),
                                failures, delay, exc)
                if self._abort.wait(delay * random.uniform(0.8, 1.2)):
                    raise _Aborted() from None
                delay = min(delay * 2, self.settings.retry_max_s)
                continue
            if failures:
                log.info("InfluxDB write succeeded after %d failed attempts", failures)
            self.stats.batch(len(lines), time.monotonic() - t0)
            return


class _Aborted(Exception):
    """Shutdown while InfluxDB was failing."""


class _Stale(Exception):
    """The batch holds messages of a dropped connection; drop them and write the rest."""
