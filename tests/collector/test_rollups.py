"""Rollups on a real influxd: every hourly and daily point equals what the raw results
give (computed here from the messages), and a result arriving two days late makes its
hour and day be recomputed."""

from __future__ import annotations

import json
import math
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector import cli
from collector.config import InfluxSettings, Targets
from collector.core.influx import InfluxClient
from collector.core.rollups import (
    DAY_MS,
    HOUR_MS,
    QUAL_ACCESS_1D,
    QUAL_ACCESS_1H,
    QUAL_COMMUNE_1D,
    QUAL_COMMUNE_1H,
    STATUS_1D,
    STATUS_1H,
    TPUT_1D,
    TPUT_1H,
    Rollups,
    bucket_runs,
    day_start,
    hour_start,
)
from collector.core.schema import to_ms
from collector.core.service import ingest
from devstack import services
from netmon.contract import Metrics, ResultMessage
from tests.helpers import dashboards as H

TARGETS = Targets()


def _expected(results: list[ResultMessage], bucket: str) -> dict[tuple[str, str, int],
                                                                    list[float]]:
    """(probe, link, bucket start ms) -> downloads of the clean successful throughput tests."""
    out: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for r in results:
        if (r.method in H.THROUGHPUT and r.ok and "cross_traffic" not in r.flags
                and r.metrics.download_mbps is not None):
            ms = to_ms(r.started_at)
            start = hour_start(ms) if bucket == "1h" else day_start(ms)
            out[(r.probe_id, r.link, start)].append(r.metrics.download_mbps)
    return out


def _rollup(client: InfluxClient, measurement: str) -> dict[tuple[str, str, int],
                                                            dict[str, float]]:
    series = client.query(f'SELECT * FROM "{measurement}" GROUP BY "probe", "link"')[0]
    return {(s.tags["probe"], s.tags["link"], int(row["time"])): row
            for s in series for row in s.rows()}


def _check(client: InfluxClient, results: list[ResultMessage], accesses: dict[str, str]) -> int:
    checked = 0
    for measurement, bucket in ((TPUT_1H, "1h"), (TPUT_1D, "1d")):
        got = _rollup(client, measurement)
        expected = _expected(results, bucket)
        assert got.keys() == expected.keys(), measurement
        for key, values in expected.items():
            row = got[key]
            target = TARGETS.for_access(accesses[key[1]])  # type: ignore[arg-type]
            assert row["tests"] == len(values), (measurement, key)
            assert row["median_mbps"] == pytest.approx(H.median(values), rel=1e-12)
            for pct in (10, 90):
                got_p = row.get(f"p{pct}_mbps")
                if math.floor(len(values) * pct / 100 + 0.5) < 1:
                    assert got_p is None  # InfluxDB's percentile() has no value there either
                else:
                    assert got_p == pytest.approx(H.influx_percentile(values, pct))
            assert row["met"] == sum(v >= target for v in values), (measurement, key)
            assert row["met_2030"] == sum(v >= TARGETS.fixed_2030_mbps for v in values)
            checked += 1
    return checked


