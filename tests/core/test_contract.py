"""The wire contract: round trips and a table of messages that must be rejected, each
for its own reason."""

from __future__ import annotations

import enum
import json
import math
import random
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic_core import TzInfo

from netmon.contract import (
    MAX_SPEED_MBPS,
    SIGNED_METRICS,
    ContractError,
    Metrics,
    ResultMessage,
    StatusMessage,
    Topics,
    _utc,
    parse_result,
    parse_status,
)


def good_result(**overrides: object) -> dict[str, object]:
    msg: dict[str, object] = {
        "schema": 1,
        "id": str(uuid.uuid4()),
        "probe_id": "ky-anh-ubnd-01",
        "link": "fibre",
        "access": "fixed",
        "isp": "VNPT",
        "method": "iperf3",
        "target": "iperf.hatinh.example:5201",
        "started_at": "2025-06-01T12:00:00.000Z",
        "duration_s": 10.2,
        "metrics": {"download_mbps": 148.7, "upload_mbps": 95.1, "retransmits": 3,
                    "loaded_rtt_ms": 41.0, "custom_extra_ms": 1.5},
        "error": None,
        "agent_version": "0.1.0",
    }
    msg.update(overrides)
    return msg


def encode(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def test_result_round_trip_keeps_every_field() -> None:
    raw = good_result()
    msg = parse_result(encode(raw), "ky-anh-ubnd-01")
    again = json.loads(msg.to_json())
    assert again["id"] == raw["id"]
    assert again["started_at"] == "2025-06-01T12:00:00.000Z"
    assert again["metrics"]["download_mbps"] == 148.7
    assert again["metrics"]["custom_extra_ms"] == 1.5
    assert parse_result(msg.to_json()) == msg


def test_failed_result_round_trip() -> None:
    raw = good_result(metrics={}, error={"code": "server_busy",
                                         "message": "iperf3: the server is busy"})
    msg = parse_result(encode(raw))
    assert not msg.ok and msg.error is not None and msg.error.code == "server_busy"
    assert parse_result(msg.to_json()) == msg


def test_started_at_is_normalised_to_utc() -> None:
    msg = parse_result(encode(good_result(started_at="2025-06-01T19:00:00+07:00")))
    assert msg.started_at == datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def test_status_round_trip_with_links() -> None:
    status = StatusMessage(
        probe_id="huong-khe-thpt-02", state="online", agent_version="0.1.0",
        started_at=datetime(2025, 6, 1, tzinfo=UTC), at=datetime(2025, 6, 1, 1, tzinfo=UTC),
        uptime_s=3600, spool_depth=4, last_result_at=datetime(2025, 6, 1, 0, 59, tzinfo=UTC),
        clock_synced=True,
        links=[{"name": "lte", "access": "mobile", "isp": "Viettel",
                "data_used_bytes": 10_000, "data_budget_bytes": 5_000_000_000}],
    )
    assert parse_status(status.to_json(), "huong-khe-thpt-02") == status


def test_topics() -> None:
    t = Topics()
    assert t.results("abc") == "netmon/v1/probes/abc/results"
    assert t.status("abc") == "netmon/v1/probes/abc/status"
    assert t.parse("netmon/v1/probes/abc-1/results") == ("abc-1", "results")
    assert Topics("x/y").all_results() == "x/y/probes/+/results"
    with pytest.raises(ContractError) as err:
        t.parse("netmon/v1/probes/AB/results")
    assert err.value.reason == "bad_topic"


FUTURE = (datetime.now(UTC) + timedelta(days=2)).isoformat()

BAD = [
    ("unknown schema", encode(good_result(schema=2)), "unsupported_schema", "schema"),
    ("schema missing", encode({k: v for k, v in good_result().items() if k != "schema"}),
     "unsupported_schema", "schema"),
    ("not json", b"{not json", "not_json", "JSON"),
    ("json array", b"[1,2]", "not_object", "list"),
    ("not utf-8", b'{"schema": 1, "isp": "\xff\xfe"}', "not_utf8", "UTF-8"),
    ("too large", encode(good_result(isp="x" * 70_000)), "too_large", "65536"),
    ("missing key", encode({k: v for k, v in good_result().items() if k != "probe_id"}),
     "invalid", "probe_id"),
    ("wrong type", encode(good_result(duration_s="ten")), "invalid", "duration_s"),
    ("bad probe id", encode(good_result(probe_id="Ky Anh")), "invalid", "probe_id"),
    ("bad access", encode(good_result(access="satellite")), "invalid", "access"),
    ("bad uuid", encode(good_result(id="123")), "invalid", "id"),
    ("naive time", encode(good_result(started_at="2025-06-01T12:00:00")), "invalid",
     "started_at"),
    ("future time", encode(good_result(started_at=FUTURE)), "invalid", "future"),
    ("NaN metric", good_result_nan := b"", "invalid", "non-finite"),
    ("negative metric", encode(good_result(metrics={"rtt_ms": -1})), "invalid", "rtt_ms"),
    ("negative extra", encode(good_result(metrics={"foo_ms": -1})), "invalid", "negative"),
    ("absurd speed", encode(good_result(metrics={"download_mbps": 200_000})), "invalid",
     "download_mbps"),
    ("absurd extra speed", encode(good_result(metrics={"x_mbps": 200_000})), "invalid",
     "100000"),
    ("loss > 100", encode(good_result(metrics={"loss_pct": 101})), "invalid", "loss_pct"),
    ("string metric", encode(good_result(metrics={"rtt_ms": "5"})), "invalid", "rtt_ms"),
    ("unknown top key", encode(good_result(colour="red")), "invalid", "colour"),
    ("bad error code", encode(good_result(error={"code": "oops", "message": ""})), "invalid",
     "error.code"),
    ("bool schema", encode(good_result(schema=True)), "unsupported_schema", "True"),
    ("huge integer metric", encode(good_result(metrics={"download_mbps": 10**400})), "invalid",
     "download_mbps"),
    ("huge integer extra", encode(good_result(metrics={"x_bytes": 10**400})), "invalid",
     "too large"),
    ("huge integer duration", encode(good_result(duration_s=10**400)), "invalid",
     "duration_s"),
    ("deep nesting", b'{"schema": 1, "metrics": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "too_large", "bytes"),
    ("deep nesting under the size limit", b'{"schema": 1, "x": ' + b"[" * 30_000
     + b"]" * 30_000 + b"}", "not_json", "deeply"),
]
# json.dumps writes NaN as a bare token that strict JSON parsers must refuse.
BAD[13] = ("NaN metric", json.dumps(good_result(metrics={"download_mbps": float("nan")})).encode(),
           "invalid", "non-finite")


@pytest.mark.parametrize(("payload", "reason", "hint"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_bad_results_rejected_with_reason(payload: bytes, reason: str, hint: str) -> None:
    with pytest.raises(ContractError) as err:
        parse_result(payload)
    assert err.value.reason == reason
    assert hint in str(err.value)


def test_probe_id_must_match_topic() -> None:
    with pytest.raises(ContractError) as err:
        parse_result(encode(good_result()), "another-probe")
    assert err.value.reason == "probe_mismatch"


def test_bad_status_rejected() -> None:
    with pytest.raises(ContractError) as err:
        parse_status(encode({"schema": 1, "probe_id": "abc", "state": "asleep",
                             "agent_version": "1"}))
    assert err.value.reason == "invalid" and "state" in err.value.detail


def test_models_are_the_same_on_both_sides() -> None:
    # The agent builds with the model, the collector parses bytes: one definition.
    msg = ResultMessage(probe_id="cam-xuyen-tyt-1", link="lte", access="mobile", isp="Viettel",
                        method="icmp", target="198.18.0.2", started_at=datetime.now(UTC),
                        duration_s=2.0, metrics={"rtt_ms": 30.0, "jitter_ms": 2.0,
                                                 "loss_pct": 0.0},
                        agent_version="0.1.0")
    assert parse_result(msg.to_json(), "cam-xuyen-tyt-1") == msg


# --------------------------------------------------------------------------- strict numbers


_STATUS = {"schema": 1, "probe_id": "ky-anh-01", "state": "online", "agent_version": "x"}


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("spool_depth", True, "spool_depth: Input should be a valid integer"),
    ("spool_evicted", 2**63, "spool_evicted: Input should be less than or equal to"),
    ("config_version", 1.0, "config_version: Input should be a valid integer"),
    ("uptime_s", True, "uptime_s: Input should be a valid number"),
    ("awaiting_receipt", -1, "awaiting_receipt: Input should be greater than or equal to 0"),
    ("expected_runs_per_day", {"fibre": False}, "expected_runs_per_day.fibre: Input should be"),
    ("links", [{"name": "fibre", "access": "fixed", "isp": "VNPT", "data_used_bytes": True}],
     "links.0.data_used_bytes: Input should be a valid integer"),
])
def test_status_numbers_are_strict_and_storable(field: str, value: object, needle: str) -> None:
    with pytest.raises(ContractError) as err:
        parse_status(json.dumps(_STATUS | {field: value}).encode())
    assert err.value.reason == "invalid" and needle in err.value.detail, err.value.detail
    # the largest storable integer is fine
    if field == "spool_evicted":
        assert parse_status(json.dumps(_STATUS | {field: 2**63 - 1}).encode())


@pytest.mark.parametrize(("patch", "needle"), [
    ({"duration_s": True}, "duration_s: Input should be a valid number"),
    ({"metrics": {"download_mbps": True}}, "metric 'download_mbps' is a boolean"),
    ({"metrics": {"extra_ok": True}}, "metric 'extra_ok' is a boolean"),
])
def test_booleans_are_not_numbers_in_results(patch: dict[str, object], needle: str) -> None:
    with pytest.raises(ContractError) as err:
        parse_result(encode(good_result(**patch)))
    assert err.value.reason == "invalid" and needle in err.value.detail, err.value.detail


def _metric_checks_as_written_first(data: dict[object, object]) -> None:
    """``Metrics._check_all_numbers`` as it was first written (one loop, every check in
    turn): the reference its faster form must agree with, error for error."""
    for key, value in data.items():
        if not isinstance(key, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", key):
            raise ValueError(f"metric name {key!r} must be lower_snake_case, <= 64 chars")
        if value is None:
            continue
        if isinstance(value, bool):
            raise ValueError(f"metric {key!r} is a boolean; send 0 or 1")
        if not isinstance(value, int | float):
            raise ValueError(f"metric {key!r} must be a number, got {type(value).__name__}")
        if isinstance(value, int) and abs(value) > 2**53:
            raise ValueError(f"metric {key!r} is too large (more than 2**53)")
        if not math.isfinite(value):
            raise ValueError(f"metric {key!r} is not finite ({value})")
        if value < 0 and key not in SIGNED_METRICS:
            raise ValueError(f"metric {key!r} is negative ({value})")
        if key.endswith("_mbps") and value > MAX_SPEED_MBPS:
            raise ValueError(f"metric {key!r}={value} is above {MAX_SPEED_MBPS:g} Mb/s")
        if key.endswith("_pct") and value > 100:
            raise ValueError(f"metric {key!r}={value} is outside 0-100")


class _Level(enum.IntEnum):
    HIGH = 200_000


class _Ratio(float):
    pass


def test_metric_checks_agree_with_the_reference_on_every_kind_of_value() -> None:
    keys: list[object] = [*Metrics.model_fields, "custom_extra_ms", "other_mbps",
                          "other_pct", "Bad", "", "x" * 65, "a" * 64, 3, "radio_x_dbm"]
    values: list[object] = [
        None, True, False, 0, 1, -1, 0.0, -0.0, 0.5, -0.5, 100, 100.0, 100.5, 101,
        -100, -141, -200.5, 60, 61.0, 99_999.9, 100_000, 100_000.0, 100_000.1, 100_001,
        2**53, 2**53 + 1, -(2**53) - 1, 10**400, float("nan"), float("inf"),
        float("-inf"), "1", [1], {"a": 1}, _Level.HIGH, _Ratio(150.0), _Ratio("nan")]
    rng = random.Random(20)
    cases = [{k: v} for k in keys for v in values]
    cases += [dict(rng.sample([(k, rng.choice(values)) for k in keys], 3))
              for _ in range(3000)]
    outcomes = set()
    for data in cases:
        try:
            _metric_checks_as_written_first(data)
            want = "ok"
        except ValueError as exc:
            want = str(exc)
        try:
            assert Metrics._check_all_numbers(data) is data  # type: ignore[operator]
            got = "ok"
        except ValueError as exc:
            got = str(exc)
        assert got == want, data
        outcomes.add(want.split(" ", 2)[-1][:12] if want != "ok" else want)
    assert len(outcomes) > 8  # every check was reached, not only the first few


def test_utc_normalisation_agrees_with_astimezone_then_replace() -> None:
    class Later(datetime):
        pass

    zones = [UTC, TzInfo(0), timezone(timedelta(0), "Z0"), TzInfo(25200),
             timezone(timedelta(hours=-7)), timezone(timedelta(microseconds=-1))]
    for cls in (datetime, Later):
        for tz in zones:
            for fold in (0, 1):
                for us in (0, 999, 1000, 123_456, 999_999):
                    for when in ((2026, 3, 1, 23, 59, 59), (1, 1, 1, 0, 0, 0),
                                 (9999, 12, 31, 23, 59, 59), (2024, 2, 29, 12, 0, 0)):
                        value = cls(*when, us, tzinfo=tz, fold=fold)
                        try:
                            ref = value.astimezone(UTC)
                            want: object = ref.replace(
                                microsecond=ref.microsecond // 1000 * 1000)
                            want = (want, want.tzinfo, want.fold, type(want))  # type: ignore[attr-defined]
                        except OverflowError as exc:
                            want = repr(exc)
                        try:
                            out = _utc(value)
                            got: object = (out, out.tzinfo, out.fold, type(out))
                        except OverflowError as exc:
                            got = repr(exc)
                        assert got == want, value
