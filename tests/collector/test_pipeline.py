"""The collector in-process against real mosquitto and influxd: counts, dead letters,
duplicates, hostile names, InfluxDB outages, liveness and self-metrics."""

from __future__ import annotations

import csv
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from collector.config import InfluxSettings, WriterSettings
from collector.core.deadletters import DeadLetterStore
from collector.core.influx import InfluxClient
from collector.core.ingest import validate
from collector.core.integrity import ResultIndex
from collector.core.registry import Registry
from collector.core.schema import Site, to_ms
from collector.core.selfmetrics import Stats
from collector.core.service import Collector, ingest
from collector.core.units import DEFAULT_FILE
from collector.core.writer import Item, Writer
from devstack import services
from netmon.contract import StatusMessage, Topics
from tests.helpers.collector import (
    SITES,
    Publisher,
    config,
    count,
    make_result,
    wait_count,
)

T = Topics()
DB = "netmon"


@pytest.fixture
def collector(tmp_path: Path, mosquitto: services.Service, influxd: services.Service
              ) -> Iterator[Collector]:
    c = Collector(config(tmp_path / "c", mosquitto.port, influxd.port)).start()
    yield c
    c.stop()


class DeadLetterWatcher:
    """Subscribes to the dead-letter topic."""

    def __init__(self, port: int) -> None:
        self.records: list[dict[str, object]] = []
        self.ready = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.c.on_message = lambda c, u, m: self.records.append(json.loads(m.payload))
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.connect("127.0.0.1", port)
        self.c.subscribe(T.dead_letters(), qos=1)
        self.c.loop_start()
        assert self.ready.wait(10)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_valid_and_invalid_counts_and_reasons(collector: Collector, mosquitto: services.Service,
                                              influx: object) -> None:
    watcher = DeadLetterWatcher(mosquitto.port)
    n_valid = 500
    pub = Publisher(mosquitto.port)
    pub.results(make_result(i, probe_id=SITES[i % 4].probe_id) for i in range(n_valid))
    invalid = {
        "not_json": (T.results("ky-anh-01"), b"{oops"),
        "probe_mismatch": (T.results("ky-anh-01"),
                           make_result(9999, probe_id="huong-khe-01").to_json()),
        "unknown_probe": (T.results("nowhere-01"),
                          make_result(9998, probe_id="nowhere-01").to_json()),
        "invalid": (T.results("ky-anh-01"), b'{"schema": 1, "probe_id": "ky-anh-01"}'),
        "unsupported_schema": (T.status("ky-anh-01"), b'{"schema": 99}'),
    }
    for topic, payload in invalid.values():
        pub.publish(topic, payload)
    pub.close()
    assert wait_count(influx, DB, n_valid) == n_valid
    assert collector.flush(30)
    time.sleep(0.3)  # let the dead-letter copies arrive on MQTT
    assert count(influx, DB) == n_valid
    recs = DeadLetterStore(collector.cfg.dead_letters.path).read()
    assert sorted(r.reason for r in recs) == sorted(invalid)
    for r in recs:
        assert (r.topic, r.raw()) == invalid[r.reason]
    assert sorted(r["reason"] for r in watcher.records) == sorted(invalid)
    watcher.close()
    assert collector.stats.dead_reasons["probe_mismatch"] == 1
    assert collector.stats.acked == n_valid + len(invalid)


def test_duplicate_delivery_is_one_point(collector: Collector, mosquitto: services.Service,
                                         influx: object) -> None:
    msg = make_result(42)
    pub = Publisher(mosquitto.port)
    for _ in range(3):
        pub.results([msg])
    pub.results([make_result(43)])
    pub.close()
    assert collector.flush(30)
    assert wait_count(influx, DB, 2) == 2
    time.sleep(0.5)
    assert count(influx, DB) == 2
    assert collector.stats.received == 4


HOSTILE = Site("thach-ha-09", 'Trường "Tiểu học" Thạch Hà, số 1 = A\\B \\',
               'Thạch Hà, "Xã" a=b c\\d', "Thạch  Hà=Thành phố, \"cũ\"", 18.3, 105.9,
               "school", commune_code="99901", legacy_commune_code="99801")