def _check_access(client: InfluxClient, results: list[ResultMessage]) -> int:
    """Every ``qual_access_*`` point against the messages: per access type and bucket, the
    median of the lines' RTT / loaded RTT medians and the summed latency and loss counts."""
    checked = 0
    for measurement, bucket in ((QUAL_ACCESS_1H, "1h"), (QUAL_ACCESS_1D, "1d")):
        lines: dict[tuple[str, int], dict[tuple[str, str], dict[str, list[float]]]] = {}
        for r in results:
            if not r.ok:
                continue
            ms = to_ms(r.started_at)
            start = hour_start(ms) if bucket == "1h" else day_start(ms)
            values = lines.setdefault((r.access, start), {}).setdefault(
                (r.probe_id, r.link), defaultdict(list))
            m = r.metrics
            if r.method in H.LATENCY and m.rtt_ms is not None:
                values["rtt"].append(m.rtt_ms)
                if m.loss_pct is not None:
                    values["loss"].append(m.loss_pct)
            if m.loaded_rtt_ms is not None:
                values["loaded"].append(m.loaded_rtt_ms)
        expected = {}
        for key, per_line in lines.items():
            rtt = [H.median(v["rtt"]) for v in per_line.values() if v["rtt"]]
            loaded = [H.median(v["loaded"]) for v in per_line.values() if v["loaded"]]
            if rtt or loaded:
                expected[key] = (H.median(rtt) if rtt else None,
                                 H.median(loaded) if loaded else None,
                                 sum(len(v["rtt"]) for v in per_line.values()),
                                 sum(sum(v["loss"]) for v in per_line.values()))
        got = {(s.tags["access"], int(row["time"])): (
            row.get("rtt_median_ms"), row.get("loaded_rtt_median_ms"),
            row.get("latency_tests") or 0, row.get("loss_sum") or 0.0)
            for s in client.query(f'SELECT * FROM "{measurement}" GROUP BY "access"')[0]
            for row in s.rows()}
        assert got.keys() == expected.keys(), measurement
        for key, want in expected.items():
            assert got[key] == pytest.approx(want, rel=1e-12), (measurement, key)
            checked += 1
    # per unit and access type: the IPv6 and TSLCD counts
    codes = {site.probe_id: site.commune_code for site in H.SITES}
    for measurement, bucket in ((QUAL_COMMUNE_1H, "1h"), (QUAL_COMMUNE_1D, "1d")):
        counts: dict[tuple[str, str, int], list[int]] = {}
        for r in results:
            metrics = r.metrics.values()
            ms = to_ms(r.started_at)
            start = hour_start(ms) if bucket == "1h" else day_start(ms)
            for i, metric in ((0, "ipv6_reachable"), (2, "reachable")):
                if metric in metrics and r.method in ("ipv6", "reachability"):
                    c = counts.setdefault((codes[r.probe_id], r.access, start), [0, 0, 0, 0])
                    c[i] += int(metrics[metric])
                    c[i + 1] += 1
        rows = {(s.tags["commune_code"], s.tags["access"], int(row["time"])):
                [row.get(f) or 0 for f in ("ipv6_ready", "ipv6_tests", "tslcd_reachable",
                                           "tslcd_tests")]
                for s in client.query(f'SELECT * FROM "{measurement}" GROUP BY '
                                      '"commune_code", "access"')[0] for row in s.rows()}
        assert rows == counts, measurement
        checked += len(rows)
    return checked


def test_spans_of_consecutive_buckets() -> None:
    """The per-access recompute reads runs of consecutive buckets, none longer than asked."""
    hours = [5 * HOUR_MS, 6 * HOUR_MS, 7 * HOUR_MS, 9 * HOUR_MS]
    h = HOUR_MS
    assert bucket_runs(hours, h, 800) == [(5 * h, 8 * h), (9 * h, 10 * h)]
    assert bucket_runs(hours, h, 2) == [(5 * h, 7 * h), (7 * h, 8 * h), (9 * h, 10 * h)]
    assert bucket_runs([DAY_MS, 0, DAY_MS], DAY_MS, 800) == [(0, 2 * DAY_MS)]


