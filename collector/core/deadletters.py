"""Dead letters: messages the collector rejected, kept with the reason and the raw bytes.

Every rejected message becomes one JSON line in a local file (the durable store, written
and fsynced *before* the message is acknowledged to the broker) and is also published to
``Topics.dead_letters()`` for anyone watching live. ``netmon-collector dead-letters list``
reads the file; ``dead-letters replay`` re-ingests records after a fix (e.g. a probe added
to the site registry) and removes those that now go through.

Reason codes: the contract's (``too_large``, ``not_utf8``, ``not_json``, ``not_object``,
``unsupported_schema``, ``invalid``, ``probe_mismatch``, ``bad_topic``) and the
collector's own: ``unknown_probe`` (not in the site registry), ``unstorable`` (valid but
not representable in InfluxDB, e.g. a tag value ending in a backslash), ``influx_rejected``
(InfluxDB answered 400 for this point alone), ``conflict`` (a result id already stored
with other content), ``cardinality`` (over a probe's daily limit of distinct ``isp`` or
``target`` values).

The file is bounded: past ``max_bytes_per_probe`` for one probe (records without a probe
count as one probe, ``-``) or ``max_bytes_total`` for the file, the oldest records (of
that probe, or of anyone) are rotated out down to 90 % of the cap, in one atomic rewrite.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from netmon.contract import format_time, now_utc
from netmon.fsutil import atomic_write


class DeadLetter(BaseModel):
    """One rejected message."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    at: str = Field(default_factory=lambda: format_time(now_utc()))
    reason: str
    detail: str
    topic: str
    probe_id: str | None = None
    #: The payload as text when it is UTF-8, else None and ``payload_b64`` holds it.
    payload: str | None = None
    payload_b64: str | None = None

    @classmethod
    def from_raw(cls, topic: str, payload: bytes, reason: str, detail: str,
                 probe_id: str | None = None) -> DeadLetter:
        """Build a record keeping the exact bytes."""
        try:
            text: str | None = payload.decode("utf-8")
            b64 = None
        except UnicodeDecodeError:
            text, b64 = None, base64.b64encode(payload).decode()
        return cls(reason=reason, detail=detail[:2000], topic=topic, probe_id=probe_id,
                   payload=text, payload_b64=b64)

    def raw(self) -> bytes:
        """The original payload bytes."""
        if self.payload is not None:
            return self.payload.encode("utf-8")
        return base64.b64decode(self.payload_b64 or "")

    def to_line(self) -> bytes:
        """One JSONL line (UTF-8, no ASCII escaping so Vietnamese stays readable)."""
        return (json.dumps(self.model_dump(), ensure_ascii=False) + "\n").encode("utf-8")


