"""The light wire path (netmon/wire.py) against the one contract (netmon/contract.py).

The export it reads must equal what the models give now; what the models refuse it must
refuse (a fuzz set of mutated results and status messages); it writes floats as
pydantic-core does; and it runs without pydantic. Real results of every method built by
it: tests/agent/test_wire_results.py.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic_core import to_json

from netmon import wire, wireschema
from netmon.contract import ContractError, parse_result, parse_status
from tests.helpers import REPO


def test_the_committed_export_equals_the_contracts_models_now() -> None:
    # Fails when a field, bound or pattern of the contract changes without re-exporting
    # (python -m netmon.wireschema --write).
    assert json.loads(wireschema.SCHEMA_FILE.read_text(encoding="utf-8")) == wireschema.build()
    assert wireschema.main(["--check"]) == 0


def test_floats_are_written_as_pydantic_core_writes_them() -> None:
    rng = random.Random(20)
    values = [rng.uniform(-1, 1) * 10 ** rng.randint(-30, 30) for _ in range(50_000)]
    values += [1e-5, -2.5e-5, 9.99999e-5, 1e-4, 1e-6, 1e16, 1e15, 0.0, -0.0, 5e-324,
               1.7976931348623157e308, 0.1 + 0.2]
    wrong = [(v, to_json(v).decode(), wire.format_float(v)) for v in values
             if to_json(v).decode() != wire.format_float(v)]
    assert wrong == []


def _result() -> dict[str, Any]:
    return {
        "schema": 1, "id": str(uuid.uuid4()), "probe_id": "ht-xuan-loc-01", "link": "fibre",
        "access": "fixed", "isp": "VNPT", "method": "iperf3", "target": "10.0.0.1:5201",
        "started_at": "2026-12-03T08:00:00.123Z", "duration_s": 12.5,
        "metrics": {"download_mbps": 143.8, "upload_mbps": 95.0, "idle_rtt_ms": 3.2,
                    "bytes": 312_000_000, "radio_rsrp_dbm": -95.0, "streams_count": 4},
        "error": None, "flags": ["cross_traffic"], "agent_version": "1.4.0"}


def _status() -> dict[str, Any]:
    return {
        "schema": 1, "probe_id": "ht-xuan-loc-01", "state": "online",
        "at": "2026-12-03T08:00:00.000Z", "agent_version": "1.4.0",
        "started_at": "2026-12-01T00:00:00.000Z", "uptime_s": 3600.0, "spool_depth": 3,
        "spool_evicted": 0, "last_result_at": "2026-12-03T07:59:00.000Z",
        "clock_synced": True,
        "links": [{"name": "fibre", "access": "fixed", "isp": "VNPT", "data_used_bytes": 10,
                   "data_budget_bytes": None, "last_result_at": None}],
        "config_version": 4, "config_error": None, "awaiting_receipt": 1, "spool_lost": 0,
        "results_maybe_lost": None, "spool_error": None,
        "expected_runs_per_day": {"fibre": 48.0},
        "update": {"pending": None, "trial": "1.5.0", "failed": {"1.3.9": "health check"},
                   "last_event": "switched", "last_event_at": "2026-12-02T00:00:00.000Z"},
        "oldest_waiting_at": None, "board_model": "Raspberry Pi 4 Model B Rev 1.5"}


#: Times the models read although they are not RFC 3339 as the contract writes it.
_LOOSE_TIMES = ("2026-12-03T08:00:00.123+0700", "2026-12-03 08:00:00Z",
                "2026-12-03T08:00:00.1234567891Z")
#: Values of the wrong kind, length, pattern or range for one field or another.
_BAD = [None, True, False, 0, 1, -1, 1.0, -0.5, 1.5, 2**53 + 1, 2**64, 10**400, 1e300,
        math.nan, math.inf, "", "x", "ab", "abc\n", "ABC", "a" * 257, "a" * 2001, "both",
        "1", "not-a-uuid", "2026-12-03T08:00:00", "2026-13-03T08:00:00Z", "yesterday",
        "2026-12-03T08:00:00+07:00", "20261203T080000Z", *_LOOSE_TIMES, [], ["x"], ["Bad"],
        ["ok", "ok\n"], {}, {"x": 1},
        {"code": "timeout"}, {"code": "nope", "message": "m"},
        {"code": "timeout", "message": "m", "extra": 1}, {"code": "timeout", "message": 1},
        uuid.uuid4().hex, 1_764_748_800]
#: Values for one metric: wrong kinds, signs, sizes and names are in the keys below.
_BAD_METRIC = [True, "1", None, -1, -0.001, 2**53 + 1, -(2**53) - 1, math.nan, math.inf,
               100_001.0, 101, 1e20, [], {}, 0, 0.5, 600_001.0, -200.0, 70.0]
_METRIC_KEYS = ["download_mbps", "loss_pct", "rtt_ms", "bytes", "radio_rssi_dbm",
                "radio_rsrq_db", "modem_max_down_mbps", "extra_mbps", "extra_pct", "extra_s",
                "Bad", "1x", "x-y", "a" * 65, "x" * 64, "samples"]


def _mutations(base: dict[str, Any], rng: random.Random) -> Iterator[dict[str, Any]]:
    for key in list(base):
        dropped = dict(base)
        del dropped[key]
        yield dropped
        for value in _BAD:
            yield base | {key: value}
    yield base | {"unknown": 1}
    if "metrics" in base:
        for key in _METRIC_KEYS:
            for value in _BAD_METRIC:
                yield base | {"metrics": base["metrics"] | {key: value}}
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    yield base | {"started_at": future, "at": future}
    for _ in range(2000):  # several faults at once
        out = dict(base)
        for _ in range(rng.randint(1, 3)):
            out[rng.choice(list(base))] = rng.choice(_BAD)
        yield out
    if "links" in base:
        link = base["links"][0]
        for key in link:
            for value in _BAD:
                yield base | {"links": [link | {key: value}]}
        for value in _BAD:
            yield base | {"update": base["update"] | {"failed": {"1.0": value}}}
            yield base | {"update": base["update"] | {"trial": value}}
            yield base | {"expected_runs_per_day": {"fibre": value}}
        for name in ("Fibre", "fibre\n", "", "a" * 40):
            yield base | {"expected_runs_per_day": {name: 1.0}}


def _model_refuses(parse: Any, obj: dict[str, Any]) -> bool:
    try:
        payload = json.dumps(obj, allow_nan=True).encode()
    except (ValueError, OverflowError):
        return True
    try:
        parse(payload)
    except ContractError:
        return True
    return False


def _light_refuses(encode: Any, obj: dict[str, Any]) -> bool:
    try:
        encode(obj)
    except (wire.WireError, ValueError, OverflowError):
        return True
    return False


# The contract's metrics serialiser is annotated float | bool, so pydantic warns (and
# writes them unchanged) for integer extras such as streams_count.
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
@pytest.mark.parametrize(("base", "parse", "encode"), [
    (_result, parse_result, wire.encode_result),
    (_status, parse_status, wire.encode_status),
], ids=["result", "status"])
def test_the_light_check_refuses_what_the_contract_refuses(base: Any, parse: Any,
                                                           encode: Any) -> None:
    valid = base()
    assert not _model_refuses(parse, valid) and not _light_refuses(encode, valid)
    rng = random.Random(7)
    cases = list(_mutations(valid, rng))
    refused_by_model = [c for c in cases if _model_refuses(parse, c)]
    assert len(refused_by_model) > len(cases) // 2  # the fuzz set does reach the contract
    slipped = [c for c in refused_by_model if not _light_refuses(encode, c)]
    assert slipped == [], slipped[:3]
    # And the light check is not simply stricter than the contract: what the contract
    # accepts in the set, it accepts too, except for values the model reads leniently
    # (a bare UUID hex, a number of seconds as a time, 1 as true, 1.0 as 1); the agent never sends
    # those.
    accepted = [c for c in cases if not _model_refuses(parse, c)]
    too_strict = [c for c in accepted if _light_refuses(encode, c)
                  and not _lenient_model_reading(c)]
    assert too_strict == [], too_strict[:3]
    # What both accept, both write as the same bytes (integers in number fields become
    # floats, defaults filled, only measured metrics).
    both = [c for c in accepted if not _light_refuses(encode, c)]
    assert len(both) > 50
    for case in [valid, *both]:
        if "id" in valid and "id" not in case:
            continue  # a fresh random id on each side
        assert encode(case) == parse(json.dumps(case).encode()).to_json(), case


def _lenient_model_reading(obj: dict[str, Any]) -> bool:
    # pydantic reads a UUID without hyphens, Unix seconds (a number or a numeric string) and
    # looser ISO forms as a time, 1 as true and 1.0 as 1; the light check wants the
    # canonical forms the agent and the collector write.
    def lenient(value: Any) -> bool:
        if isinstance(value, bool):
            return False
        return isinstance(value, (int, float)) or value == "1" or value in _LOOSE_TIMES \
            or (isinstance(value, str) and len(value) == 32)
    if "clock_synced" in obj and not isinstance(obj["clock_synced"], (bool, type(None))):
        return True
    if isinstance(obj.get("schema"), float):
        return True
    times = ("id", "started_at", "at", "last_result_at", "oldest_waiting_at")
    if any(lenient(obj.get(k)) for k in times):
        return True
    links = obj.get("links")
    if isinstance(links, list) and links and isinstance(links[0], dict) \
            and lenient(links[0].get("last_result_at")):
        return True
    update = obj.get("update")
    return isinstance(update, dict) and lenient(update.get("last_event_at"))


_NO_PYDANTIC = """
import json, sys
from datetime import UTC, datetime
from netmon import wire
r = wire.Result(probe_id="ht-01x", link="fibre", access="fixed", isp="VNPT", method="tcp",
                target="127.0.0.1:1", started_at=datetime.now(UTC), duration_s=0.1,
                agent_version="1", metrics=wire.Metrics({"rtt_ms": 1.0}))
