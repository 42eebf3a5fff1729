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
(InfluxDB answered 400 for this point alone).
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

    def __init__(self, path: Path) -> None:
        self.path = path

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

    def append(self, records: list[DeadLetter]) -> None:
        """Append and fsync; only after this returns may the messages be acknowledged."""
        if not records:
            return
        data = b"".join(r.to_line() for r in records)
        with self._locked("a") as fd:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)

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