class DeadLetterStore:
    """The JSONL file. Appends and rewrites take an exclusive ``flock`` so a replay can
    run while the collector keeps appending.

    A rewrite (:meth:`remove`) replaces the file atomically (:mod:`netmon.fsutil`), so a
    power cut during a replay loses no record; the new file keeps the old one's mode and
    owner. The lock is on the open file, so whoever waited for it checks afterwards that
    the path still names that file, and opens the new one otherwise.
    """

    #: A rotation leaves this share of the cap, so the next appends do not rewrite again.
    ROTATE_TO = 0.9

    def __init__(self, path: Path, max_bytes_per_probe: int | None = None,
                 max_bytes_total: int | None = None) -> None:
        self.path = path
        self.max_bytes_per_probe = max_bytes_per_probe
        self.max_bytes_total = max_bytes_total
        #: Bytes per probe in the file, and the (inode, size) they describe: another
        #: process (a replay, a second worker) changing the file makes us count again.
        self._sizes: dict[str, int] | None = None
        self._sizes_of: tuple[int, int] | None = None

    @contextlib.contextmanager
    def _locked(self, mode: str) -> Iterator[int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_CREAT | (os.O_APPEND | os.O_WRONLY if mode == "a" else os.O_RDONLY)
        while True:
            fd = os.open(self.path, flags, 0o640)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                held = os.fstat(fd)
                try:
                    now = os.stat(self.path)
                except FileNotFoundError:
                    now = None
            except BaseException:
                os.close(fd)
                raise
            if now is not None and (now.st_ino, now.st_dev) == (held.st_ino, held.st_dev):
                break
            os.close(fd)  # replaced while we waited: lock the file the path names now
        try:
            yield fd
        finally:
            os.close(fd)  # releases the lock

    def append(self, records: list[DeadLetter]) -> int:
        """Append and fsync; only after this returns may the messages be acknowledged.

        Returns how many old records the caps rotated out (0 without caps)."""
        if not records:
            return 0
        lines = [r.to_line() for r in records]
        data = b"".join(lines)
        capped = self.max_bytes_per_probe is not None or self.max_bytes_total is not None
        with self._locked("a") as fd:
            if capped:
                before = os.fstat(fd)
                if self._sizes is None or self._sizes_of != (before.st_ino, before.st_size):
                    self._sizes = self._count()
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
            if not capped:
                return 0
            assert self._sizes is not None
            for rec, ln in zip(records, lines, strict=True):
                key = rec.probe_id or "-"
                self._sizes[key] = self._sizes.get(key, 0) + len(ln)
            after = os.fstat(fd)
            self._sizes_of = (after.st_ino, after.st_size)
            over_probe = self.max_bytes_per_probe is not None and any(
                n > self.max_bytes_per_probe for n in self._sizes.values())
            over_total = (self.max_bytes_total is not None
                          and after.st_size > self.max_bytes_total)
            if over_probe or over_total:
                return self._rotate(fd)
            return 0

    def _count(self) -> dict[str, int]:
        # The lock is held and the path names the locked file (see _locked); the append
        # descriptor is write-only, so read through the path.
        sizes: dict[str, int] = {}
        with open(self.path, "rb") as fh:
            for raw in fh:
                key = _probe_of(raw)
                sizes[key] = sizes.get(key, 0) + len(raw)
        return sizes

    def _rotate(self, fd: int) -> int:
        """Drop the oldest records past the caps (the lock is held); atomic rewrite."""
        with open(self.path, "rb") as fh:
            raws = [raw if raw.endswith(b"\n") else raw + b"\n" for raw in fh if raw.strip()]
        keys = [_probe_of(raw) for raw in raws]
        sizes: dict[str, int] = {}
        for raw, key in zip(raws, keys, strict=True):
            sizes[key] = sizes.get(key, 0) + len(raw)
        total = sum(sizes.values())
        probe_cap = self.max_bytes_per_probe
        total_cap = self.max_bytes_total
        keep = [True] * len(raws)
        # Oldest first (the file is in arrival order): per probe, then the whole file.
        if probe_cap is not None:
            over = {k for k, n in sizes.items() if n > probe_cap}  # only these lose records
            for i, (raw, key) in enumerate(zip(raws, keys, strict=True)):
                if key in over and sizes[key] > probe_cap * self.ROTATE_TO:
                    keep[i] = False
                    sizes[key] -= len(raw)
                    total -= len(raw)
        if total_cap is not None and total > total_cap:
            for i, raw in enumerate(raws):
                if total <= total_cap * self.ROTATE_TO:
                    break
                if keep[i]:
                    keep[i] = False
                    total -= len(raw)
                    sizes[keys[i]] -= len(raw)
        dropped = keep.count(False)
        if dropped:
            st = os.fstat(fd)
            atomic_write(self.path, b"".join(r for r, k in zip(raws, keep, strict=True) if k),
                         mode=stat.S_IMODE(st.st_mode), owner=(st.st_uid, st.st_gid))
            new = os.stat(self.path)
            self._sizes = {k: n for k, n in sizes.items() if n > 0}
            self._sizes_of = (new.st_ino, new.st_size)
        return dropped

    def read(self) -> list[DeadLetter]:
        """Every record; a corrupt line (e.g. a torn write after power loss) is skipped."""
        if not self.path.exists():
            return []
        out = []
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            for text in fh:
                text = text.strip()
                if not text:
                    continue
                try:
                    out.append(DeadLetter.model_validate_json(text))
                except ValueError:
                    continue
        return out

    def remove(self, ids: set[str], updated: dict[str, DeadLetter] | None = None) -> int:
        """Drop records by id (and replace those in ``updated``): the file is replaced
        atomically while the lock is held, so a concurrent appender waits and then appends
        to the new file."""
        updated = updated or {}
        with self._locked("r") as fd, os.fdopen(os.dup(fd), "rb") as fh:
            kept: list[bytes] = []
            removed = 0
            for raw in fh.read().splitlines():
                if not raw.strip():
                    continue
                try:
                    rec = DeadLetter.model_validate_json(raw)
                except ValueError:
                    kept.append(raw + b"\n")
                    continue
                if rec.id in ids:
                    removed += 1
                elif rec.id in updated:
                    kept.append(updated[rec.id].to_line())
                else:
                    kept.append(raw + b"\n")
            st = os.fstat(fd)
            # Same mode and owner: a replay run as root must leave a file the collector's
            # account can still append to.
            atomic_write(self.path, b"".join(kept), mode=stat.S_IMODE(st.st_mode),
                         owner=(st.st_uid, st.st_gid))
        return removed


def _probe_of(raw: bytes) -> str:
    # The probe a stored line belongs to, without validating the whole record.
    try:
        value = json.loads(raw).get("probe_id")
    except (ValueError, AttributeError):
        return "-"
    return value if isinstance(value, str) and value else "-"