assert json.loads(r.to_json())["metrics"] == {"rtt_ms": 1.0}
wire.encode_status({"schema": 1, "probe_id": "ht-01x", "state": "online", "agent_version": "1"})
receipt = wire.parse_receipt(json.dumps({"schema": 1, "probe_id": "ht-01x",
                                         "ids": [str(r.id)]}).encode(), "ht-01x")
assert receipt.ids == (r.id,)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("pydantic"))))
"""


def test_the_light_path_runs_without_pydantic() -> None:
    proc = subprocess.run([sys.executable, "-c", _NO_PYDANTIC], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def _receipt() -> dict[str, Any]:
    return {"schema": 1, "probe_id": "ht-xuan-loc-01",
            "ids": [str(uuid.uuid4()) for _ in range(3)], "at": "2026-12-03T08:00:01.250Z"}


def _receipt_payloads() -> Iterator[bytes]:
    base = _receipt()
    for obj in _mutations(base, random.Random(11)):
        try:
            yield json.dumps(obj, allow_nan=True).encode()
        except (ValueError, OverflowError):
            continue
    for ids in ([], [str(uuid.uuid4())] * 1000, [str(uuid.uuid4())] * 1001, [1], [None],
                [str(uuid.uuid4()).upper()], ["x" * 36]):
        yield json.dumps(base | {"ids": ids}).encode()
    yield json.dumps({k: v for k, v in base.items() if k != "at"}).encode()
    yield b"\xff\xfe"
    yield b"[1]"
    yield b"{"
    yield b'{"schema": 1, "probe_id": "ht-xuan-loc-01", "ids": [], "at": NaN}'
    yield b"{" + b" " * 70_000 + b"}"
    yield "\ufeff".encode() + json.dumps(base).encode()


def test_a_receipt_is_read_as_the_contract_reads_it() -> None:
    from netmon.contract import parse_receipt

    compared = refused = 0
    for payload in _receipt_payloads():
        try:
            obj = json.loads(payload)
        except ValueError:
            obj = None
        ids = obj.get("ids") if isinstance(obj, dict) else None
        hex_ids = isinstance(ids, list) and any(isinstance(i, str) and len(i) == 32
                                                for i in ids)
        if isinstance(obj, dict) and (_lenient_model_reading(obj) or hex_ids):
            continue  # forms a collector never writes (see _lenient_model_reading)
        try:
            model = parse_receipt(payload, "ht-xuan-loc-01")
        except ContractError as exc:
            with pytest.raises(wire.WireError) as light:
                wire.parse_receipt(payload, "ht-xuan-loc-01")
            assert light.value.reason == exc.reason, (payload[:200], exc, light.value)
            refused += 1
            continue
        got = wire.parse_receipt(payload, "ht-xuan-loc-01")
        assert (got.probe_id, got.ids) == (model.probe_id, model.ids)
        if isinstance(obj, dict) and "at" in obj:
            assert got.at == model.at
        compared += 1
    assert refused > 100
    assert compared >= 10
    # The probe in the topic must be the payload's.
    with pytest.raises(wire.WireError) as other:
        wire.parse_receipt(json.dumps(_receipt()).encode(), "ht-other-probe")
    assert other.value.reason == "probe_mismatch"