def test_rollups_exact_and_recomputed_after_a_late_result(influxd: services.Service) -> None:
    url = f"http://{influxd.host}:{influxd.port}"
    now = datetime.now(UTC).replace(microsecond=0)
    ds = H.make_dataset(now)
    report = ingest([*ds.results, *ds.statuses], H.SITES, url, database="netmon")
    assert not report.dead
    accesses = {link: access for links in H.LINKS.values() for link, access, _i, _b in links}
    client = InfluxClient(InfluxSettings(url=url, database="netmon"))
    try:
        assert _check(client, ds.results, accesses) > 100

        # A spool drains two days later: one fast test in an hour already rolled up.
        probe, (link, access, isp, _base) = "ka-ubnd-01", H.LINKS["ka-ubnd-01"][0]
        when = now - timedelta(hours=40, minutes=7)
        late = ResultMessage(id=uuid.uuid4(), method="iperf3", target="mlab-hn",
                             started_at=when, probe_id=probe, link=link, access=access,
                             isp=isp, agent_version="0.1.0", duration_s=10.0,
                             metrics=Metrics(download_mbps=1234.5, upload_mbps=400.0))
        key_h = (probe, link, hour_start(to_ms(when)))
        before = _rollup(client, TPUT_1H)[key_h]
        assert ingest([late], H.SITES, url, database="netmon").accepted == 1
        after = _rollup(client, TPUT_1H)[key_h]
        assert after["tests"] == before["tests"] + 1
        assert after["met_2030"] == before["met_2030"] + 1
        assert after["p90_mbps"] == 1234.5  # the fastest of the hour now
        _check(client, [*ds.results, late], accesses)
        # ...and a latency test of that closed day: its access type's hour and day.
        assert _check_access(client, [*ds.results, late]) > 50
        late_rtt = ResultMessage(id=uuid.uuid4(), method="icmp", target="8.8.8.8",
                                 started_at=when - timedelta(hours=2), probe_id=probe,
                                 link=link, access=access, isp=isp, agent_version="0.1.0",
                                 duration_s=5.0,
                                 metrics=Metrics(rtt_ms=900.0, jitter_ms=1.0, loss_pct=80.0))
        day = (access, day_start(to_ms(late_rtt.started_at)))
        [series] = client.query(f'SELECT "loss_sum" FROM "{QUAL_ACCESS_1D}" WHERE '
                                f'"access" = \'{access}\' AND time = {day[1]}ms')[0]
        before_loss = series.values[0][1]
        assert ingest([late_rtt], H.SITES, url, database="netmon").accepted == 1
        [series] = client.query(f'SELECT "loss_sum" FROM "{QUAL_ACCESS_1D}" WHERE '
                                f'"access" = \'{access}\' AND time = {day[1]}ms')[0]
        assert series.values[0][1] == pytest.approx(before_loss + 80.0)
        late_tslcd = ResultMessage(id=uuid.uuid4(), method="reachability", target="tslcd",
                                   started_at=when - timedelta(hours=1), probe_id=probe,
                                   link=link, access=access, isp=isp, agent_version="0.1.0",
                                   duration_s=1.0, metrics=Metrics(reachable=1.0))
        assert ingest([late_tslcd], H.SITES, url, database="netmon").accepted == 1
        _check_access(client, [*ds.results, late, late_rtt, late_tslcd])
    finally:
        client.close()


def test_status_rollups_hold_the_last_status(influxd: services.Service) -> None:
    url = f"http://{influxd.host}:{influxd.port}"
    ds = H.make_dataset()
    assert not ingest(ds.statuses, H.SITES, url, database="netmon").dead
    client = InfluxClient(InfluxSettings(url=url, database="netmon"))
    try:
        for measurement, bucket in ((STATUS_1H, hour_start), (STATUS_1D, day_start)):
            last: dict[tuple[str, int], tuple[int, bool, bool, int]] = {}
            spool_max: dict[tuple[str, int], int] = defaultdict(int)
            for st in ds.statuses:
                assert st.at is not None
                ms = to_ms(st.at)
                k = (st.probe_id, bucket(ms))
                if k not in last or last[k][0] < ms:
                    last[k] = (ms, st.state == "online", st.clock_synced, st.spool_depth)
                spool_max[k] = max(spool_max[k], st.spool_depth)
            series = client.query(f'SELECT * FROM "{measurement}" GROUP BY "probe"')[0]
            got = {(s.tags["probe"], int(r["time"])): r for s in series for r in s.rows()}
            assert got.keys() == last.keys(), measurement
            for k, (ms, online, synced, depth) in last.items():
                row = got[k]
                assert (row["last_at_ms"], row["online"], row["clock_synced"],
                        row["spool_depth"], row["spool_max"]) == (
                    ms, int(online), int(synced), depth, spool_max[k]), (measurement, k)
        # The offline probe's last status of the data set reads offline in today's rollup.
        today = day_start(to_ms(max(st.at for st in ds.statuses if st.at)))
        offline = [r for s in client.query(f'SELECT last("online") AS online FROM '
                                           f'"{STATUS_1D}" WHERE time >= {today}ms '
                                           f'GROUP BY "probe"')[0]
                   for r in s.rows() if s.tags["probe"] == H.OFFLINE_PROBE]
        assert offline and offline[0]["online"] == 0
    finally:
        client.close()


