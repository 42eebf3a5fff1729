"""The collector service, wired: MQTT ingest -> validation -> writer -> InfluxDB, with
dead letters, the site registry and self-metrics.

Two entry points:

**With a broker** (the real service, the local stack, end-to-end tests)::

    from collector.config import load
    from collector.core.service import Collector

    with Collector(load(Path("collector.toml"))) as c:   # start(): waits for SUBACK
        ...                                               # publish to the broker
        c.flush()                                         # everything received is written
    # or: Collector(cfg).run(stop_event) blocks until stop_event is set (returns exit code)

**Without a broker**, for loading test data "through the collector" (dashboards,
bulletin): the same validation, registry enrichment, schema and writer, in-process::

    from collector.core.service import ingest
    report = ingest(messages, sites, "http://127.0.0.1:8086", database="netmon")
    assert report.accepted == len(messages) and not report.dead

``messages`` are ResultMessage/StatusMessage objects or raw ``(topic, payload)`` pairs;
``sites`` is an iterable of :class:`collector.schema.Site` or a Registry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from collector.config import (
    CollectorConfig,
    InfluxSettings,
    Targets,
    WriterSettings,
    open_registry,
)
from collector.core.deadletters import DeadLetter, DeadLetterStore
from collector.core.influx import InfluxClient
from collector.core.ingest import MqttIngest, validate
from collector.core.integrity import ResultIndex
from collector.core.registry import Registry
from collector.core.registrymetrics import RegistryMetrics
from collector.core.rollups import Rollups, write_switch
from collector.core.schema import Site
from collector.core.selfmetrics import Stats
from collector.core.writer import Item, Writer
from netmon.contract import ResultMessage, StatusMessage, Topics

log = logging.getLogger(__name__)


DEFAULT_SHARE_GROUP = "netmon-collectors"


def worker_config(cfg: CollectorConfig, index: int) -> CollectorConfig:
    """The config of worker ``index`` when ``mqtt.workers > 1``: same share group, own
    client id (worker 0 keeps the configured one, so no session is orphaned)."""
    mqtt = cfg.mqtt.model_copy(update={
        "client_id": cfg.mqtt.client_id if index == 0 else f"{cfg.mqtt.client_id}-{index}",
        "shared_group": cfg.mqtt.shared_group or DEFAULT_SHARE_GROUP})
    # SQLite allows one writer: each worker keeps its own result index (the limits this
    # implies are in collector/core/integrity.py and docs/collector.md).
    path = cfg.integrity.index_path
    integrity = cfg.integrity.model_copy(update={
        "index_path": path if index == 0 else path.with_name(
            f"{path.stem}-{index}{path.suffix}")})
    return cfg.model_copy(update={"mqtt": mqtt, "integrity": integrity})


class Collector:
    """The running collector. Thread-based; ``start()``/``stop()`` or ``run(stop_event)``."""

    def __init__(self, cfg: CollectorConfig, registry: Registry | None = None) -> None:
        self.cfg = cfg
        self.registry = registry if registry is not None else open_registry(cfg)
        self.stats = Stats()
        self.influx = InfluxClient(cfg.influxdb)
        self.dead_store = DeadLetterStore(cfg.dead_letters.path,
                                          cfg.dead_letters.max_bytes_per_probe,
                                          cfg.dead_letters.max_bytes_total)
        integ = cfg.integrity
        self.index = ResultIndex(integ.index_path, integ.index_max_age_days,
                                 integ.max_isps_per_day, integ.max_targets_per_day)
        self.fatal: Exception | None = None
        self._fatal_event = threading.Event()
        self.ingest = MqttIngest(cfg.mqtt, self.registry, self.stats, self._submit,
                                 known_isps=integ.known_isps)
        self.writer = Writer(
            self.influx, cfg.writer, self.stats, on_done=self._stored,
            dead_store=self.dead_store,
            publish_dead=self.ingest.publish_dead if cfg.dead_letters.publish else None,
            on_fatal=self._on_fatal, create_database=cfg.influxdb.create_database,
            is_stale=self.ingest.is_stale, index=self.index)
        self._stats_stop = threading.Event()
        self._stats_thread: threading.Thread | None = None
        self.registry_metrics = RegistryMetrics(self.registry, cfg.influxdb)  # alert input
        self.rollups = (Rollups(cfg.influxdb, cfg.targets, cfg.rollups.interval_s)
                        if cfg.rollups.enabled else None)
        if self.rollups is not None:  # the dashboards' peak panels use the same hours
            self.rollups.peak_hours = (cfg.bulletin.peak_start_hour, cfg.bulletin.peak_end_hour)
        self._started = False
        self._raw_switch_written = False

    def _submit(self, item: Item) -> None:
        self.writer.submit(item)

    def _stored(self, items: list[Item]) -> None:
        # The writer's success path: the batch is in InfluxDB and its dead letters are
        # fsynced. Receipts first, then the PUBACKs (docs/protocol.md, "Receipts: the
        # collector side"): on the one socket, the broker has every receipt before it
        # may forget an input message.
        self.ingest.send_receipts(items)
        self.ingest.ack(items)
        if self.rollups is not None:
            self.rollups.touch(items)  # marks only: the rollups thread recomputes
        elif not self._raw_switch_written:
            # No rollups: the dashboards' switch must say "raw" for every range, or their
            # long-range panels would read rollups nobody writes.
            try:
                with InfluxClient(self.cfg.influxdb) as client:
                    write_switch(client, rollups=False)
                self._raw_switch_written = True
            except Exception as exc:  # tried again after the next batch
                log.warning("could not write the dashboards' raw-only switch: %s", exc)

    def _on_fatal(self, exc: Exception) -> None:
        self.fatal = exc
        self.ingest.pause()
        self._fatal_event.set()

    # ------------------------------------------------------------------ lifecycle

    def start(self, wait: float | None = 15.0) -> Collector:
        """Start writer, MQTT and stats; with ``wait``, block until subscribed (or raise)."""
        if self.cfg.influxdb.create_database:
            try:
                self.influx.ensure_database()
            except Exception as exc:  # InfluxDB may be down now; the writer retries later
                log.warning("could not create database %r now: %s",
                            self.cfg.influxdb.database, exc)
        self.writer.start()
        self.ingest.start()
        self._stats_thread = threading.Thread(target=self._stats_loop, name="stats",
                                              daemon=True)
        self._stats_thread.start()
        self.registry_metrics.start()
        if self.rollups is not None:
            self.rollups.start(site.probe_id for site in self.registry.sites())
        self._started = True
        log.info("collector started: %d sites, broker %s:%d, InfluxDB %s db=%s",
                 len(self.registry), self.cfg.mqtt.host, self.cfg.mqtt.port,
                 self.cfg.influxdb.url, self.cfg.influxdb.database)
        if wait is not None and not self.ingest.subscribed.wait(wait):
            err = self.ingest.last_error or "no answer"
            self.stop()
            raise RuntimeError(f"not subscribed to {self.cfg.mqtt.host}:{self.cfg.mqtt.port} "
                               f"within {wait:.0f}s: {err}")
        return self

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every message received so far is written (and acked)."""
        return self.writer.flush(timeout)

    def flush_rollups(self) -> int:
        """Recompute now every rollup bucket the written batches touched (the rollups
        thread would within ``rollups.interval_s``); returns the points written. For the
        local stack and tests, which read rollup panels right after the results."""
        return self.rollups.run_once() if self.rollups is not None else 0

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking messages, write what was received, ack it, disconnect."""
        if not self._started:
            return
        self._started = False
        self.ingest.pause()
        self.writer.stop(timeout)
        self._stats_stop.set()
        if self._stats_thread:
            self._stats_thread.join(5)
        self._report_stats(write=False)
        self.registry_metrics.stop()
        if self.rollups is not None:
            self.rollups.stop()
        self.ingest.stop()
        self.influx.close()
        self.index.close()

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self, stop_event: threading.Event) -> int:
        """Run until ``stop_event`` is set (0) or a fatal write error (1)."""
        self.start(wait=None)
        try:
            while not stop_event.is_set() and not self._fatal_event.is_set():
                stop_event.wait(0.5)
        finally:
            self.stop()
        return 1 if self.fatal else 0

    def reload_registry(self) -> bool:
        """Re-read the site registry (SIGHUP); messages keep flowing meanwhile."""
        return self.registry.reload()

    # ------------------------------------------------------------------ self-metrics

    def _stats_loop(self) -> None:
        while not self._stats_stop.wait(self.cfg.writer.stats_interval_s):
            self._report_stats(write=True)

    def _report_stats(self, write: bool) -> None:
        snap = self.stats.snapshot(reset_interval=True)
        log.info("stats [%s]: %s", self.cfg.mqtt.client_id, self.stats.log_line(snap))
        if write and not self.fatal:
            lines = self.stats.lines(self.cfg.mqtt.client_id, int(time.time() * 1000), snap)
            self.writer.submit(Item(lines, kind="stats"))


# ---------------------------------------------------------------------- in-process


@dataclass
class IngestReport:
    """What :func:`ingest` did."""

    accepted: int = 0
    """Messages stored (each result is one point; a status is 1 + one per link)."""
    points: int = 0
    dead: list[DeadLetter] = field(default_factory=list)


def _as_raw(msg: ResultMessage | StatusMessage | tuple[str, bytes], topics: Topics
            ) -> tuple[str, bytes]:
    if isinstance(msg, ResultMessage):
        return topics.results(msg.probe_id), msg.to_json()
    if isinstance(msg, StatusMessage):
        return topics.status(msg.probe_id), msg.to_json()
    return msg


def ingest(messages: Iterable[ResultMessage | StatusMessage | tuple[str, bytes]],
           sites: Iterable[Site] | Registry, influx: InfluxSettings | str,
           database: str = "netmon", create_database: bool = True,
           batch_size: int = 5000, topic_prefix: str | None = None,
           dead_letters: Path | None = None,
           result_index: ResultIndex | None = None,
           rollups: Targets | bool = True) -> IngestReport:
    """Validate, enrich and write messages to InfluxDB in-process (no broker).

    Exactly the collector's path minus MQTT (and so minus receipts): contract
    validation, probe-id check, registry lookup (unknown probes are dead letters),
    schema, batched writes with retries; with ``result_index``, conflicts and the daily
    limits too; then the rollups of every hour and day written (``rollups``: the targets
    their ``met`` counts use, True for the default ones, False for none). Returns counts
    and the dead letters (also appended to ``dead_letters``
    when given). Raises FatalWriteError/InfluxError if InfluxDB refuses for good.
    """
    registry = sites if isinstance(sites, Registry) else Registry.from_sites(sites)
    settings = influx if isinstance(influx, InfluxSettings) else InfluxSettings(
        url=influx, database=database, create_database=create_database)
    topics = Topics(topic_prefix) if topic_prefix else Topics()
    report = IngestReport()
    stats = Stats()
    with InfluxClient(settings) as client:
        if settings.create_database:
            client.ensure_database()
        writer = Writer(client, WriterSettings(batch_size=batch_size, linger_s=0.0), stats,
                        dead_store=DeadLetterStore(dead_letters) if dead_letters else None,
                        create_database=settings.create_database, index=result_index)
        batch: list[Item] = []
        roll = (None if rollups is False else
                Rollups(settings, rollups if isinstance(rollups, Targets) else None))

        def flush() -> None:
            dead = writer.process_batch(batch)  # the writer thread's code, synchronously
            if roll is not None:
                roll.touch(batch)
            report.dead.extend(dead)
            report.accepted += len(batch) - len(dead)
            batch.clear()

        for msg in messages:
            topic, payload = _as_raw(msg, topics)
            batch.append(validate(topic, payload, topics, registry))
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    if roll is not None:
        roll.run_once()
    report.points = stats.written
    return report
