"""Day packs: every throughput test of one line and local day, exactly, in one string field.

The monthly bulletin needs the individual tests (its medians, percentiles and 80/80 cannot
be rebuilt from aggregates), but reading a month of raw points (1.45 million for 1,000
probes, five fields each) is most of its cost, in influxd. The rollups
(:mod:`collector.core.rollups`) therefore also write, per line and local day, a *pack*:
the values the bulletin reads from ``results`` for its throughput figures, in the order
InfluxDB returns them, so the bulletin reads ~62,000 points for such a month instead.

A pack is the point ``tput_pack,<line tags> n=<tests>i,v=1i,data="<base64>"`` at the
local day's start (a day of more than :data:`MAX_TESTS` tests is split into parts at
the day's start + 1 ms, + 2 ms...: InfluxDB 1.x caps a string field at 64 KiB). ``data``
is little-endian binary, base64 (docs/schema.md, "Day packs"):

- ``u8`` version (1), ``u32`` tests, ``u8`` number of status values, then each status
  tag value as ``u8`` length + UTF-8 bytes;
- ``u32`` per test: milliseconds since the day's start (the time InfluxDB answers with
  ``epoch=ms``);
- ``u8`` per test: index of its ``status`` tag value; ``u8`` per test: bit 0 set when
  ``cross_traffic`` > 0 (the bulletin's rule: absent counts as 0);
- for each of :data:`PACK_FIELDS`: ``u8`` encoding, then the column: encoding 0 =
  ``f64`` per test (NaN: field absent), 1 = ``u8`` per test for columns holding only
  whole numbers 0-254 or NaN (255), such as ``device_limited``.

Every value round-trips exactly: decoding gives the float64 the raw query gives.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from netmon.errors import NetmonError

PACK = "tput_pack"
VERSION = 1
#: The ``results`` fields a pack keeps, in the bulletin's order (collector/bulletin/data.py).
PACK_FIELDS: tuple[str, ...] = ("download_mbps", "upload_mbps", "loaded_rtt_ms",
                                "idle_rtt_ms", "device_limited")
#: Tests per pack point: 39 bytes each, 52 in base64, under InfluxDB 1.x's 64 KiB string.
MAX_TESTS = 1000
_NAN_CODE = 255


class PackError(NetmonError, ValueError):
    """A pack's ``data`` field cannot be decoded (wrong version, truncated)."""


@dataclass
class DayTests:
    """One line's tests of one local day (or one part of it), in InfluxDB's order."""

    day_start_ms: int
    time_ms: NDArray[np.int64]
    status: list[str]
    #: Index into :attr:`status` per test.
    status_idx: NDArray[np.uint8]
    cross: NDArray[np.bool_]
    values: dict[str, NDArray[np.float64]]

    @property
    def size(self) -> int:
        """Number of tests."""
        return int(self.time_ms.size)


def encode(tests: DayTests) -> str:
    """The base64 ``data`` field for ``tests`` (at most :data:`MAX_TESTS`)."""
    n = tests.size
    if n > MAX_TESTS or len(tests.status) > 254:
        raise PackError(f"a pack holds at most {MAX_TESTS} tests and 254 status values")
    parts = [struct.pack("<BIB", VERSION, n, len(tests.status))]
    for s in tests.status:
        b = s.encode("utf-8")
        parts.append(struct.pack("<B", len(b)) + b)
    off = tests.time_ms - tests.day_start_ms
    if n and (off.min() < 0 or off.max() >= 2**32):
        raise PackError("a test's time is outside the pack's day")
    parts.append(off.astype("<u4").tobytes())
    parts.append(tests.status_idx.astype(np.uint8).tobytes())
    parts.append(tests.cross.astype(np.uint8).tobytes())
    for f in PACK_FIELDS:
        col = np.asarray(tests.values[f], dtype=np.float64)
        finite = col[~np.isnan(col)]
        if np.all((finite >= 0) & (finite < _NAN_CODE) & (finite == np.floor(finite))):
            codes = np.where(np.isnan(col), _NAN_CODE, np.nan_to_num(col)).astype(np.uint8)
            parts.append(b"\x01" + codes.tobytes())
        else:
            parts.append(b"\x00" + col.astype("<f8").tobytes())
    return base64.b64encode(b"".join(parts)).decode("ascii")


def _header(raw: bytes) -> tuple[int, list[str], int]:
    """A pack's test count, its ``status`` values and where its columns start."""
    version, n, n_status = struct.unpack_from("<BIB", raw, 0)
    if version != VERSION:
        raise PackError(f"pack version {version} is not {VERSION}")
    pos = 6
    status = []
    for _ in range(n_status):
        ln = raw[pos]
        status.append(raw[pos + 1:pos + 1 + ln].decode("utf-8"))
        pos += 1 + ln
    return n, status, pos


