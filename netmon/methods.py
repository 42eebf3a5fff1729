"""The measurement methods, as both sides know them: one declaration per method.

A :class:`Declaration` is everything about a method that is not the measurement itself:
its name (the ``method`` of a ``[tests.<name>]`` table and of a result), its kind, the
options model that validates its table, and a one-line description (the table in
``docs/methods.md``, checked by ``tests/agent/methods/test_registry.py``). The
declarations themselves are in :mod:`netmon.declarations` (no pydantic: the probe's run
time reads them), each naming its options model here; this module holds the models and
re-exports the declarations.

It lives in the core, not beside the implementation, because the collector and the NOC
tools validate results (:mod:`netmon.contract`) and test plans (:mod:`netmon.plan`)
without importing the agent: the agent pulls in the HTTP engine, speedtest-cli and about
twenty modules the NOC never runs. The implementations are ``agent/methods/<name>.py``,
one line each in ``agent/methods/registry.py``; see "Adding a method" in
``docs/methods.md``.

This module imports nothing first-party but :mod:`netmon.declarations`, so
:mod:`netmon.contract` can derive its method set and groups from :data:`DECLARATIONS`
without an import cycle.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The declarations live apart, without the models (the probe's run time reads them
# without pydantic); re-exported so both sides keep finding them here.
from netmon.declarations import (
    DECLARATIONS,
    DNS,
    HTTP,
    HTTP_LATENCY,
    ICMP,
    IPERF3,
    IPV6,
    REACHABILITY,
    RESPONSIVENESS,
    SPEEDTEST,
    SPEEDTEST_NET,
    TCP,
    Declaration,
    HostPort,
    Kind,
    declare,
    declared,
    split_host_port,
)

__all__ = [
    "DECLARATIONS", "DNS", "HTTP", "HTTP_LATENCY", "ICMP", "IPERF3", "IPV6", "LOCAL",
    "REACHABILITY", "RESPONSIVENESS", "SPEEDTEST", "SPEEDTEST_NET", "TARGET", "TCP",
    "Declaration", "DeviceOptions", "DnsOptions", "HostPort", "HttpLatencyOptions",
    "HttpOptions", "IcmpOptions", "Iperf3Options", "Ipv6Options", "Kind", "LatencyOptions",
    "MethodOptions", "ReachabilityOptions", "ResponsivenessOptions", "Role",
    "SpeedtestOptions", "TcpOptions", "ThroughputOptions", "declare", "declared",
    "option_roles", "split_host_port",
]

# --------------------------------------------------------------------------- option roles


class Role(Enum):
    """What an option names, for the remote-config rules (``agent/remote_config.py``).

    Marked on the option's type (``Annotated[str, TARGET]``) so that a new method's
    host-valued option is covered by the allowlist without anyone editing a list.
    """

    #: A host, address, ``host:port``, URL or endpoint the probe will contact: a signed
    #: remote plan may only name hosts in the probe's allowlist.
    TARGET = "target"
    #: A local executable or file: never settable by a remote plan.
    LOCAL = "local"


TARGET = Role.TARGET
LOCAL = Role.LOCAL


def option_roles(options: type[BaseModel]) -> dict[str, Role]:
    """Option name -> role, for every marked option of an options model."""
    roles: dict[str, Role] = {}
    for name, info in options.model_fields.items():
        for meta in info.metadata:
            if isinstance(meta, Role):
                roles[name] = meta
    return roles


# --------------------------------------------------------------------------- shared options


class MethodOptions(BaseModel):
    """Options shared by every method; each method subclasses this with its own keys."""

    # Built when first validated: a probe builds only the options of the methods its
    # plan names (issue 20).
    model_config = ConfigDict(extra="forbid", defer_build=True)

    target: Annotated[str, TARGET] = Field(
        min_length=1, description="host, host:port or URL to measure against")
    timeout_s: float = Field(60.0, gt=0, le=3600, description="hard limit for the whole test")


class ThroughputOptions(MethodOptions):
    """Keys every throughput method has (loaded latency and cross-traffic)."""

    loaded_latency: bool = Field(True, description="measure idle and loaded RTT (ICMP)")
    latency_target: Annotated[str | None, TARGET] = Field(
        None, description="host to ping for idle/loaded RTT (default: the test server)")
    latency_interval_s: float = Field(0.1, ge=0.02, le=5, description="loaded RTT sampling")
    cross_traffic_share: float = Field(
        0.1, ge=0, le=10,
        description="flag the result when other traffic on the link exceeds this share of "
                    "the test's own throughput")


class LatencyOptions(MethodOptions):
    """Keys every latency method has: ``count`` probes ``interval_s`` apart, each with
    ``probe_timeout_s``."""

    count: int = Field(10, ge=1, le=1000, description="probes per test")
    interval_s: float = Field(0.2, ge=0.005, le=60, description="seconds between probes")
    probe_timeout_s: float = Field(2.0, gt=0, le=60, description="wait for one answer")
    timeout_s: float = Field(60.0, gt=0, le=3600, description="hard limit for the whole test")


# --------------------------------------------------------------------------- throughput


class DeviceOptions(BaseModel):
    """Keys naming the probe's own throughput ceiling (``agent/methods/common/device.py``):
    the board model is read from ``device_model_file`` unless ``device_model`` overrides
    it; ``device_ceiling_mbps`` (e.g. 150 for a Cat 4 USB modem) overrides the table."""

    device_model_file: Annotated[str, LOCAL] = Field(
        "/proc/device-tree/model", min_length=1,
        description="file holding the board model (the device tree's model string)")
    device_model: str | None = Field(
        None, min_length=1, max_length=200,
        description="board model, instead of reading device_model_file")
    device_ceiling_mbps: float | None = Field(
        None, gt=0, le=100_000, description="download ceiling of this device/link, Mb/s")
    device_ceiling_upload_mbps: float | None = Field(
        None, gt=0, le=100_000, description="upload ceiling (default: the download one)")
    device_ceiling_share: float = Field(
        0.9, gt=0, le=1, description="flag at_device_ceiling at this share of the ceiling")
    cpu_bound_pct: float = Field(
        90.0, gt=0, le=100,
        description="flag cpu_bound when the measuring thread used this much CPU")


class Iperf3Options(ThroughputOptions, DeviceOptions):
    """``[tests.<name>]`` keys for ``method = "iperf3"``; ``target`` is ``host[:port]``."""

    direction: Literal["download", "upload", "both"] = "both"
    port: int = Field(5201, ge=1, le=65535, description="server port when target has none")
    streams: int = Field(4, ge=1, le=128, description="parallel streams (-P)")
    duration_s: int = Field(10, ge=1, le=120, description="measured seconds (-t)")
    omit_s: int = Field(2, ge=0, le=30, description="warm-up seconds not counted (-O)")
    busy_retries: int = Field(3, ge=0, le=20, description="retries when the server is busy")
    busy_backoff_s: float = Field(2.0, ge=0, le=120, description="first wait, doubled each try")
    binary: Annotated[str, LOCAL] = Field("iperf3", min_length=1,
                                          description="iperf3 executable")
    timeout_s: float = Field(120.0, gt=0, le=3600, description="hard limit for the whole test")

    @model_validator(mode="after")
    def _timeout_fits(self) -> Iperf3Options:
        runs = 2 if self.direction == "both" else 1
        need = runs * (self.duration_s + self.omit_s + 2)
        if self.timeout_s < need:
            raise ValueError(f"timeout_s ({self.timeout_s:g}) is shorter than the test needs "
                             f"({need:g} s for direction={self.direction}, "
                             f"duration_s={self.duration_s}, omit_s={self.omit_s})")
        return self


class SpeedtestOptions(ThroughputOptions):
    """``[tests.<name>]`` keys for ``method = "speedtest"``; ``target`` is
    ``"speedtest.net"`` or the URL of a self-hosted server's ``upload.php``."""

    direction: Literal["download", "upload", "both"] = "both"
    server_ids: list[int] = Field(default_factory=list,
                                  description="speedtest.net server ids to choose from")
    length_s: int = Field(10, ge=1, le=60, description="seconds per direction (testlength)")
    download_threads: int = Field(8, ge=1, le=64)
    upload_threads: int = Field(8, ge=1, le=64)
    threads_per_url: int = Field(4, ge=1, le=16, description="requests per image size")
    secure: bool = Field(True, description="HTTPS to speedtest.net (HTTP gets 403)")
    timeout_s: float = Field(120.0, gt=0, le=3600, description="hard limit for the whole test")

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        if value == SPEEDTEST_NET:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f'target must be "{SPEEDTEST_NET}" or the http(s):// URL of a '
                             "self-hosted server's upload.php")
        return value


