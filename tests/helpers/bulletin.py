"""A known data set for the bulletin tests, and how to publish it into a real influxd.

The data set is built from contract messages (``ResultMessage``) and published through the
collector's in-process entry point (``collector.service.ingest``: the collector's validation,
site-registry enrichment, schema and writer, minus MQTT), so the bulletin reads exactly what
the collector stores. Each test keeps the raw values it published, to recompute every figure
independently with :mod:`statistics`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from collector.core.registry import table_from_rows
from collector.core.schema import Site
from collector.core.service import ingest
from netmon.contract import ErrorInfo, Metrics, ResultMessage

TZ_OFFSET = timedelta(hours=7)  # Asia/Ho_Chi_Minh, no DST since 1975

#: The data set's sites on the current map: (probe, site name, unit code, old unit code,
#: lat, lon, site type). Names and old districts come from the reference data.
SITE_ROWS = [
    ("kyhoa-ubnd", "UBND xã Kỳ Hoa", "18814", "18829", 18.07, 106.3, "ubnd"),
    ("kyhoa-thcs", "Trường THCS Kỳ Hoa", "18814", "18829", 18.08, 106.31, "school"),
    ("kythu-ubnd", "UBND xã Kỳ Thư cũ", "18790", "18805", 18.1, 106.2, "ubnd"),
    ("huongtrach-ubnd", "UBND xã Hương Trạch cũ", "18547", "18553", 18.2, 105.7, "ubnd"),
    ("phucdong-tyt", "Trạm y tế Phúc Đồng", "18523", "18514", 18.25, 105.75, "health"),
    ("camnhuong-ubnd", "UBND xã Cẩm Nhượng cũ", "18676", "18709", 18.25, 106.1, "ubnd"),
]


def registry_rows(rows: list[tuple[str, str, str, str, float, float, str]] | None = None
                  ) -> list[tuple[str, dict[str, object]]]:
    """Registry rows (``table_from_rows`` input) for ``SITE_ROWS``."""
    return [(f"site[{i}]", {"probe_id": p, "name": n, "commune_code": c,
                            "legacy_commune_code": lc, "latitude": la, "longitude": lo,
                            "site_type": st})
            for i, (p, n, c, lc, la, lo, st) in enumerate(rows or SITE_ROWS)]


def registry_toml(rows: list[tuple[str, str, str, str, float, float, str]] | None = None
                  ) -> str:
    """The same rows as a registry file."""
    out = []
    for p, n, c, lc, la, lo, st in rows or SITE_ROWS:
        out.append(f'[[site]]\nprobe_id = "{p}"\nname = "{n}"\ncommune_code = "{c}"\n'
                   f'legacy_commune_code = "{lc}"\nlatitude = {la}\nlongitude = {lo}\n'
                   f'site_type = "{st}"\n')
    return "\n".join(out)


SITES: list[Site] = sorted(table_from_rows(registry_rows()).current().values(),
                           key=lambda s: [r[0] for r in SITE_ROWS].index(s.probe_id))
#: (probe, link) -> (access, isp)
LINKS = {"fibre": ("fixed", "VNPT"), "lte": ("mobile", "Viettel")}
ISP_OVERRIDE = {("phucdong-tyt", "fibre"): "Viettel", ("camnhuong-ubnd", "lte"): "MobiFone"}


@dataclass
class DataSet:
    """Messages to publish, plus the raw facts the test recomputes from."""

    messages: list[ResultMessage] = field(default_factory=list)
    sites: list[Site] = field(default_factory=lambda: list(SITES))


def local(y: int, mo: int, d: int, h: int, mi: int = 0, s: int = 0) -> datetime:
    """A local (UTC+7) wall time as an aware UTC datetime."""
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC) - TZ_OFFSET


def _msg(site: Site, link: str, method: str, at: datetime, *, metrics: dict[str, float] | None,
         error: str | None = None, cross: bool = False,
         limited: bool = False) -> ResultMessage:
    access, isp = LINKS[link]
    isp = ISP_OVERRIDE.get((site.probe_id, link), isp)
    return ResultMessage(
        probe_id=site.probe_id, link=link, access=access, isp=isp, method=method,
        target="speed.hatinh.example" if method != "reachability" else "tslcd-dc",
        started_at=at, duration_s=10.0, metrics=Metrics(**(metrics or {})),
        error=ErrorInfo(code=error, message=f"{error}: tool said so") if error else None,
        flags=(("cross_traffic",) if cross else ()) +
              (("at_device_ceiling", "device_limited") if limited else ()),
        agent_version="1.0.0")


#: Valid fixed-line download tests per commune in the month; the bulletin's min_tests is 6.
MIN_TESTS = 6
VALID_COUNTS = {"kyhoa-ubnd": 9, "kyhoa-thcs": 5, "kythu-ubnd": MIN_TESTS,
                "huongtrach-ubnd": MIN_TESTS - 1, "phucdong-tyt": 14, "camnhuong-ubnd": 8}
#: Median speed around which each probe's fixed-line tests scatter (Mb/s).
FIXED_LEVEL = {"kyhoa-ubnd": 180.0, "kyhoa-thcs": 120.0, "kythu-ubnd": 95.0,
               "huongtrach-ubnd": 160.0, "phucdong-tyt": 210.0, "camnhuong-ubnd": 140.0}
MOBILE_LEVEL = {"kyhoa-ubnd": 60.0, "kyhoa-thcs": 85.0, "kythu-ubnd": 40.0,
                "huongtrach-ubnd": 75.0, "phucdong-tyt": 90.0, "camnhuong-ubnd": 72.0}


def october_data_set(seed: int = 568) -> DataSet:
    """October 2026 (plus September for the month-on-month change) with known quirks:

    - per-commune valid test counts around ``MIN_TESTS`` (Kỳ Thư exactly at it, Hương
      Trạch one below; Kỳ Hoa's two probes add up);
    - failed tests and cross-traffic-flagged tests with absurd speeds (must not count);
    - tests just inside and just outside the local month boundaries;
    - peak (19-23 local) and off-peak tests; latency, IPv6 and reachability results.
    """
    rnd = random.Random(seed)
    ds = DataSet()
    sites = {s.probe_id: s for s in SITES}
    for pid, n_valid in VALID_COUNTS.items():
        site = sites[pid]
        for link, level_map, n in (("fibre", FIXED_LEVEL, n_valid),
                                   ("lte", MOBILE_LEVEL, n_valid + 3)):
            level = level_map[pid]
            for i in range(n):
                # Days 1..28, hours spread over the day including the peak 19-22.
                at = local(2026, 10, 1 + (i * 3) % 28, (i * 5 + 2) % 24, rnd.randrange(60))
                dl = round(max(1.0, rnd.gauss(level, level * 0.25)), 3)
                ul = round(dl * rnd.uniform(0.3, 0.9), 3)
                ds.messages.append(_msg(site, link, "iperf3" if i % 2 else "http", at, metrics={
                    "download_mbps": dl, "upload_mbps": ul, "idle_rtt_ms": 8 + i % 5,
                    "loaded_rtt_ms": 40.0 + 7 * (i % 9)},
                    limited=link == "fibre" and i % 4 == 1))  # at the Pi's ceiling
            # Two failed tests and one cross-traffic-flagged (very slow) test per line.
            ds.messages.append(_msg(site, link, "iperf3", local(2026, 10, 5, 20), metrics=None,
                                    error="server_busy"))
            ds.messages.append(_msg(site, link, "speedtest", local(2026, 10, 6, 9),
                                    metrics=None, error="timeout"))
            ds.messages.append(_msg(site, link, "iperf3", local(2026, 10, 7, 21, 30),
                                    metrics={"download_mbps": 0.5, "upload_mbps": 0.2,
                                             "cross_traffic_mbps": 80.0}, cross=True))
            # September, for the change from the previous month (a bit slower).
            for i in range(MIN_TESTS + 2):
                dl = round(max(1.0, rnd.gauss(level * 0.9, level * 0.2)), 3)
                ds.messages.append(_msg(site, link, "iperf3", local(2026, 9, 2 + i, 10),
                                        metrics={"download_mbps": dl, "upload_mbps": dl / 3}))
        # Latency, IPv6 readiness and TSLCD reachability on the fibre line.
        for i in range(10):
            ds.messages.append(_msg(site, "fibre", "icmp", local(2026, 10, 2 + i, 8), metrics={
                "rtt_ms": 10.0 + i, "jitter_ms": 1.0 + i / 10, "loss_pct": 0.0 if i else 10.0}))
        ds.messages.append(_msg(site, "fibre", "ipv6", local(2026, 10, 3, 3),
                                metrics={"rtt_ms": 20.0},
                                error=None if pid != "kythu-ubnd" else "unreachable"))
        for i in range(4):
            ds.messages.append(_msg(site, "fibre", "reachability", local(2026, 10, 4 + i, 4),
                                    metrics={"rtt_ms": 15.0 + i} if i or pid != "kythu-ubnd"
                                    else None,
                                    error="timeout" if (i == 0 and pid == "kythu-ubnd")
                                    else None))
    # Month boundaries in local time: 00:00:00 on 1 Oct is in, 23:59:59 on 30 Sep and
    # 00:00:00 on 1 Nov are not (in UTC those are 17:00 the evening before).
    edge = sites["phucdong-tyt"]
    ds.messages.append(_msg(edge, "fibre", "iperf3", local(2026, 10, 1, 0, 0, 0),
                            metrics={"download_mbps": 333.0, "upload_mbps": 100.0}))
    ds.messages.append(_msg(edge, "fibre", "iperf3", local(2026, 9, 30, 23, 59, 59),
                            metrics={"download_mbps": 1.0, "upload_mbps": 1.0}))
    ds.messages.append(_msg(edge, "fibre", "iperf3", local(2026, 11, 1, 0, 0, 0),
                            metrics={"download_mbps": 2.0, "upload_mbps": 2.0}))
    return ds


def publish(ds: DataSet, url: str, database: str = "netmon") -> int:
    """Publish the data set through the collector (validation, registry enrichment, schema,
    writer; no broker) into InfluxDB; returns the points written."""
    report = ingest(ds.messages, ds.sites, url, database=database)
    assert not report.dead, f"dead letters: {report.dead[:3]}"
    assert report.accepted == len(ds.messages)
    return report.accepted


def write_config(path: Path, url: str, database: str = "netmon", min_tests: int = MIN_TESTS,
                 language: str = "vi", min_probe_days: int = MIN_TESTS,
                 registry: str | None = None, reference: str | None = None,
                 expected_tests_per_day: float = 1.0) -> Path:
    """A collector config pointing at the test influxd, with a site registry next to it
    (``registry``: its TOML text, default the data set's sites) and, when given, an
    i-Speed reference file (``reference``: its TOML text)."""
    sites = path.with_name(path.stem + "-sites.toml")
    sites.write_text(registry if registry is not None else registry_toml(), encoding="utf-8")
    ref = ""
    if reference is not None:
        rf = path.with_name(path.stem + "-ispeed.toml")
        rf.write_text(reference, encoding="utf-8")
        ref = f'reference_file = "{rf.name}"\n'
    path.write_text(
        f'[influxdb]\nurl = "{url}"\ndatabase = "{database}"\n\n'
        f'[registry]\npath = "{sites.name}"\n\n'
        f'[bulletin]\nmin_tests = {min_tests}\nmin_probe_days = {min_probe_days}\n'
        f'language = "{language}"\n'
        f"expected_tests_per_day = {expected_tests_per_day}\n{ref}", encoding="utf-8")
    return path
