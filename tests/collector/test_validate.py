"""Collector validation, schema escaping, site registry and dead-letter store, in-process
(no services): fast, and the fuzz runs thousands of payloads here."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.core.deadletters import DeadLetter, DeadLetterStore
from collector.core.ingest import parse_result_fast, validate
from collector.core.registry import Registry
from collector.core.schema import (
    RESULTS,
    VIETNAM,
    Site,
    identity_offset_ns,
    line,
    result_line,
    tag_value_problem,
    to_ms,
)
from netmon.contract import ContractError, ResultMessage, StatusMessage, Topics, parse_result
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


# --------------------------------------------------------------------------- fast paths


def _outcome(parse: Callable[[], ResultMessage]) -> tuple[str, object]:
    try:
        return "ok", parse().model_dump()
    except ContractError as exc:
        return exc.reason, exc.detail


def _same_outcome(payload: bytes, probe: str = "ky-anh-01") -> None:
    fast = _outcome(lambda: parse_result_fast(payload, probe))
    strict = _outcome(lambda: parse_result(payload, probe))
    assert fast == strict, payload[:300]


def test_fast_result_parsing_agrees_with_the_contract_on_hostile_payloads() -> None:
    # Where pydantic's JSON mode alone is laxer than parse_result (the schema cases) or
    # parses differently (non-finite numbers, BOM, surrogates, huge integers, nesting),
    # parse_result_fast must still answer exactly as parse_result does.
    raw = make_result(1).to_json()
    base = json.loads(raw)
    no_schema = {k: v for k, v in base.items() if k != "schema"}
    cases = [raw, raw + b" \n", b"\xef\xbb\xbf" + raw, raw + b" x", b"x" * 70_000,
             raw.replace(b'"isp":"VNPT"', b'"isp":"VN\\ud800PT"'),
             raw.replace(b'"isp":"VNPT"', b'"isp":"VN\\ud83d\\ude00PT"'),
             raw.replace(b'"isp":"VNPT"', b'"isp":"VNPT","isp":"Viettel"'),
             raw.replace(b'"isp":"VNPT"', b'"isp":"VN\xffPT"'),
             raw.replace(b'"download_mbps":101.0', b'"download_mbps":NaN'),
             raw.replace(b'"download_mbps":101.0', b'"x_ms":Infinity'),
             raw.replace(b'"download_mbps":101.0', b'"retransmits":1e400'),
             raw.replace(b'"download_mbps":101.0', b'"x_ms":' + b"[" * 5000 + b"]" * 5000),
             raw.replace(b'"duration_s":10.0', b'"duration_s":NaN'),
             json.dumps(no_schema).encode(),
             json.dumps(dict(no_schema, metrics={"schema": 1})).encode(),
             make_result(1, target="true.example").to_json(),
             make_result(1, probe_id="huong-khe-01").to_json()]
    for key, value in [("schema", True), ("schema", 1.0), ("schema", "1"), ("schema", 2),
                       ("metrics", {"download_mbps": 10**30}), ("metrics", {"x": 10**400}),
                       ("metrics", {"download_mbps": True}), ("metrics", {"x_ms": -1}),
                       ("started_at", 1772323200), ("started_at", "2026-03-01T00:00:00"),
                       ("id", base["id"].replace("-", "")), ("id", 12345),
                       ("flags", "abc"), ("isp", 123), ("isp", " VNPT "), ("extra", 1),
                       ("duration_s", 10), ("duration_s", "10"), ("method", "nope")]:
        cases.append(json.dumps(dict(base, **{key: value})).encode())
    for payload in cases:
        _same_outcome(payload)
    # and the guards are what keeps them apart: pydantic's JSON mode alone takes these
    for lax in (json.dumps(dict(base, schema=True)).encode(), json.dumps(no_schema).encode()):
        ResultMessage.model_validate_json(lax)
        with pytest.raises(ContractError):
            parse_result_fast(lax, "ky-anh-01")


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads())
def test_fuzz_fast_result_parsing_agrees_with_the_contract(payload: bytes) -> None:
    _same_outcome(payload)


def _reference_result_line(msg: ResultMessage, site: Site) -> str:
    # The point as docs/schema.md lists it, through the generic line(): what result_line
    # rendered before it was specialised.
    tags = {"probe": msg.probe_id, "link": msg.link, "access": msg.access, "isp": msg.isp,
            "method": msg.method, "target": msg.target,
            "status": "ok" if msg.error is None else "error",
            "error_code": msg.error.code if msg.error else "", "district": site.district,
            "commune": site.commune, "commune_code": site.commune_code,
            "site_type": site.site_type}
    fields: dict[str, float | int | bool | str] = {
        k: float(v) for k, v in msg.metrics.values().items()}
    started_ms = to_ms(msg.started_at)
    fields |= {"duration_s": float(msg.duration_s), "latitude": float(site.latitude),
               "longitude": float(site.longitude), "result_id": str(msg.id),
               "site_name": site.name,
               "cross_traffic": 1.0 if "cross_traffic" in msg.flags else 0.0,
               "device_limited": 1.0 if "device_limited" in msg.flags else 0.0,
               "local_hour": float(to_ms(msg.started_at.astimezone(VIETNAM).replace(
                   tzinfo=UTC)) // 3_600_000 % 24)}
    if msg.flags:
        fields["flags"] = ",".join(msg.flags)
    if msg.error:
        fields["error_message"] = msg.error.message
    fields["agent_version"] = msg.agent_version
    return line(RESULTS, tags, fields, started_ms, identity_offset_ns(msg.id))


def test_result_line_is_the_documented_point() -> None:
    site = Site("ky-anh-01", 'UBND "phường" Sông Trí\\', "Phường Sông Trí, a=b", "Kỳ Anh",
                18.07, 106.29, "commune_office", "18754")
    msgs = [make_result(1), make_result(2, metrics={"download_mbps": 0, "x_count": 3,
                                                    "radio_rsrp_dbm": -101.5}),
            make_result(3, isp="Viettel Hà Tĩnh", target="http://x/y?a=1,b=2",
                        flags=("cross_traffic", "device_limited"),
                        error={"code": "timeout", "message": 'no "answer"\\ in 10 s'},
                        started_at=datetime(2026, 3, 1, 20, 59, 59, 999000, tzinfo=UTC)),
            make_result(4, access="mobile", link="lte", method="icmp", metrics={})]
    # Metrics set out of declaration order, one of them null, with an extra: the point
    # lists them in the same order as line() of Metrics.values().
    unordered = make_result(6, metrics={"rtt_ms": 3.5, "download_mbps": None, "loss_pct": 0,
                                        "z_extra_ms": 1.0, "upload_mbps": 7.25})
    msgs += [unordered, ResultMessage.model_validate_json(unordered.to_json().replace(
        b'"rtt_ms"', b'"jitter_ms":null,"rtt_ms"'))]
    for msg in msgs:
        for s in (site, SITES[0]):
            assert result_line(msg, s) == _reference_result_line(msg, s)
    with pytest.raises(ValueError, match="metric name 'status' is reserved: it is a tag key"):
        result_line(make_result(5, metrics={"status": 1.0}), site)
    with pytest.raises(ValueError, match="metric name 'flags' is reserved: it is a field"):
        result_line(make_result(5, metrics={"flags": 1.0}), site)