def decode(data: str, day_start_ms: int) -> DayTests:
    """The tests of a pack's ``data`` field; raises :class:`PackError`."""
    try:
        raw = base64.b64decode(data, validate=True)
        n, status, pos = _header(raw)
        off = np.frombuffer(raw, "<u4", n, pos)
        pos += 4 * n
        sidx = np.frombuffer(raw, np.uint8, n, pos)
        pos += n
        cross = np.frombuffer(raw, np.uint8, n, pos) > 0
        pos += n
        values: dict[str, NDArray[np.float64]] = {}
        for f in PACK_FIELDS:
            enc = raw[pos]
            pos += 1
            if enc == 1:
                codes = np.frombuffer(raw, np.uint8, n, pos)
                col = codes.astype(np.float64)
                col[codes == _NAN_CODE] = np.nan
                pos += n
            elif enc == 0:
                col = np.frombuffer(raw, "<f8", n, pos).astype(np.float64)
                pos += 8 * n
            else:
                raise PackError(f"unknown column encoding {enc}")
            values[f] = col
        if pos != len(raw):
            raise PackError(f"{len(raw) - pos} bytes left over")
    except (ValueError, struct.error, IndexError, UnicodeDecodeError) as exc:
        if isinstance(exc, PackError):
            raise
        raise PackError(f"undecodable pack: {exc}") from None
    if n and int(sidx.max()) >= len(status):
        raise PackError("a test's status index is out of range")
    return DayTests(day_start_ms, off.astype(np.int64) + day_start_ms, status,
                    sidx.copy(), cross, values)


@dataclass
class PackBatch:
    """The tests of many packs of one day, decoded at once (:func:`decode_many`)."""

    #: Which pack (index into the ``datas`` given) each test came from.
    pack: NDArray[np.int64]
    #: Index into :attr:`status` per test (one table for the whole batch).
    status_idx: NDArray[np.int64]
    status: list[str]
    time_ms: NDArray[np.int64]
    cross: NDArray[np.bool_]
    values: dict[str, NDArray[np.float64]]


def _column(parts: list[bytes], wide: list[bool]) -> NDArray[np.float64]:
    """One field's values from each pack's column bytes (``f64`` when ``wide``, else the
    ``u8`` codes), in pack order."""
    if all(wide):
        return np.frombuffer(b"".join(parts), "<f8").astype(np.float64)
    if not any(wide):
        codes = np.frombuffer(b"".join(parts), np.uint8)
        return np.where(codes == _NAN_CODE, np.nan, codes.astype(np.float64))
    # Mixed (a day whose tests of one line were all whole numbers or absent): rare.
    return np.concatenate([np.frombuffer(p, "<f8") if w else
                           np.where((c := np.frombuffer(p, np.uint8)) == _NAN_CODE, np.nan,
                                    c.astype(np.float64))
                           for p, w in zip(parts, wide, strict=True)])


def decode_many(datas: list[str], day_start_ms: int) -> PackBatch:
    """Decode the ``data`` fields of many packs of the day starting at ``day_start_ms``:
    the same values as :func:`decode` on each, tests in pack order. Raises
    :class:`PackError`.

    Each column of every pack is a contiguous run of bytes: they are sliced out per pack
    and joined per column, so numpy reads each column once (gathering them test by test
    with index arrays cost ~4x more: ~2 CPU-s for a month of 1,000 probes).
    """
    k_n = np.zeros(len(datas), np.int64)
    status_ix: dict[str, int] = {}
    remap: list[int] = []
    r_len = np.zeros(len(datas), np.int64)
    times: list[bytes] = []
    sidx: list[bytes] = []
    cross: list[bytes] = []
    cols: list[list[bytes]] = [[] for _ in PACK_FIELDS]
    wide: list[list[bool]] = [[] for _ in PACK_FIELDS]
    for k, d in enumerate(datas):
        try:
            raw = base64.b64decode(d, validate=True)
        except ValueError:
            raise PackError("undecodable pack: not base64") from None
        try:
            n, names, pos = _header(raw)
            r_len[k] = len(names)
            remap += [status_ix.setdefault(name, len(status_ix)) for name in names]
            times.append(raw[pos:pos + 4 * n])
            sidx.append(raw[pos + 4 * n:pos + 5 * n])
            cross.append(raw[pos + 5 * n:pos + 6 * n])
            pos += 6 * n
            for j in range(len(PACK_FIELDS)):
                enc = raw[pos]
                if enc not in (0, 1):
                    raise PackError(f"unknown column encoding {enc}")
                width = n if enc == 1 else 8 * n
                cols[j].append(raw[pos + 1:pos + 1 + width])
                wide[j].append(enc == 0)
                pos += 1 + width
        except (struct.error, IndexError, UnicodeDecodeError) as exc:
            raise PackError(f"undecodable pack: {exc}") from None
        if pos != len(raw):
            raise PackError(f"{len(raw) - pos} bytes left over" if pos < len(raw)
                            else "undecodable pack: truncated")
        k_n[k] = n
    total = int(k_n.sum())
    pack = np.repeat(np.arange(len(datas), dtype=np.int64), k_n)
    t = np.frombuffer(b"".join(times), "<u4").astype(np.int64)
    local_s = np.frombuffer(b"".join(sidx), np.uint8).astype(np.int64)
    # Each pack's own status table, mapped into the batch's.
    r_base = np.cumsum(r_len) - r_len
    if total and bool((local_s >= r_len[pack]).any()):
        raise PackError("a test's status index is out of range")
    status_idx = (np.asarray(remap, np.int64)[r_base[pack] + local_s] if total
                  else np.zeros(0, np.int64))
    values = {f: _column(cols[j], wide[j]) for j, f in enumerate(PACK_FIELDS)}
    return PackBatch(pack, status_idx, list(status_ix), t + day_start_ms,
                     np.frombuffer(b"".join(cross), np.uint8) > 0, values)
