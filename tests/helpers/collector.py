"""Helpers for the collector tests and benchmark: results, sites, config files, a QoS 1
publisher and InfluxDB counts. Real broker and database come from tests/conftest.py."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from collector.config import CollectorConfig, load
from collector.core.schema import Site
from netmon.contract import ResultMessage, Topics

SITES = [
    # Official codes and names of the map from 1 July 2025 (collector/core/reference/).
    Site("ky-anh-01", "UBND phường Sông Trí", "Phường Sông Trí", "Thị xã Kỳ Anh", 18.0731,
         106.2936, "commune_office", commune_code="18754", legacy_commune_code="18820"),
    Site("huong-khe-01", "UBND thị trấn Hương Khê", "Xã Hương Khê", "Huyện Hương Khê",
         18.1765, 105.7109, "commune_office", commune_code="18496",
         legacy_commune_code="18496"),
    Site("cam-xuyen-01", "Trường THCS Cẩm Xuyên", "Xã Cẩm Xuyên", "Huyện Cẩm Xuyên", 18.2556,
         106.0053, "school", commune_code="18673", legacy_commune_code="18673"),
    Site("thach-ha-01", "UBND xã Thạch Đài", "Phường Hà Huy Tập", "Thành phố Hà Tĩnh",
         18.3353, 105.875, "commune_office", commune_code="18652",
         legacy_commune_code="18643"),
]
BASE_TIME = datetime(2026, 3, 1, tzinfo=UTC)


def make_result(i: int, probe_id: str = "ky-anh-01", **kw: Any) -> ResultMessage:
    """A valid result; ``i`` gives it a distinct started_at (ms) and id."""
    data: dict[str, Any] = dict(
        id=uuid.uuid5(uuid.NAMESPACE_OID, f"{probe_id}-{i}"), probe_id=probe_id, link="fibre",
        access="fixed", isp="VNPT", method="iperf3", target="iperf.hatinh.example",
        started_at=BASE_TIME + timedelta(milliseconds=i), duration_s=10.0,
        metrics={"download_mbps": 100.0 + i % 50, "upload_mbps": 40.5, "rtt_ms": 12.0},
        agent_version="0.1.0")
    data.update(kw)
    return ResultMessage(**data)


def sites_toml(sites: Iterable[Site]) -> str:
    """A registry file's text."""
    out = []
    for s in sites:
        out.append("[[site]]\n" + "\n".join(
            f"{k} = {_toml(v)}" for k, v in (
                ("probe_id", s.probe_id), ("name", s.name), ("commune_code", s.commune_code),
                ("legacy_commune_code", s.legacy_commune_code), ("latitude", s.latitude),
                ("longitude", s.longitude), ("site_type", s.site_type)) if v != "") + "\n")
    return "\n".join(out)


def _toml(v: object) -> str:
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def write_config(tmp: Path, mqtt_port: int, influx_port: int, database: str = "netmon",
                 sites: Iterable[Site] = SITES, client_id: str = "test-collector",
                 extra: str = "", units_file: Path | None = None) -> Path:
    """A collector.toml + sites.toml under ``tmp``; returns the config path.

    ``units_file``: a reference map other than the packaged one (``[registry]``)."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "sites.toml").write_text(sites_toml(sites), encoding="utf-8")
    cfg = tmp / "collector.toml"
    cfg.write_text(f"""
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
tls = false
client_id = "{client_id}"
keepalive_s = 5
[influxdb]
url = "http://127.0.0.1:{influx_port}"
database = "{database}"
timeout_s = 5
[writer]
flush_interval_s = 0.2
retry_initial_s = 0.1
retry_max_s = 1.0
stats_interval_s = 1
[registry]
path = "sites.toml"
{f"units_file = {_toml(str(units_file))}" if units_file else ""}
[dead_letters]
path = "dead-letters.jsonl"
{extra}
""", encoding="utf-8")
    return cfg


def config(tmp: Path, mqtt_port: int, influx_port: int, **kw: Any) -> CollectorConfig:
    """Write and load a config."""
    return load(write_config(tmp, mqtt_port, influx_port, **kw))


class Publisher:
    """A QoS 1 publisher that can wait until the broker has acknowledged everything."""

    def __init__(self, port: int, client_id: str | None = None) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self._acked = 0
        self._lock = threading.Lock()
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.sent = 0

    def _on_publish(self, *args: object) -> None:
        with self._lock:
            self._acked += 1

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Queue one message."""
        self.client.publish(topic, payload, qos=qos, retain=retain)
        self.sent += 1

    def results(self, msgs: Iterable[ResultMessage], topics: Topics | None = None) -> None:
        """Publish results on their own probe's topic."""
        topics = topics or Topics()
        for m in msgs:
            self.publish(topics.results(m.probe_id), m.to_json())

    def wait(self, timeout: float = 60) -> None:
        """Until the broker acknowledged every publish."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._acked >= self.sent:
                    return
            time.sleep(0.01)
        raise TimeoutError(f"broker acked {self._acked}/{self.sent}")

    def close(self) -> None:
        """Wait, disconnect."""
        self.wait()
        self.client.disconnect()
        self.client.loop_stop()


def count(influx: Any, db: str, q: str = "SELECT count(download_mbps) FROM results") -> int:
    """A single count from InfluxQL (0 when no series)."""
    res = influx.query(q, db=db)
    series = res["results"][0].get("series")
    if not series:
        return 0
    return int(sum(s["values"][0][1] for s in series))


def wait_count(influx: Any, db: str, expected: int, timeout: float = 60,
               q: str = "SELECT count(download_mbps) FROM results") -> int:
    """Poll until the count reaches ``expected`` (returns the last count)."""
    deadline = time.monotonic() + timeout
    n = -1
    while time.monotonic() < deadline:
        n = count(influx, db, q)
        if n >= expected:
            return n
        time.sleep(0.2)
    return n