def _http_base_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("target must be an http:// or https:// URL of the measurement server")
    return value.rstrip("/")


class HttpOptions(ThroughputOptions, DeviceOptions):
    """``[tests.<name>]`` keys for ``method = "http"``; ``target`` is the server's base URL
    (``http://host[:port]`` or ``https://host[:port]``)."""

    direction: Literal["download", "upload", "both"] = "both"
    download_path: str = Field("/download/blob.bin", pattern=r"^/\S*$",
                               description="object to GET (LibreSpeed: /garbage.php?ckSize=100)")
    upload_path: str = Field("/upload", pattern=r"^/\S*$",
                             description="sink to POST to (LibreSpeed: /empty.php)")
    streams: int = Field(4, ge=1, le=64, description="parallel connections")
    duration_s: float = Field(10.0, ge=1, le=120, description="per direction, warm-up included")
    warmup_s: float = Field(2.0, ge=0, le=60, description="slow start excluded from goodput")
    sample_interval_s: float = Field(0.1, ge=0.05, le=0.25)
    connect_timeout_s: float = Field(5.0, gt=0, le=60)
    #: A file on the probe: remote plans may not point the trust anchor elsewhere.
    ca_file: Annotated[str | None, LOCAL] = Field(
        None, min_length=1,
        description="PEM CA bundle for https targets (default: the system store)")
    timeout_s: float = Field(90.0, gt=0, le=3600, description="hard limit for the whole test")

    @field_validator("target")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _http_base_url(value)

    @model_validator(mode="after")
    def _warmup_shorter(self) -> HttpOptions:
        if self.warmup_s >= self.duration_s:
            raise ValueError(f"warmup_s ({self.warmup_s:g}) must be shorter than duration_s "
                             f"({self.duration_s:g})")
        runs = 2 if self.direction == "both" else 1
        need = runs * (self.duration_s + self.connect_timeout_s) + 2
        if self.timeout_s < need:
            raise ValueError(f"timeout_s ({self.timeout_s:g}) is shorter than the test needs "
                             f"({need:g} s for direction={self.direction}, "
                             f"duration_s={self.duration_s:g})")
        return self


