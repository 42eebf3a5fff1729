"""Issue 14, the collector side: receipts, conflicts, bounded text, daily cardinality
limits, bounded and crash-safe dead letters - against real mosquitto and influxd."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import unicodedata
import uuid
from datetime import timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from collector.core.deadletters import DeadLetter, DeadLetterStore
from collector.core.ingest import validate
from collector.core.integrity import ResultIndex
from collector.core.registry import Registry
from collector.core.service import Collector, ingest
from devstack import services
from netmon.contract import MAX_RECEIPT_IDS, Topics, parse_receipt
from tests.helpers.collector import BASE_TIME, SITES, Publisher, config, count, make_result

T = Topics()
DB = "netmon"
REPO = Path(__file__).resolve().parents[2]


def _url(svc: services.Service) -> str:
    return f"http://{svc.host}:{svc.port}"


def _values(influx: object, q: str) -> list[list[object]]:
    res = influx.query(q, db=DB)  # type: ignore[attr-defined]
    series = res["results"][0].get("series") or []
    return [v for s in series for v in s["values"]]


# --------------------------------------------------------------------------- conflicts


def test_conflict_is_dead_lettered_not_merged(tmp_path: Path, influxd: services.Service,
                                              influx: object) -> None:
    index_path = tmp_path / "state" / "index.sqlite"
    first = make_result(1)
    forged = make_result(1, metrics={"download_mbps": 999.0})  # same id, other content
    index = ResultIndex(index_path)
    r1 = ingest([first], SITES, _url(influxd), result_index=index)
    assert (r1.accepted, len(r1.dead)) == (1, 0)
    r2 = ingest([forged], SITES, _url(influxd), result_index=index)
    assert r2.accepted == 0
    assert [d.reason for d in r2.dead] == ["conflict"]
    assert str(first.id) in r2.dead[0].detail
    # the same bytes again are an idempotent redelivery: stored again, one point
    r3 = ingest([first, first], SITES, _url(influxd), result_index=index)
    assert (r3.accepted, len(r3.dead)) == (2, 0)
    # the same fields serialised otherwise were made by something else: a conflict
    reordered = json.dumps(dict(reversed(json.loads(first.to_json()).items()))).encode()
    r3b = ingest([(T.results(first.probe_id), reordered)], SITES, _url(influxd),
                 result_index=index)
    assert [d.reason for d in r3b.dead] == ["conflict"]
    index.close()
    # durable: a restarted collector still knows the id
    index = ResultIndex(index_path)
    r4 = ingest([forged], SITES, _url(influxd), result_index=index)
    assert [d.reason for d in r4.dead] == ["conflict"]
    # both in one batch: the first wins, the second is the conflict
    a, b = make_result(2), make_result(2, duration_s=11.0)
    r5 = ingest([a, b], SITES, _url(influxd), result_index=index)
    assert (r5.accepted, [d.reason for d in r5.dead]) == (1, ["conflict"])
    index.close()
    assert _values(influx, "SELECT download_mbps, result_id FROM results") == [
        [_ms(first), 101.0, str(first.id)], [_ms(a), 102.0, str(a.id)]]


def _ms(msg: object) -> int:
    from collector.core.schema import to_ms
    return to_ms(msg.started_at)  # type: ignore[attr-defined]


def test_index_prunes_by_age(tmp_path: Path) -> None:
    index = ResultIndex(tmp_path / "i.sqlite", max_age_days=400)
    old, new = make_result(1), make_result(2, started_at=BASE_TIME + timedelta(days=30))
    reg = Registry.from_sites(SITES)
    items = [validate(T.results(m.probe_id), m.to_json(), T, reg) for m in (old, new)]
    assert index.admit([(it.result, it.digest) for it in items  # type: ignore[misc]
                        ]) == [None, None]
    now_ms = _ms(old) + 400 * 86_400_000 + 1
    assert index.prune(now_ms) == 1
    assert len(index) == 1
    index.close()


# --------------------------------------------------------------------------- bounded text


def test_isp_and_target_are_normalised_and_bounded(tmp_path: Path, influxd: services.Service,
                                                   influx: object) -> None:
    decomposed = unicodedata.normalize("NFD", "Viễn thông Hà Tĩnh")
    ok = make_result(1, isp=f"  {decomposed} \t ", target=" iperf.hatinh.example:5201 ")
    bad = {
        "quote": make_result(2, isp='Viettel "FTTH"'),
        "backslash": make_result(3, isp="Viettel\\FTTH"),
        "isp too long": make_result(4, isp="V" * 65),
        "target space": make_result(5, target="http://speed.vn/a b"),
        "target too long": make_result(6, target="a" * 256),
        "only spaces": make_result(7, isp="   "),
    }
    longest = make_result(8, isp="V" * 64, target="t" * 255)
    report = ingest([ok, *bad.values(), longest], SITES, _url(influxd))
    assert report.accepted == 2
    assert [d.reason for d in report.dead] == ["invalid"] * len(bad)
    assert "isp" in report.dead[0].detail and "target" in report.dead[3].detail
    res = influx.query("SELECT count(duration_s) FROM results GROUP BY isp, target",  # type: ignore[attr-defined]
                       db=DB)
    tags = sorted((s["tags"]["isp"], s["tags"]["target"]) for s in res["results"][0]["series"])
    assert tags == sorted([("Viễn thông Hà Tĩnh", "iperf.hatinh.example:5201"),
                           ("V" * 64, "t" * 255)])
    assert all(unicodedata.is_normalized("NFC", isp) for isp, _ in tags)


def test_daily_cardinality_limits_per_probe(tmp_path: Path, influxd: services.Service,
                                            influx: object) -> None:
    path = tmp_path / "index.sqlite"
    index = ResultIndex(path, max_isps_per_day=3, max_targets_per_day=5)
    day1 = [make_result(i, isp=f"ISP{i}") for i in range(10)]           # 10 ISPs, one day
    again = [make_result(100, isp="ISP1")]                              # a known value
    day2 = [make_result(200 + i, isp=f"ISP{i + 5}",
                        started_at=BASE_TIME + timedelta(days=1, seconds=i)) for i in range(2)]
    targets = [make_result(300 + i, target=f"t{i}.example") for i in range(8)]
    other = [make_result(400 + i, probe_id="huong-khe-01", isp=f"ISP{i}") for i in range(3)]
    report = ingest([*day1, *again, *day2, *targets, *other], SITES, _url(influxd),
                    result_index=index)
    reasons = [(d.reason, json.loads(d.payload or "{}")["id"]) for d in report.dead]
    # day 1: ISP0-2 in, ISP3-9 out (7); "ISP1" again in; day 2 is a new day: both in.
    # targets on day 1 (isp VNPT would be the 4th ISP: all 8 out as isp cardinality).
    assert [r for r, _ in reasons] == ["cardinality"] * (7 + 8)
    assert {i for _, i in reasons} == {str(m.id) for m in day1[3:] + targets}
    assert report.accepted == 3 + 1 + 2 + 3
    index.close()
    # targets, with an ISP the probe already used that day; a restart keeps the counts
    index = ResultIndex(path, max_isps_per_day=3, max_targets_per_day=5)
    t2 = [make_result(500 + i, isp="ISP0", target=f"t{i}.example") for i in range(8)]
    r2 = ingest(t2, SITES, _url(influxd), result_index=index)
    assert (r2.accepted, [d.reason for d in r2.dead]) == (4, ["cardinality"] * 4)
    assert "integrity.max_targets_per_day" in r2.dead[0].detail
    r3 = ingest([make_result(600, isp="ISP9")], SITES, _url(influxd), result_index=index)
    assert [d.reason for d in r3.dead] == ["cardinality"]
    index.close()
    assert count(influx, DB, "SELECT count(duration_s) FROM results") == 9 + 4


# --------------------------------------------------------------------------- receipts


class ProbeSide:
    """Subscribes to receipts like an agent (QoS 1)."""

    def __init__(self, port: int) -> None:
        self.msgs: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"r-{uuid.uuid4().hex[:6]}",
                             protocol=mqtt.MQTTv5)
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.c.subscribe(T.receipts("+"), qos=1)
        assert self.ready.wait(30)

    def _on_message(self, c: object, u: object, m: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.msgs.append((m.topic, bytes(m.payload), bool(m.retain)))

    def ids(self, probe: str) -> list[str]:
        with self.lock:
            return [str(i) for t, p, _ in self.msgs if t == T.receipts(probe)
                    for i in parse_receipt(p, probe).ids]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _wait(check: object, timeout: float = 90) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_receipts_name_every_stored_result_once_per_probe(
        tmp_path: Path, mosquitto: services.Service, influxd: services.Service,
        influx: object) -> None:
    cfg = config(tmp_path / "c", mosquitto.port, influxd.port,
                 extra='[integrity]\nknown_isps = ["VNPT", "Viettel"]\n')
    probe = ProbeSide(mosquitto.port)
    n = 2 * MAX_RECEIPT_IDS + 500
    mine = [make_result(i) for i in range(n)]
    theirs = [make_result(i, probe_id="huong-khe-01", isp="Saigon Net") for i in range(7)]
    rejected = make_result(99_999, isp='bad "isp"')         # a dead letter with an id
    try:
        with Collector(cfg) as c:
            pub = Publisher(mosquitto.port)
            pub.results(mine + theirs + [rejected])
            pub.publish(T.results("ky-anh-01"), b"{not json")   # no id: nothing to receipt
            pub.close()
            want_mine = {str(m.id) for m in mine} | {str(rejected.id)}
            assert _wait(lambda: len(set(probe.ids("ky-anh-01"))) == len(want_mine)
                         and len(probe.ids("huong-khe-01")) == 7)
            assert c.flush(30)
            assert count(influx, DB) == n + 7
            stats = c.stats.snapshot()
        assert set(probe.ids("ky-anh-01")) == want_mine
        assert len(probe.ids("ky-anh-01")) == len(want_mine)  # each id once
        assert set(probe.ids("huong-khe-01")) == {str(m.id) for m in theirs}
        with probe.lock:
            assert all(len(parse_receipt(p).ids) <= MAX_RECEIPT_IDS for _, p, _ in probe.msgs)
            assert not any(r for _, _, r in probe.msgs)   # never retained
            sent = len(probe.msgs)
        assert stats["receipts_sent"] == sent
        assert stats["receipted"] == len(want_mine) + 7
        assert stats["unknown_isp"] == 7
        assert c.stats.dead_reasons == {"invalid": 1, "not_json": 1}
    finally:
        probe.close()


# --------------------------------------------------------------------------- dead letters


def _record(i: int, probe: str) -> DeadLetter:
    # Every line the same length, so the rotation can be predicted to the record.
    return DeadLetter(id=f"{i:032x}", at="2026-03-01T00:00:00.000Z", reason="not_json",
                      detail="x", topic=T.results(probe), probe_id=probe,
                      payload=f"{{oops {i:06d}")


def test_dead_letter_caps_rotate_out_the_oldest(tmp_path: Path) -> None:
    probes = ("probe-a1", "probe-b2", "probe-c3")  # one length: every line is as long
    line = len(_record(0, probes[0]).to_line())
    store = DeadLetterStore(tmp_path / "dl.jsonl", max_bytes_per_probe=20 * line,
                            max_bytes_total=50 * line)
    # model: a probe over 20 lines drops its oldest down to 18 (90 %); the file over 50
    # drops the oldest of anyone down to 45.
    kept: list[tuple[str, str]] = []
    rotated = expected = 0
    for i in range(200):
        probe = probes[i % 3] if i >= 30 else probes[0]
        rec = _record(i, probe)
        rotated += store.append([rec])
        kept.append((probe, rec.id))
        mine = [k for k in kept if k[0] == probe]
        if len(mine) > 20:
            drop = set(mine[:len(mine) - 18])
            expected += len(drop)
            kept = [k for k in kept if k not in drop]
        if len(kept) > 50:
            expected += len(kept) - 45
            kept = kept[len(kept) - 45:]
    assert rotated == expected > 0
    assert [(r.probe_id, r.id) for r in store.read()] == kept
    assert (tmp_path / "dl.jsonl").stat().st_size == len(kept) * line


def test_collector_counts_rotated_dead_letters(tmp_path: Path, mosquitto: services.Service,
                                               influxd: services.Service) -> None:
    cfg = config(tmp_path / "c", mosquitto.port, influxd.port,
                 extra="max_bytes_per_probe = 8192\nmax_bytes_total = 16384\n")
    with Collector(cfg) as c:
        pub = Publisher(mosquitto.port)
        for i in range(300):
            pub.publish(T.results(SITES[i % 2].probe_id), b"{oops %06d" % i)
        pub.close()
        assert _wait(lambda: c.stats.acked == 300)
        assert c.flush(30)
        records = c.dead_store.read()
        assert c.stats.dead_lettered == 300
        assert c.stats.dead_rotated == 300 - len(records) > 0
    sizes: dict[str, int] = {}
    for r in records:
        sizes[r.probe_id or "-"] = sizes.get(r.probe_id or "-", 0) + len(r.to_line())
    assert max(sizes.values()) <= 8192 and sum(sizes.values()) <= 16384


_REWRITER = """
import sys
from pathlib import Path
from collector.core.deadletters import DeadLetterStore
store = DeadLetterStore(Path(sys.argv[1]))
ids = {f"{i:032x}" for i in range(0, int(sys.argv[2]), 2)}
print("go", flush=True)
store.remove(ids)
print("done", flush=True)
"""


def test_rewrite_killed_at_any_moment_leaves_old_or_new_file(tmp_path: Path) -> None:
    """``remove`` (what ``dead-letters replay`` and ``remove`` do) SIGKILLed mid-rewrite,
    at moments spread over its run: the file is always the whole old one or the whole
    new one."""
    n = 40_000
    path = tmp_path / "dead-letters.jsonl"
    old = b"".join(_record(i, "ky-anh-01").to_line() for i in range(n))
    new = b"".join(_record(i, "ky-anh-01").to_line() for i in range(1, n, 2))
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run(kill_after: float | None) -> float:
        path.write_bytes(old)
        proc = subprocess.Popen([sys.executable, "-c", _REWRITER, str(path), str(n)],
                                stdout=subprocess.PIPE, env=env)
        assert proc.stdout is not None and proc.stdout.readline() == b"go\n"
        t0 = time.monotonic()
        if kill_after is None:
            assert proc.wait(120) == 0
            return time.monotonic() - t0
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        return 0.0

    full = run(None)
    assert path.read_bytes() == new
    outcomes = {"old": 0, "new": 0}
    for frac in (*(k / 10 for k in range(11)), 1.5, 3.0):
        run(full * frac)
        data = path.read_bytes()
        assert data in (old, new), f"torn file after a kill at {frac:.0%} of the rewrite"
        outcomes["old" if data == old else "new"] += 1
    # the kills landed both before and after the rename (else the test proves nothing)
    assert outcomes["old"] > 0 and outcomes["new"] > 0, outcomes


def test_replay_keeps_conflicts(tmp_path: Path, mosquitto: services.Service,
                                influxd: services.Service, influx: object) -> None:
    """``dead-letters replay`` consults the collector's index: a conflict stays one."""
    from collector import cli

    cfg_path = tmp_path / "c" / "collector.toml"
    cfg = config(tmp_path / "c", mosquitto.port, influxd.port)
    first, forged = make_result(1), make_result(1, metrics={"download_mbps": 1.0})
    with Collector(cfg) as c:
        pub = Publisher(mosquitto.port)
        pub.results([first])
        pub.wait()
        assert _wait(lambda: c.stats.acked == 1)
        pub.results([forged])
        pub.close()
        assert _wait(lambda: c.stats.acked == 2)
        assert c.flush(30)
        assert c.stats.dead_reasons == {"conflict": 1}
    assert cli.main(["dead-letters", "replay", "--config", str(cfg_path), "--json"]) == 0
    [rec] = DeadLetterStore(cfg.dead_letters.path).read()
    assert rec.reason == "conflict"
    assert _values(influx, "SELECT download_mbps FROM results") == [[_ms(first), 101.0]]
