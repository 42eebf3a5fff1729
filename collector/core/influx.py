"""A small client for InfluxDB's v1 HTTP API (``/ping``, ``/write``, ``/query``), the one
API served by InfluxDB 1.x, 2.x (with DBRP mappings) and 3.x.

Auth is HTTP basic with user/password, or any user with a 2.x/3.x token as password.
"""

from __future__ import annotations

import functools
import gzip
import re
import ssl
from dataclasses import dataclass
from typing import Any

import httpx
import msgpack

from collector.config import InfluxSettings
from collector.core.schema import PRECISION
from netmon.errors import NetmonError
from netmon.settings import read_secret

_MSGPACK = "application/x-msgpack"

#: Shard group length (days) of the retention policy a database is created with, capped
#: at the retention. InfluxDB 1.x's own default for a long retention is 7 days: a year is
#: then 53 shard groups, and a dashboard over a year pays per shard (issue 20: 6-9 s vs
#: 0.5-1.4 s with 52 weeks, benchmarks/dashboards/README.md). The Ansible influxdb role's
#: ``netmon_influxdb_shard_days`` defaults to this number (tests/collector/
#: test_influx_client.py checks that they agree).
SHARD_DAYS = 364
_DURATION_PART = re.compile(r"([0-9]+)(w|d|h|m|s)")
_UNIT_S = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}


def duration_s(text: str) -> int | None:
    """Seconds in an InfluxQL duration (``520w``, ``8760h0m0s``; ``INF`` is 0, as ``0s``);
    None when ``text`` is not one (influxd then says why)."""
    text = text.strip()
    if text.upper() == "INF":
        return 0
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(int(n) * _UNIT_S[u] for n, u in parts)


def shard_duration(retention: str) -> str:
    """The ``SHARD DURATION`` for a retention policy of ``retention``: :data:`SHARD_DAYS`
    days, or the retention itself when that is shorter (influxd refuses longer shards)."""
    keep = duration_s(retention)
    days = SHARD_DAYS * _UNIT_S["d"]
    return f"{keep}s" if keep and keep < days else f"{SHARD_DAYS}d"


class InfluxError(NetmonError, RuntimeError):
    """InfluxDB refused a request. ``retryable`` is True for 5xx, timeouts and refusals."""

    def __init__(self, message: str, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


@dataclass
class Series:
    """One InfluxQL result series."""

    name: str
    tags: dict[str, str]
    columns: list[str]
    values: list[list[Any]]

    def rows(self) -> list[dict[str, Any]]:
        """Values as dicts keyed by column name."""
        return [dict(zip(self.columns, v, strict=True)) for v in self.values]


@functools.cache
def _tls_context(verify: bool) -> ssl.SSLContext:
    # What httpx.Client(verify=...) builds for itself, once per process: loading the CA
    # bundle takes milliseconds, and the rollups and registry-metrics threads open a
    # client every round (a tenth of the collector's CPU in a backlog drain's profile).
    return httpx.create_ssl_context(verify=verify)


class InfluxClient:
    """Synchronous v1 client; one connection pool, reused."""

    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = settings
        # A token (2.x/3.x) goes as the basic-auth password; SecretFileError when unusable.
        password = (read_secret(settings.token_file, "influxdb.token_file")
                    or read_secret(settings.password_file, "influxdb.password_file"))
        auth = (settings.username or "netmon", password) if password else None
        self._http = httpx.Client(base_url=settings.url.rstrip("/"), auth=auth,
                                  timeout=settings.timeout_s,
                                  verify=_tls_context(settings.verify_tls))

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> InfluxClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kwargs)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise InfluxError(f"InfluxDB at {self.settings.url} unreachable: {exc}",
                              retryable=True) from None
        if resp.status_code >= 500:
            raise InfluxError(f"InfluxDB {resp.status_code}: {resp.text[:500]}", True,
                              resp.status_code)
        if resp.status_code >= 400:
            raise InfluxError(f"InfluxDB {resp.status_code}: {resp.text[:500]}", False,
                              resp.status_code)
        return resp

    def ping(self) -> bool:
        """True when InfluxDB answers ``/ping``."""
        try:
            return self._request("GET", "/ping").status_code == 204
        except InfluxError:
            return False

    def write_lines(self, lines: list[str], compress: bool = True) -> None:
        """POST line protocol to ``/write`` (precision ``schema.PRECISION``); raises InfluxError."""
        body = ("\n".join(lines) + "\n").encode()
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if compress:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        params = {"db": self.settings.database, "precision": PRECISION}
        if self.settings.retention_policy:
            params["rp"] = self.settings.retention_policy
        self._request("POST", "/write", params=params, content=body, headers=headers)

    def query(self, q: str, params: dict[str, Any] | None = None, *,
              compressed: bool = True, binary: bool = False) -> list[list[Series]]:
        """Run InfluxQL; one list of series per statement. Times are epoch ms.

        ``compressed=False`` asks for an uncompressed answer: on loopback, gzip only costs
        CPU on both sides (~18% of influxd's time for big raw reads). ``binary=True`` asks
        for MessagePack (InfluxDB 1.4+): the same answer, cheaper to encode and decode
        (the bulletin's month fetch: -19% CPU here, -11% in influxd; benchmarks/bulletin).
        An answer in JSON (a server that ignores the header) is read as usual, and a
        406/415 refusal is asked again in JSON.
        """
        form = {"q": q, "db": self.settings.database, "epoch": "ms"}
        if params:
            import json

            form["params"] = json.dumps(params)
        headers = {} if compressed else {"Accept-Encoding": "identity"}
        if binary:
            # Exactly this: InfluxDB 1.x compares the whole header (a list with a JSON
            # fallback gets JSON).
            headers["Accept"] = _MSGPACK
        try:
            resp = self._request("POST", "/query", data=form, headers=headers or None)
        except InfluxError as exc:
            if not binary or exc.status not in (406, 415):
                raise
            headers.pop("Accept")  # a server that refuses MessagePack: JSON, as before
            resp = self._request("POST", "/query", data=form, headers=headers or None)
        if resp.headers.get("content-type", "").startswith(_MSGPACK):
            body = msgpack.unpackb(resp.content, raw=False)
        else:
            body = resp.json()
        out: list[list[Series]] = []
        for result in body.get("results", []):
            if "error" in result:
                raise InfluxError(f"InfluxQL error: {result['error']}", False)
            out.append([Series(s.get("name", ""), s.get("tags") or {}, s["columns"],
                               s.get("values") or [])
                        for s in result.get("series", [])])
        return out

    def ensure_database(self) -> None:
        """CREATE DATABASE when it does not exist (1.x), its retention policy with the
        configured retention and :func:`shard_duration` shard groups. An existing database
        is left as it is (``ALTER RETENTION POLICY ... SHARD DURATION`` changes its shard
        groups from then on: docs/schema.md, "Retention")."""
        if any(v and v[0] == self.settings.database
               for s in self.query("SHOW DATABASES")[0] for v in s.values):
            return
        db = self.settings.database.replace('"', '\\"')
        stmt = f'CREATE DATABASE "{db}" WITH'
        if self.settings.retention != "0s":
            stmt += f" DURATION {self.settings.retention}"
        self.query(f"{stmt} SHARD DURATION {shard_duration(self.settings.retention)}")