class ResponsivenessOptions(MethodOptions, DeviceOptions):
    """``[tests.<name>]`` keys for ``method = "responsiveness"``; ``target`` is the
    measurement server's base URL (``http(s)://host[:port]``)."""

    direction: Literal["download", "upload"] = Field(
        "download", description="which way the load-generating connections saturate")
    load_path: str = Field("/download/blob.bin", pattern=r"^/\S*$",
                           description="object the loading connections GET")
    upload_path: str = Field("/upload", pattern=r"^/\S*$",
                             description="sink the loading connections POST to")
    small_path: str = Field("/speedtest/latency.txt", pattern=r"^/\S*$",
                            description="small object each probe GETs")
    streams: int = Field(8, ge=1, le=64, description="load-generating connections")
    duration_s: float = Field(10.0, ge=2, le=60, description="seconds under load")
    warmup_s: float = Field(2.0, ge=0, le=30, description="load ramp-up before probing")
    idle_probes: int = Field(10, ge=1, le=200, description="probes before the load")
    probe_interval_s: float = Field(0.1, ge=0.02, le=5, description="one probe every ...")
    connect_timeout_s: float = Field(5.0, gt=0, le=60, description="limit per probe step")
    trim_pct: float = Field(5.0, ge=0, le=40, description="slowest share dropped (trimmed mean)")
    ca_file: Annotated[str | None, LOCAL] = Field(
        None, min_length=1,
        description="PEM CA bundle for https targets (default: the system store)")
    timeout_s: float = Field(60.0, gt=0, le=3600, description="hard limit for the whole test")

    @field_validator("target")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _http_base_url(value)

    @model_validator(mode="after")
    def _fits(self) -> ResponsivenessOptions:
        if self.warmup_s >= self.duration_s:
            raise ValueError(f"warmup_s ({self.warmup_s:g}) must be shorter than duration_s "
                             f"({self.duration_s:g})")
        # Idle probes one interval apart, the loaded phase, and one slow probe at the end.
        need = (self.idle_probes * self.probe_interval_s + self.duration_s
                + 3 * self.connect_timeout_s)
        if self.timeout_s < need:
            raise ValueError(f"timeout_s ({self.timeout_s:g}) is shorter than the test needs "
                             f"(about {need:g} s for duration_s={self.duration_s:g})")
        return self