def hostile_units(path: Path) -> Path:
    """The packaged reference map plus one unit whose name and old district are HOSTILE's
    (unit names are no longer typed in the registry: they come from this file)."""
    with open(DEFAULT_FILE, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    rows.append([HOSTILE.commune_code, HOSTILE.commune, HOSTILE.legacy_commune_code,
                 'Xã "cũ", a=b', "999", HOSTILE.district, "full"])
    with open(path, "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def test_hostile_tag_values_round_trip(tmp_path: Path, mosquitto: services.Service,
                                       influxd: services.Service, influx: object) -> None:
    units = hostile_units(tmp_path / "units.csv")
    cfg = config(tmp_path / "c", mosquitto.port, influxd.port, sites=[*SITES, HOSTILE],
                 units_file=units)
    # The most hostile values the limits allow (docs/protocol.md, "Limits"): spaces in an
    # ISP; commas, '=' and '&' in a target. Quotes, backslashes and a space in a target
    # are refused before they reach line protocol (tests/collector/test_integrity.py).
    isp = "Viettel (FTTH) gói 200M Hà Tĩnh"
    target = "http://speed.vn/?a=1&b=2,x=y"
    msg = make_result(1, probe_id=HOSTILE.probe_id, isp=isp, target=target,
                      error={"code": "timeout", "message": 'nói "không"\\\nline 2 \\'})
    with Collector(cfg) as c:
        pub = Publisher(mosquitto.port)
        pub.results([msg])
        pub.close()
        assert wait_count(influx, DB, 1, q="SELECT count(duration_s) FROM results") == 1
        assert c.stats.dead_lettered == 0
    res = influx.query("SELECT duration_s, site_name, error_message FROM results "
                       "GROUP BY commune, commune_code, district, isp, target", db=DB)
    [series] = res["results"][0]["series"]
    assert series["tags"] == {"commune": HOSTILE.commune, "commune_code": "99901",
                              "district": HOSTILE.district, "isp": isp, "target": target}
    _, _, site_name, error_message = series["values"][0]
    assert site_name == HOSTILE.name
    assert error_message == msg.error.message
    # and InfluxQL can select by the exact hostile value
    lit = "'" + HOSTILE.commune.replace("\\", "\\\\").replace("'", "\\'") + "'"
    out = influx.query(f"SELECT count(duration_s) FROM results WHERE commune = {lit}", db=DB)
    assert out["results"][0]["series"][0]["values"][0][1] == 1


def test_influxd_outage_loses_nothing(tmp_path: Path, mosquitto: services.Service,
                                      influxd: services.Service, influx: object) -> None:
    cfg = config(tmp_path / "c", mosquitto.port, influxd.port)
    cfg.mqtt.receive_maximum = 300  # small so back-pressure really engages
    n = 2000
    with Collector(cfg) as c:
        pub = Publisher(mosquitto.port)
        pub.results(make_result(i) for i in range(n // 4))
        pub.wait()
        assert wait_count(influx, DB, n // 4) == n // 4
        influxd.stop()
        pub.results(make_result(i) for i in range(n // 4, n))
        pub.wait()
        time.sleep(2.0)
        # back-pressure: the broker holds the rest; we hold at most receive_maximum
        # (twice that for a moment if the connection dropped and messages were redelivered)
        assert c.stats.received < n
        assert c.writer.pending() <= 2 * 300 + 5
        assert c.stats.retries > 0 and c.fatal is None
        restarted = services.start_influxd(influxd.workdir, port=influxd.port)
        try:
            assert wait_count(influx, DB, n, timeout=90) == n
            assert c.flush(30)
            assert c.fatal is None
        finally:
            c.stop()
            restarted.stop()
        pub.close()


def test_status_liveness_and_self_metrics(collector: Collector, mosquitto: services.Service,
                                          influx: object) -> None:
    at = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    status = StatusMessage(probe_id="huong-khe-01", state="online", agent_version="0.1.0",
                           at=at, spool_depth=7, clock_synced=True,
                           links=[{"name": "lte", "access": "mobile", "isp": "Viettel",
                                   "data_used_bytes": 123, "data_budget_bytes": 1000}])
    pub = Publisher(mosquitto.port)
    pub.publish(T.status("huong-khe-01"), status.to_json(), retain=True)
    pub.close()
    q = "SELECT last(online), spool_depth FROM probe_status GROUP BY probe, commune"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        series = influx.query(q, db=DB)["results"][0].get("series")
        if series:
            break
        time.sleep(0.2)
    assert series and series[0]["tags"] == {"probe": "huong-khe-01",
                                            "commune": "Xã Hương Khê"}
    assert series[0]["values"][0][1:] == [1, 7]
    use = influx.query("SELECT used_bytes, used_pct FROM link_usage", db=DB)
    assert use["results"][0]["series"][0]["values"][0][1:] == [123, 12.3]
    # self-metrics every stats_interval_s (1 s in the test config)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        s = influx.query("SELECT last(received) FROM collector_stats WHERE reason = ''",
                         db=DB)["results"][0].get("series")
        if s and s[0]["values"][0][1] >= 1:
            break
        time.sleep(0.3)
    else:
        raise AssertionError("no collector_stats")


def test_in_process_ingest_entry_point(influxd: services.Service, influx: object) -> None:
    msgs = [make_result(i, probe_id=SITES[i % 4].probe_id) for i in range(300)]
    raw = [(T.results("ky-anh-01"), b"junk")]
    report = ingest([*msgs, *raw], SITES, f"http://127.0.0.1:{influxd.port}", database="x")
    assert report.accepted == 300 and report.points == 300
    assert [d.reason for d in report.dead] == ["not_json"]
    assert count(influx, "x") == 300


# --------------------------------------------------------------------------- fuzz

_base = json.loads(make_result(1).to_json())
_text = st.text(alphabet=st.sampled_from(list("aăbđ ,=\"\\\n\tẩỳ0-:.Z'{}")), max_size=16)


@st.composite
def _mangled(draw: st.DrawFn) -> bytes:
    obj = dict(_base)
    obj["started_at"] = f"2026-03-02T00:00:{draw(st.integers(0, 59)):02d}." \
                        f"{draw(st.integers(0, 999)):03d}Z"
    key = draw(st.sampled_from(["isp", "target", "agent_version", "link", "method", "flags",
                                "metrics", "error", "duration_s", "id"]))
    if key == "metrics":
        obj[key] = draw(st.dictionaries(st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True),
                                        st.floats(allow_nan=False) | st.booleans(),
                                        max_size=3))
    elif key == "error":
        obj[key] = {"code": draw(st.sampled_from(["timeout", "bogus"])), "message": draw(_text)}
    else:
        obj[key] = draw(_text | st.integers() | st.none())
    return json.dumps(obj).encode()


def test_fuzz_through_broker_into_influxdb(collector: Collector, mosquitto: services.Service,
                                           influx: object, tmp_path: Path) -> None:
    payloads: list[bytes] = []

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_mangled())
    def gather(p: bytes) -> None:
        payloads.append(p)

    gather()
    reg = Registry.from_sites(SITES)
    topic = T.results("ky-anh-01")
    # the oracle: distinct (series, time) among valid ones; equal ones overwrite each other.
    # The collector's result index decides in arrival order (one publisher: publish order)
    # on conflicts and the daily isp/target limits; a fresh index with its settings too.
    integ = collector.cfg.integrity
    oracle = ResultIndex(tmp_path / "oracle.sqlite", integ.index_max_age_days,
                         integ.max_isps_per_day, integ.max_targets_per_day)
    expected_valid = set()
    n_invalid = 0
    for p in payloads:
        item = validate(topic, p, T, reg)
        if item.dead is not None or oracle.admit([(item.result, item.digest)]) != [None]:
            n_invalid += 1
            continue
        m = item.result
        assert m is not None
        expected_valid.add((m.link, m.access, m.isp, m.method, m.target,
                            m.error.code if m.error else "", to_ms(m.started_at)))
    pub = Publisher(mosquitto.port)
    for p in payloads:
        pub.publish(topic, p)
    pub.close()
    deadline = time.monotonic() + 60
    while collector.stats.acked < len(payloads) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert collector.stats.acked == len(payloads)
    assert collector.fatal is None
    assert collector.stats.dead_lettered == n_invalid
    assert collector.stats.dead_reasons["influx_rejected"] == 0  # every accepted point fits
    got = count(influx, DB, "SELECT count(duration_s) FROM results")
    assert got == len(expected_valid)


def test_point_influxdb_refuses_is_dead_lettered_alone(
        collector: Collector, mosquitto: services.Service, influx: object) -> None:
    # Someone else wrote "weird_mbps" as a string in this shard: InfluxDB answers 400
    # (field type conflict) for our float. Only that message may suffer.
    ts = to_ms(make_result(0).started_at)
    influx.write(DB, f'results,probe=other weird_mbps="text" {ts}')
    pub = Publisher(mosquitto.port)
    msgs = [make_result(i) for i in range(1, 41)]
    poison = make_result(999, metrics={"download_mbps": 1.0, "weird_mbps": 5.0})
    pub.results([*msgs[:20], poison, *msgs[20:]])
    pub.close()
    assert wait_count(influx, DB, 40) == 40
    assert collector.flush(30)
    [rec] = DeadLetterStore(collector.cfg.dead_letters.path).read()
    assert rec.reason == "influx_rejected" and "conflict" in rec.detail
    assert rec.probe_id == "ky-anh-01"
    assert rec.raw() == poison.to_json()
    assert collector.fatal is None and collector.stats.acked == 41


def test_broker_restart_mid_stream_loses_nothing(tmp_path: Path, mosquitto: services.Service,
                                                 influxd: services.Service,
                                                 influx: object) -> None:
    cfg = config(tmp_path / "c", mosquitto.port, influxd.port)
    n = 3000
    with Collector(cfg) as c:
        pub = Publisher(mosquitto.port)
        pub.results(make_result(i) for i in range(n // 2))
        pub.wait()
        pub.close()
        assert wait_count(influx, DB, 1) >= 1
        mosquitto.stop()  # persistence: our session and its queue are saved
        broker = services.start_mosquitto(mosquitto.workdir, port=mosquitto.port)
        try:
            pub = Publisher(broker.port)
            pub.results(make_result(i) for i in range(n // 2, n))
            pub.close()
            assert wait_count(influx, DB, n, timeout=90) == n
            assert c.ingest.subscribed.is_set() and c.fatal is None
        finally:
            c.stop()
            broker.stop()
    assert count(influx, DB) == n


def test_without_rollups_the_dashboards_switch_reads_raw_for_every_range(
        tmp_path: Path, mosquitto: services.Service, influxd: services.Service,
        influx: object) -> None:
    """`[rollups] enabled = false`: nobody writes rollups, so the dashboards' resolution
    variable must say "raw" for a month too, also over switch points an earlier collector
    with rollups wrote. Resolved as Grafana would (named stand-in, on the real influxd)."""
    from collector.config import InfluxSettings
    from collector.core.influx import InfluxClient
    from collector.core.rollups import write_switch
    from collector.dashboards.queries import resolution_query
    from tests.helpers.dashboards import fake_grafana_resolution

    client = InfluxClient(InfluxSettings(url=f"http://127.0.0.1:{influxd.port}", database=DB))
    try:
        client.ensure_database()
        write_switch(client)  # a collector with rollups ran before
        now = int(time.time() * 1000)
        month = (now - 30 * 86_400_000, now)
        assert fake_grafana_resolution(client, resolution_query(), *month) == "1d"
        cfg = config(tmp_path / "c", mosquitto.port, influxd.port,
                     extra="[rollups]\nenabled = false\n")
        with Collector(cfg) as c:
            assert c.rollups is None
            pub = Publisher(mosquitto.port)
            pub.results([make_result(0, probe_id=SITES[0].probe_id)])
            pub.close()
            deadline = time.monotonic() + 60
            while fake_grafana_resolution(client, resolution_query(), *month) != "raw":
                assert time.monotonic() < deadline, "the switch still says rollups"
                time.sleep(0.2)
        for days in (1, 3, 365):
            span = (now - days * 86_400_000, now)
            assert fake_grafana_resolution(client, resolution_query(), *span) == "raw"
    finally:
        client.close()


def test_writer_flush_waits_for_what_was_submitted_before_it(
        influxd: services.Service, influx: object) -> None:
    # A flush is a marker in the writer's queue: it returns once every item submitted
    # before it is written and handed to on_done, even while the batch would otherwise
    # still wait for more input (long linger and flush interval).
    done: list[Item] = []
    settings = InfluxSettings(url=f"http://127.0.0.1:{influxd.port}", database=DB)
    with InfluxClient(settings) as client:
        client.ensure_database()
        writer = Writer(client, WriterSettings(batch_size=100_000, linger_s=5.0,
                                               flush_interval_s=60.0), Stats(),
                        on_done=done.extend).start()
        registry, topics = Registry.from_sites(SITES), Topics()
        try:
            for rounds in range(3):
                items = [validate(T.results("ky-anh-01"), make_result(rounds * 50 + i).to_json(),
                                  topics, registry) for i in range(50)]
                for it in items:
                    writer.submit(it)
                assert writer.flush(60)
                assert done[-50:] == items and len(done) == 50 * (rounds + 1)
                assert writer.pending() == 0
                assert count(influx, DB) == 50 * (rounds + 1)
            assert writer.flush(60)  # nothing queued: returns at once, nothing written
            assert len(done) == 150
        finally:
            assert writer.stop(30)
    assert writer.flush(1) and writer.pending() == 0  # stopped, nothing left
