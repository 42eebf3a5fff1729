"""Collector validation, schema escaping, site registry and dead-letter store, in-process
(no services): fast, and the fuzz runs thousands of payloads here."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.core.deadletters import DeadLetter, DeadLetterStore
from collector.core.ingest import validate
from collector.core.registry import Registry
from collector.core.schema import line, tag_value_problem, to_ms
from netmon.contract import StatusMessage, Topics
from tests.helpers.collector import SITES, make_result

T = Topics()
REG = Registry.from_sites(SITES)


def _v(payload: bytes, probe: str = "ky-anh-01", kind: str = "results") -> object:
    return validate(f"netmon/v1/probes/{probe}/{kind}", payload, T, REG)


def test_valid_result_becomes_one_enriched_point() -> None:
    item = _v(make_result(1).to_json())
    assert item.dead is None and len(item.lines) == 1
    ln = item.lines[0]
    assert ln.startswith("results,access=fixed,commune=Phường\\ Sông\\ Trí,commune_code=18754,"
                         "district=Thị\\ xã\\ Kỳ\\ Anh,")
    assert 'site_name="UBND phường Sông Trí"' in ln
    ts = int(ln.rsplit(" ", 1)[1])  # nanoseconds: started_at's ms + the id's offset
    assert ts // 1_000_000 == to_ms(make_result(1).started_at)
    evening = make_result(2, started_at=datetime(2026, 3, 1, 12, 30, tzinfo=UTC))
    assert ",local_hour=19.0," in _v(evening.to_json()).lines[0]  # 19:30 in Hà Tĩnh


@pytest.mark.parametrize(("payload", "probe", "reason"), [
    (b"not json", "ky-anh-01", "not_json"),
    (b"\xff\xfe", "ky-anh-01", "not_utf8"),
    (b"[1, 2]", "ky-anh-01", "not_object"),
    (b'{"schema": 2}', "ky-anh-01", "unsupported_schema"),
    (b'{"schema": 1}', "ky-anh-01", "invalid"),
    (make_result(1, probe_id="huong-khe-01").to_json(), "ky-anh-01", "probe_mismatch"),
    (make_result(1, probe_id="nowhere-01").to_json(), "nowhere-01", "unknown_probe"),
    (b"x" * 70_000, "ky-anh-01", "too_large"),
])
def test_invalid_messages_become_dead_letters(payload: bytes, probe: str, reason: str) -> None:
    item = _v(payload, probe)
    assert item.lines == []
    assert item.dead is not None and item.dead.reason == reason, item.dead
    assert item.dead.raw() == payload  # the exact bytes are kept
    assert item.dead.topic == f"netmon/v1/probes/{probe}/results"


def test_hostile_json_never_raises() -> None:
    base = json.loads(make_result(1).to_json())
    huge = dict(base, metrics={"download_mbps": 10**400})  # OverflowError inside pydantic
    deep = b"[" * 100_000 + b"]" * 100_000  # RecursionError in json
    for payload in (json.dumps(huge).encode(), deep[:60_000],
                    json.dumps(dict(base, duration_s=float("nan"))).encode(),
                    json.dumps(dict(base, started_at="1970-01-01T00:00:00Z")).encode(),
                    json.dumps(dict(base, metrics={"flags": 1.0})).encode(),
                    json.dumps(dict(base, isp="VNPT\\")).encode(),
                    json.dumps(dict(base, target="a\nb")).encode()):
        item = _v(payload)
        assert item.dead is not None, payload[:200]
        assert item.dead.reason in ("invalid", "not_json", "unstorable"), item.dead


def test_bad_topics() -> None:
    payload = make_result(1).to_json()
    for topic in ("other/thing", "netmon/v1/probes/ky-anh-01/config",
                  "netmon/v1/probes/KY/results"):
        item = validate(topic, payload, T, REG)
        assert item.dead is not None and item.dead.reason == "bad_topic"


def test_status_feeds_liveness_series() -> None:
    st_msg = StatusMessage(probe_id="ky-anh-01", state="online", agent_version="0.1.0",
                           at=datetime(2026, 3, 1, tzinfo=UTC), spool_depth=3,
                           clock_synced=True,
                           links=[{"name": "lte", "access": "mobile", "isp": "Viettel",
                                   "data_used_bytes": 500, "data_budget_bytes": 1000}])
    item = _v(st_msg.to_json(), kind="status")
    assert item.dead is None
    assert item.lines[0].startswith("probe_status,commune=Phường\\ Sông\\ Trí,commune_code=18754,")
    assert "online=1i" in item.lines[0] and "spool_depth=3i" in item.lines[0]
    assert item.lines[1].startswith("link_usage,") and "used_pct=50.0" in item.lines[1]


def test_tag_value_rules_and_exact_ms() -> None:
    for ok in ("Kỳ Anh", 'Thạch Hà, "Xã" a=b', "C:\\dir", "x\\y z"):
        assert tag_value_problem(ok) is None, ok
    for bad in ("trail\\", "a\\ b", "a\\,b", "a\\=b", "a\\\\b", "new\nline", "tab\t"):
        assert tag_value_problem(bad), bad
        with pytest.raises(ValueError):
            line("m", {"t": bad}, {"f": 1.0}, 1)
    base = datetime(2025, 1, 1, tzinfo=UTC)
    for i in range(0, 10**6, 997):
        d = base + timedelta(milliseconds=i)
        assert to_ms(d) == 1735689600000 + i


# --------------------------------------------------------------------------- dead letters


def test_dead_letter_store_roundtrip_and_remove(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path / "dl" / "dead.jsonl")
    recs = [DeadLetter.from_raw("t/1", b"\xff\x00binary", "not_utf8", "x"),
            DeadLetter.from_raw("t/2", "Hương Khê \"q\"".encode(), "invalid", "y", "p-1")]
    store.append(recs)
    back = store.read()
    assert [r.raw() for r in back] == [b"\xff\x00binary", "Hương Khê \"q\"".encode()]
    assert "Hương Khê" in store.path.read_text(encoding="utf-8")  # readable, not \u escapes
    assert os.stat(store.path).st_mode & 0o007 == 0  # raw payloads: not world-readable
    assert store.remove({recs[0].id}) == 1
    assert [r.id for r in store.read()] == [recs[1].id]


# --------------------------------------------------------------------------- fuzz

_valid = json.loads(make_result(7).to_json())
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=8)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """Random bytes, random JSON, and valid messages with one field mangled."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        return json.dumps(draw(_json_values)).encode()
    obj = dict(_valid)
    key = draw(st.sampled_from([*sorted(obj), "extra"]))
    if kind == 2:
        obj[key] = draw(_json_values)
    else:  # plausible strings: Vietnamese, escapes, control chars
        obj[key] = draw(st.text(alphabet=st.sampled_from(list("aăâbcdđ ,=\"\\\n\tẩỳ0-:.Z")),
                                max_size=20))
    return json.dumps(obj, allow_nan=True).encode()


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads())
def test_fuzz_never_crashes_and_dead_letters_every_invalid(payload: bytes) -> None:
    item = _v(payload)
    if item.dead is None:
        # accepted: then it is really valid and its point is well formed
        assert len(item.lines) == 1 and item.lines[0].startswith("results,")
    else:
        assert item.lines == [] and item.dead.reason and item.dead.raw() == payload