# --------------------------------------------------------------------------- latency


class IcmpOptions(LatencyOptions):
    """``[tests.<name>]`` keys for ``method = "icmp"``; ``target`` is a host or address."""

    family: Literal["auto", "ipv4", "ipv6"] = Field("auto", description="address family")


class TcpOptions(LatencyOptions):
    """``[tests.<name>]`` keys for ``method = "tcp"``; ``target`` is ``host:port``."""

    port: int = Field(443, ge=1, le=65535, description="port when target has none")


class DnsOptions(LatencyOptions):
    """``[tests.<name>]`` keys for ``method = "dns"``; ``target`` is the resolver
    (``address`` or ``address:port``)."""

    name: str = Field("example.com", min_length=1, max_length=253, description="name to resolve")
    record: Literal["A", "AAAA"] = "A"
    port: int = Field(53, ge=1, le=65535, description="resolver port when target has none")

    @field_validator("name")
    @classmethod
    def _labels(cls, value: str) -> str:
        labels = value.rstrip(".").split(".")
        if any(not 0 < len(label) < 64 for label in labels):
            raise ValueError("each label of name must be 1-63 characters")
        return value.rstrip(".")


class HttpLatencyOptions(LatencyOptions):
    """``[tests.<name>]`` keys for ``method = "http_latency"``; ``target`` is an http:// URL
    of a small object (e.g. ``http://server/speedtest/latency.txt``)."""

    @field_validator("target")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("target must be an http:// URL")
        return value


# --------------------------------------------------------------------------- checks


class Ipv6Options(LatencyOptions):
    """``[tests.<name>]`` keys for ``method = "ipv6"``; ``target`` is a host name with
    AAAA and A records, or an IPv6 address (then set ``v4_target``)."""

    v4_target: Annotated[str | None, TARGET] = Field(
        None, description="IPv4 host to compare with")
    count: int = Field(5, ge=1, le=100)


def _check_endpoint(value: str) -> str:
    if value.startswith("icmp:"):
        if not value[5:]:
            raise ValueError(f"endpoint {value!r}: icmp: needs a host")
        return value
    hp = split_host_port(value, 0)
    if hp.port == 0:
        raise ValueError(f"endpoint {value!r} must be host:port or icmp:host")
    return value


class ReachabilityOptions(LatencyOptions):
    """``[tests.<name>]`` keys for ``method = "reachability"``: ``target`` is the first
    endpoint, ``endpoints`` more of them (``host:port`` or ``icmp:host`` each)."""

    endpoints: Annotated[list[str], TARGET] = Field(default_factory=list, max_length=64)
    count: int = Field(3, ge=1, le=100, description="probes per endpoint")

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        return _check_endpoint(value)

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        return [_check_endpoint(v) for v in value]


