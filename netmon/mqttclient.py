"""The MQTT client plumbing without pydantic: the TLS context, the reconnect policy and
the paho client factory (paho-mqtt 2.x), for every MQTT client of the project.

Split from :mod:`netmon.mqtt` (which re-exports it beside the :class:`~netmon.mqtt.
BrokerSettings` config model) so the agent's run time, which runs without pydantic
(issue 20), builds its client the same way. :func:`new_client` takes any object with a
``tls_context()`` method: the validated settings model or the run time's plain config.
"""

from __future__ import annotations

import logging
import random
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

#: Older protocol versions have known weaknesses; every broker we talk to speaks 1.2+.
TLS_MINIMUM_VERSION: Final = ssl.TLSVersion.TLSv1_2


class HasTls(Protocol):
    """What :func:`new_client` needs of the broker settings."""

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context, or None for plain MQTT."""
        ...


class _LoginFields(Protocol):
    username: str | None
    tls: bool
    ca_file: Path | None
    cert_file: Path | None
    key_file: Path | None

    def read_password(self) -> str | None: ...


class BrokerLogin:
    """How a client logs in to its broker, from the settings' fields (``username``,
    ``tls``, ``ca_file``, ``cert_file``, ``key_file``) and ``read_password()``: shared
    by the validated settings model and the agent run time's plain config."""

    def credentials(self: _LoginFields, default_username: str | None = None
                    ) -> tuple[str, str | None] | None:
        """``(username, password)`` for the CONNECT packet, or None for no login.

        Without a username (and no ``default_username``) there is no login and the
        password file is not read. With one, the password is read now, so a corrected
        file counts at the next connection.
        """
        username = self.username or default_username
        if username is None:
            return None
        password = self.read_password()
        if password is None and not self.username:
            return None  # only a default username and no password: connect anonymously
        return username, password

    def tls_context(self: _LoginFields) -> ssl.SSLContext | None:
        """The TLS context for this broker (None when ``tls`` is off); OSError or
        ssl.SSLError when a CA, certificate or key file cannot be loaded."""
        if not self.tls:
            return None
        return tls_context(self.ca_file, self.cert_file, self.key_file)


def tls_context(ca_file: Path | None = None, cert_file: Path | None = None,
                key_file: Path | None = None) -> ssl.SSLContext:
    """A client TLS context: TLS 1.2+, the server's certificate checked against
    ``ca_file`` (only that CA; default the system store) and its host name, and the
    client certificate ``cert_file`` (key in ``key_file`` or in the same PEM) if given.

    Raises OSError / ssl.SSLError when a file cannot be loaded.
    """
    # create_default_context: CERT_REQUIRED, check_hostname, and the Python version's
    # recommended options and X.509 checks.
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                     cafile=str(ca_file) if ca_file else None)
    ctx.minimum_version = TLS_MINIMUM_VERSION
    if cert_file is not None:
        ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return ctx


@dataclass(frozen=True)
class ReconnectPolicy:
    """How a client comes back after losing the broker.

    ``automatic``: paho's network loop reconnects by itself, waiting ``min_s`` doubling
    up to ``max_s`` (paho has no jitter; fine for one collector). Otherwise the owner
    reconnects (the agent starts a *fresh* client each time, so nothing queued inside an
    old one is sent twice) and waits :meth:`delay` between attempts.
    """

    min_s: float = 1.0
    max_s: float = 30.0
    automatic: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.min_s <= self.max_s:
            raise ValueError(f"reconnect delays must satisfy 0 < min ({self.min_s}) "
                             f"<= max ({self.max_s})")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Exponential backoff with jitter: uniform in [cap/2, cap], cap = min_s *
        2**attempt bounded by max_s. Jitter keeps hundreds of probes from reconnecting
        in lockstep after a broker restart."""
        cap = min(self.max_s, self.min_s * (2 ** min(attempt, 30)))
        return rng.uniform(cap / 2, cap)


def new_client(settings: HasTls, *, client_id: str, protocol: MQTTProtocolVersion,
               reconnect: ReconnectPolicy,
               credentials: tuple[str, str | None] | None = None,
               clean_session: bool | None = None, manual_ack: bool = False,
               logger: logging.Logger | None = None,
               client_class: type[mqtt.Client] = mqtt.Client) -> mqtt.Client:
    """A paho-mqtt 2.x client (callback API version 2) for ``settings``' broker.

    Applies the TLS context (:func:`tls_context`, when ``settings.tls``), the
    ``credentials`` (from :meth:`BrokerSettings.credentials`, read by the caller so it
    decides when to re-read the password file) and the reconnect policy. Queued
    outgoing messages are never dropped inside paho. ``clean_session`` is for MQTT 3.1.1
    only (v5 sets ``clean_start`` at connect). ``client_class`` is paho's ``Client`` or a
    subclass of it (the collector reads ahead: ``collector.core.mqttread``). Not yet
    connected.

    Raises OSError / ssl.SSLError when a TLS file cannot be loaded.
    """
    client = client_class(CallbackAPIVersion.VERSION2, client_id=client_id,
                          clean_session=clean_session, protocol=protocol,
                          manual_ack=manual_ack, reconnect_on_failure=reconnect.automatic)
    if logger is not None:
        client.enable_logger(logger)
    ctx = settings.tls_context()
    if ctx is not None:
        client.tls_set_context(ctx)
    if credentials is not None:
        client.username_pw_set(*credentials)
    if reconnect.automatic:
        # paho takes whole seconds.
        client.reconnect_delay_set(max(1, round(reconnect.min_s)), max(1, round(reconnect.max_s)))
    # 0 = no limit: a message handed to paho is sent or reported, never silently dropped.
    client.max_queued_messages_set(0)
    return client