def test_rebuild_command_fills_rollups_for_data_written_without_them(
        influxd: services.Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Results stored before rollups existed: ``netmon-collector rollups rebuild`` makes
    the same rollups the collector would have written; bad arguments exit 2."""
    url = f"http://{influxd.host}:{influxd.port}"
    ds = H.make_dataset()
    assert not ingest(ds.results, H.SITES, url, database="netmon", rollups=False).dead
    client = InfluxClient(InfluxSettings(url=url, database="netmon"))
    try:
        assert client.query(f'SELECT count("tests") FROM "{TPUT_1H}"')[0] == []
        cfg = tmp_path / "collector.toml"
        cfg.write_text(f'[influxdb]\nurl = "{url}"\ndatabase = "netmon"\n', encoding="utf-8")
        since = (ds.start - timedelta(days=1)).date().isoformat()
        assert cli.main(["rollups", "rebuild", "--config", str(cfg), "--since", since,
                         "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["probes"] == len(H.ACTIVE) and out["points"] > 0
        accesses = {link: access for links in H.LINKS.values()
                    for link, access, _i, _b in links}
        assert _check(client, ds.results, accesses) > 100
        assert _check_access(client, ds.results) > 50  # the per-access quality points
    finally:
        client.close()
    assert cli.main(["rollups", "rebuild", "--config", str(cfg), "--since", "2026-05-02",
                     "--until", "2026-05-01"]) == 2
    assert "--until" in capsys.readouterr().err
    assert cli.main(["rollups", "rebuild", "--config", str(tmp_path / "missing.toml"),
                     "--since", "2026-05-01"]) == 2


def test_each_bucket_is_read_a_second_time_one_round_later(influxd: services.Service) -> None:
    """A point that landed after a round read its hour (another collector worker's write,
    or one a server made readable late) is in the rollup after the next round; then the
    bucket is left alone until touched again."""
    url = f"http://{influxd.host}:{influxd.port}"
    ds = H.make_dataset()
    first = [r for r in ds.results if r.method in H.THROUGHPUT and r.ok
             and "cross_traffic" not in r.flags][:1]
    assert ingest(first, H.SITES, url, database="netmon", rollups=False).accepted == 1
    r0 = first[0]
    rollups = Rollups(InfluxSettings(url=url, database="netmon"))
    rollups.touch_times([(r0.probe_id, to_ms(r0.started_at))])
    rollups.run_round()
    client = InfluxClient(InfluxSettings(url=url, database="netmon"))
    try:
        def tests() -> int:
            rows = client.query(f'SELECT "tests" FROM "{TPUT_1H}"')[0]
            return int(rows[0].values[0][1])

        assert tests() == 1
        # Written without telling these rollups (as another worker would have).
        other = r0.model_copy(update={"id": uuid.uuid4(),
                                      "started_at": r0.started_at + timedelta(seconds=1)})
        assert ingest([other], H.SITES, url, database="netmon", rollups=False).accepted == 1
        assert hour_start(to_ms(other.started_at)) == hour_start(to_ms(r0.started_at))
        rollups.run_round()
        assert tests() == 2
        assert rollups.dirty() == 0
        rollups.run_round()  # nothing new: no third reading, nothing left to do
        assert rollups.dirty() == 0 and rollups._again == ({}, {})
    finally:
        client.close()
