"""The MQTT side of the agent (paho-mqtt 2.x): drains the spool to the broker with QoS 1.

End-to-end receipts (issue 14, ``[spool] receipts = true``, the default): a PUBACK only
marks a result *sent*; the result is deleted when the collector's receipt
(:class:`netmon.contract.ReceiptMessage`, read by :func:`netmon.wire.parse_receipt`, on
``Topics.receipts(probe_id)``, subscribed with
QoS 1 on every connection) names it, after the collector wrote it to InfluxDB. Results
sent but not receipted for ``receipt_timeout_s`` are published again, oldest first, at most
``resend_batch`` per round (a round every :func:`resend_check_s`); storing twice is
idempotent on the collector. The session is clean, so a receipt the collector sends while
the agent is away (a restart, a dropped link) is lost: results sent before the current
connection came up are due already ``reconnect_receipt_s`` after it did (the receipts of
a collector still catching up come meanwhile), not a whole ``receipt_timeout_s`` later.
With ``receipts = false`` the PUBACK deletes the result, as before receipts existed.

Threads: a supervisor thread connects (a client from :func:`netmon.mqtt.new_client`: TLS,
username/password, plus the last will), runs paho's network loop for that connection
(``loop_start``) and, when the connection ends, waits a backoff with jitter
(:meth:`netmon.mqtt.ReconnectPolicy.delay`) and starts over with a *fresh* client, so
nothing queued inside an old client is ever sent twice. The password file is read again
for every attempt, so fixing it needs no restart. Everything else (the spool, which
results are in flight) lives in the asyncio thread; paho callbacks reach it with
``call_soon_threadsafe``.

Write-behind (``[spool] write_delay_s``, issue 20): while a connection is up the spool
holds new results in memory; the publisher turns holding on when the broker accepts a
connection and off (everything held is committed at once: no receipt can come on a clean
session that is gone) when it ends, and lets the spool commit, on its own schedule
(:meth:`agent.spool.Spool.tick`), the results whose receipt did not come in time.

Watch (``Publisher.watch``, the health check of an agent version on trial, see
:class:`agent.update.TrialHealth`): while set, it sees every result payload published
and the ids of the results acknowledged end to end (receipted, or PUBACKed with
``receipts = false``).

Status: on every connection a retained ``online`` status; a heartbeat every
``heartbeat_s``; the will (retained ``offline``) when the probe vanishes; an explicit
retained ``offline`` on a clean shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from agent.spool import Spool, SpoolError
from netmon.configfile import SecretFileError
from netmon.mqttclient import ReconnectPolicy, new_client
from netmon.wire import WireError, encode_status, parse_receipt

log = logging.getLogger("netmon.agent.publisher")

#: Acknowledged results are deleted in batches: at most this many or this old.
ACK_BATCH = 256
ACK_DELAY_S = 0.05
#: With receipts (the service), PUBACKs are recorded this long after they come: a result
#: whose receipt arrives first (the usual case: the collector receipts within about a
#: second) is deleted without ever being marked sent, one SD-card transaction less per
#: result (issue 20). A crash in between costs a duplicate (the row counts as unsent and
#: goes again, stored idempotently), never a result.
RECEIPT_ACK_DELAY_S = 5.0
#: At most one warning this often for repeated spool write failures / bad receipts.
WARN_EVERY_S = 60.0


def resend_check_s(receipt_timeout_s: float) -> float:
    """How often the publisher looks for results overdue for a receipt: a tenth of the
    timeout, between 1 and 30 s (so an overdue result waits at most that much longer)."""
    return min(max(receipt_timeout_s / 10, 1.0), 30.0)


class BrokerFields(Protocol):
    """What the publisher reads of ``[broker]``: :class:`agent.config.BrokerConfig`
    (validated) or :class:`agent.runconfig.Broker` (the run time's)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def keepalive_s(self) -> int: ...
    @property
    def client_id(self) -> str | None: ...
    @property
    def max_inflight(self) -> int: ...
    def tls_context(self) -> ssl.SSLContext | None: ...
    def credentials(self, default_username: str | None = None
                    ) -> tuple[str, str | None] | None: ...
    def reconnect_policy(self) -> ReconnectPolicy: ...


class SpoolFields(Protocol):
    """What the publisher reads of ``[spool]`` (``SpoolConfig`` or ``runconfig.Spool``)."""

    @property
    def receipt_timeout_s(self) -> float: ...
    @property
    def reconnect_receipt_s(self) -> float: ...
    @property
    def resend_batch(self) -> int: ...


def last_will(status: Mapping[str, Any]) -> bytes:
    """The retained ``offline`` status the broker sends when the probe vanishes: no
    ``at`` or uptime, so the collector stamps it with the time it arrives, not the time
    of the connect that set it."""
    return encode_status({**status, "at": None, "uptime_s": None})


class ResultWatch(Protocol):
    """What :attr:`Publisher.watch` is told (see "Watch" in the module docstring)."""

    def published(self, payload: bytes) -> str | None:
        """A result is being sent; its id when it is watched."""

    def acknowledged(self, ids: Iterable[str]) -> None:
        """Results acknowledged end to end."""


@dataclass
class ConnectionInfo:
    """What ``status`` and the status file show about the broker connection."""

    connected: bool = False
    last_error: str | None = None
    connected_since: float | None = None
    attempts: int = 0
    published: int = 0
    acked: int = 0
    #: Results published again because no receipt came within the timeout.
    resent: int = 0
    #: Receipt messages accepted, and spooled results they deleted.
    receipts: int = 0
    receipted: int = 0
    #: Receipt messages refused (bad JSON, wrong probe, ...).
    bad_receipts: int = 0


class Publisher:
    """Publish spooled results and status messages; see the module docstring."""

    def __init__(self, cfg: BrokerFields, probe_id: str, status_topic: str, spool: Spool,
                 status: Callable[[str], Mapping[str, Any]],
                 rng: random.Random | None = None,
                 announce: bool = True, client_id: str | None = None,
                 spool_cfg: SpoolFields | None = None, receipts: bool = False,
                 receipts_topic: str | None = None) -> None:
        """``receipts``: a PUBACK marks a result sent, only a receipt deletes it (False:
        the PUBACK deletes it). ``receipts_topic``: where this client receives receipts
        (the service; ``once`` leaves its results to the service). ``spool_cfg`` gives the
        receipt timeout and resend batch (default: the config's defaults). ``status``
        gives the status message's fields (the contract's ``StatusMessage``) for a state,
        written with :func:`netmon.wire.encode_status`."""
        self.cfg = cfg
        self.probe_id = probe_id
        self.status_topic = status_topic
        self.spool = spool
        self._status = status
        # announce=False (``netmon-agent once`` next to the service): no will, no status
        # messages, and its own client id so the service's session is not kicked off.
        self.announce = announce
        self.client_id = client_id or cfg.client_id or probe_id
        self._rng = rng or random.Random()
        self._reconnect = cfg.reconnect_policy()
        self.info = ConnectionInfo()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._generation = 0
        self._stopping = threading.Event()
        self._down = threading.Event()
        self._thread: threading.Thread | None = None
        # asyncio-side state
        self._inflight: dict[int, int] = {}  # mid -> spool seq
        self._cursor = 0  # highest seq handed to the current connection
        self._acks: list[int] = []
        self._ack_at: list[float] = []  # when each of _acks came (monotonic)
        self._ack_timer: asyncio.TimerHandle | None = None
        #: Result id of each seq published on this connection, while its PUBACK is not
        #: recorded yet (only with receipts): a receipt naming it drops the pending ack.
        self._ids: dict[int, str] = {}
        #: Pending acks a receipt made moot, counted as acknowledged with its deletes.
        self._moot_acks = 0
        self._wake = asyncio.Event()
        self._status_mids: dict[int, asyncio.Future[None]] = {}
        self._pump_task: asyncio.Task[None] | None = None
        self._connected_evt = asyncio.Event()
        self._bg: set[asyncio.Future[None]] = set()
        self._subs: dict[str, Callable[[bytes], None]] = {}
        #: See "Watch" in the module docstring; set by the runtime while on trial.
        self.watch: ResultWatch | None = None
        self._watch_ids: dict[int, str] = {}  # seq -> id of watched results (PUBACK path)
        if spool_cfg is None:  # tests and tools; the agent passes its own (no pydantic)
            from agent.config import SpoolConfig

            spool_cfg = SpoolConfig()
        self.receipts = receipts
        # Only the client that receives receipts resends: ``once`` leaves that to the service.
        self._resends = receipts and receipts_topic is not None
        self.receipt_timeout_s = spool_cfg.receipt_timeout_s
        # Well inside the receipt timeout, so a short timeout still resends on time.
        self._ack_delay = min(RECEIPT_ACK_DELAY_S, self.receipt_timeout_s / 4) \
            if self._resends else ACK_DELAY_S
        self.resend_batch = spool_cfg.resend_batch
        self._resend_every = resend_check_s(spool_cfg.receipt_timeout_s)
        self._next_resend_check = 0.0
        self._reconnect_receipt_s = min(spool_cfg.reconnect_receipt_s,
                                        spool_cfg.receipt_timeout_s)
        #: When the current connection came up (wall, monotonic); None while down.
        self._up_since: tuple[float, float] | None = None
        self._resend_queue: list[int] = []  # seqs picked for resending, oldest first
        self._resend_entries: dict[int, tuple[str, bytes]] = {}
        self._receipted: set[str] = set()  # ids named by receipts, not yet deleted
        self._retry_flush = False  # the last flush failed (spool write error)
        self._warned: dict[str, float] = {}
        if receipts_topic is not None:
            self._subs[receipts_topic] = self._on_receipt

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start connecting in the background; returns at once."""
        self._loop = asyncio.get_running_loop()
        self._pump_task = asyncio.create_task(self._pump(), name="mqtt-pump")
        self._thread = threading.Thread(target=self._supervise, name="mqtt", daemon=True)
        self._thread.start()

    async def stop(self, timeout: float = 3.0) -> None:
        """Publish the retained offline status (waiting up to ``timeout`` for its PUBACK),
        flush acknowledgements and disconnect."""
        if self._loop is None:
            return
        self._flush_acks()
        if self.info.connected and self.announce:
            try:
                await asyncio.wait_for(self.publish_status("offline"), timeout)
            except (TimeoutError, ConnectionError):
                log.warning("offline status not acknowledged before shutdown")
        self._flush_acks()
        self._stopping.set()
        client = self._client
        if client is not None:
            client.disconnect()
        self._down.set()
        if self._pump_task:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
        if self._thread:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10)
        self._flush_acks()

    def add_subscription(self, topic: str, callback: Callable[[bytes], None]) -> None:
        """Subscribe (QoS 1, on every connection) to ``topic``; ``callback(payload)`` runs
        on the event loop for each message (used by remote configuration)."""
        self._subs[topic] = callback
        client = self._client
        if client is not None and self.info.connected:
            client.subscribe(topic, qos=1)

    def notify(self) -> None:
        """New results are in the spool: publish them if connected."""
        self._wake.set()

    @property
    def connected(self) -> bool:
        """True while a connection is accepted by the broker."""
        return self.info.connected

    async def wait_connected(self, timeout: float) -> bool:
        """Wait until connected (True) or ``timeout`` passed (False)."""
        try:
            await asyncio.wait_for(self._connected_evt.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def drain(self, timeout: float) -> bool:
        """Wait until the broker has acknowledged everything spooled (True) or ``timeout``
        passed (False). With receipts the results stay spooled, marked sent, until their
        receipts come (the service deletes them: it is the one subscribed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._flush_acks()
            if not self._acks and not self.spool.peek(limit=1):
                return True
            self._wake.set()
            await asyncio.sleep(0.05)
        self._flush_acks()
        return not self._acks and not self.spool.peek(limit=1)

    # ------------------------------------------------------------------ status

    async def publish_status(self, state: str = "online", timeout: float = 30.0) -> None:
        """Publish a retained status and wait for its PUBACK (ConnectionError when not
        connected or the connection drops, TimeoutError after ``timeout``)."""
        client = self._client
        if client is None or not self.info.connected:
            raise ConnectionError("not connected to the broker")
        payload = encode_status(self._status(state))
        info = client.publish(self.status_topic, payload, qos=1, retain=True)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ConnectionError(mqtt.error_string(info.rc))
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        self._status_mids[info.mid] = fut
        try:
            await asyncio.wait_for(fut, timeout)
        finally:
            self._status_mids.pop(info.mid, None)

    # ------------------------------------------------------------------ supervisor thread

    def _supervise(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            self._generation += 1
            gen = self._generation
            self._down.clear()
            self.info.attempts += 1
            client = self._setup(gen)
            if client is not None:
                self._connect(client)
            was_up = self.info.connected_since is not None and \
                time.monotonic() - self.info.connected_since > 30
            self._set_connected(False, gen)
            if self._stopping.is_set():
                break
            attempt = 0 if was_up else attempt + 1
            delay = self._reconnect.delay(attempt, self._rng)
            log.info("reconnecting to %s:%d in %.1f s", self.cfg.host, self.cfg.port, delay)
            self._stopping.wait(delay)

    def _setup(self, gen: int) -> mqtt.Client | None:
        """A fresh client for this attempt, or None (error recorded) when the password or
        TLS files cannot be used: the attempt fails and is retried after the backoff."""
        try:
            return self._new_client(gen)
        except SecretFileError as exc:
            self._fail(f"cannot read broker.password_file: {exc.why}")
        except ssl.SSLError as exc:
            self._fail(f"broker TLS files (ca_file, cert_file, key_file): {exc.reason or exc}")
        except (OSError, ValueError) as exc:
            self._fail(f"broker TLS files (ca_file, cert_file, key_file): {exc}")
        return None

    def _connect(self, client: mqtt.Client) -> None:
        """Connect and run the network loop until the connection ends."""
        try:
            client.connect(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        except ssl.SSLError as exc:
            self._fail(f"TLS handshake with {self.cfg.host}:{self.cfg.port} failed: "
                       f"{exc.reason or exc}")
        except (OSError, ValueError) as exc:
            self._fail(f"cannot connect to {self.cfg.host}:{self.cfg.port}: {exc}")
        else:
            self._client = client
            client.loop_start()
            self._down.wait()
            client.loop_stop()
            self._client = None

    def _new_client(self, gen: int) -> mqtt.Client:
        cfg = self.cfg
        # MQTT 3.1.1 with a clean session: the spool, not the broker, keeps what is unsent.
        client = new_client(cfg, client_id=self.client_id,
                            protocol=MQTTProtocolVersion.MQTTv311, clean_session=True,
                            reconnect=self._reconnect,
                            credentials=cfg.credentials(default_username=self.probe_id))
        client.max_inflight_messages_set(cfg.max_inflight)
        if self.announce:
            client.will_set(self.status_topic, last_will(self._status("offline")), qos=1,
                            retain=True)
        client.on_connect = lambda c, u, f, rc, p: self._on_connect(c, gen, rc)
        client.on_disconnect = lambda c, u, f, rc, p: self._on_disconnect(gen, rc)
        client.on_publish = lambda c, u, mid, rc, p: self._on_publish(gen, mid, rc)
        client.on_message = lambda c, u, msg: self._on_message(msg)
        return client

    def _on_connect(self, client: mqtt.Client, gen: int, rc: ReasonCode) -> None:
        if rc.is_failure:
            hint = ""
            if rc.getName() in ("Not authorized", "Bad user name or password"):
                hint = " (check broker.username and broker.password_file)"
            self._fail(f"broker {self.cfg.host}:{self.cfg.port} refused the connection: "
                       f"{rc.getName()}{hint}")
            client.disconnect()
            self._down.set()
            return
        log.info("connected to %s:%d", self.cfg.host, self.cfg.port)
        self.info.last_error = None
        for topic in list(self._subs):
            client.subscribe(topic, qos=1)
        self._set_connected(True, gen)

    def _on_disconnect(self, gen: int, rc: ReasonCode) -> None:
        if not self._stopping.is_set() and self.info.connected:
            log.warning("disconnected from %s:%d: %s", self.cfg.host, self.cfg.port,
                        rc.getName())
        self._down.set()

    def _on_publish(self, gen: int, mid: int, rc: ReasonCode) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            self._loop.call_soon_threadsafe(self._acked, gen, mid, rc.is_failure)

    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        for topic, callback in list(self._subs.items()):
            if mqtt.topic_matches_sub(topic, msg.topic):
                assert self._loop is not None
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(callback, bytes(msg.payload))

    def _fail(self, text: str) -> None:
        if text != self.info.last_error:
            log.error("%s", text)
        self.info.last_error = text

    def _set_connected(self, up: bool, gen: int) -> None:
        if self.info.connected == up:
            return
        self.info.connected = up
        self.info.connected_since = time.monotonic() if up else None
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._connection_changed, up, gen)

    # ------------------------------------------------------------------ asyncio side

    def _connection_changed(self, up: bool, gen: int) -> None:
        if up:
            self._up_since = (time.time(), time.monotonic())
            self._hold(True)
            self._connected_evt.set()
            if self.announce:
                task = asyncio.ensure_future(self._announce())
                self._bg.add(task)
                task.add_done_callback(self._bg.discard)
        else:
            self._up_since = None
            self._connected_evt.clear()
            self._flush_acks()
            self._hold(False)  # after the acks: held rows go to the file marked sent
            # Whatever was in flight is still in the spool; the next connection sends it
            # again from the oldest.
            self._inflight.clear()
            self._ids = {seq: self._ids[seq] for seq in self._acks if seq in self._ids}
            self._watch_ids.clear()  # unacknowledged: published (and watched) again
            self._cursor = 0
            self._resend_queue.clear()
            self._resend_entries.clear()
            self._next_resend_check = 0.0
            for fut in self._status_mids.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection lost"))
            self._status_mids.clear()
        self._wake.set()

    def _hold(self, up: bool) -> None:
        """Write-behind follows the connection: results wait in memory for a receipt
        only while one can come."""
        try:
            self.spool.set_holding(up)
        except SpoolError as exc:
            # Still held; the pump's next spool tick tries again.
            self._warn("hold", f"{exc}; will retry")

    def _spool_tick(self) -> float | None:
        """Let the spool commit what waited long enough; seconds until the next tick."""
        try:
            return self.spool.tick()
        except SpoolError as exc:
            self._warn("write-behind", f"{exc}; will retry")
            return 5.0

    async def _announce(self) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError):
            await self.publish_status("online")

    def _acked(self, gen: int, mid: int, failed: bool) -> None:
        fut = self._status_mids.pop(mid, None)
        if fut is not None:
            if not fut.done():
                fut.set_result(None)
            return
        seq = self._inflight.pop(mid, None)
        if seq is None:
            return
        if failed:  # MQTT 5 only; stays spooled and goes again on the next connection
            log.warning("broker refused result seq %d", seq)
            return
        self.info.acked += 1
        wid = self._watch_ids.pop(seq, None)
        if wid is not None and self.watch is not None:
            self.watch.acknowledged([wid])
        self._acks.append(seq)
        self._ack_at.append(time.monotonic())
        if len(self._acks) >= ACK_BATCH:
            self._flush_acks()
        elif self._ack_timer is None and self._loop is not None:
            self._ack_timer = self._loop.call_later(self._ack_delay, self._flush_aged_acks)
        self._wake.set()

    def _flush_aged_acks(self) -> None:
        """The timer: record the PUBACKs at least ``_ack_delay`` old, then wait for the
        next one to age."""
        self._ack_timer = None
        cutoff = time.monotonic() - self._ack_delay
        aged = sum(1 for at in self._ack_at if at <= cutoff)
        self._flush_acks(aged)
        if self._acks and self._ack_timer is None and self._loop is not None:
            self._ack_timer = self._loop.call_later(
                max(0.0, self._ack_at[0] + self._ack_delay - time.monotonic()),
                self._flush_aged_acks)

    def _flush_acks(self, count: int | None = None) -> None:
        """Record the oldest ``count`` pending PUBACKs (all by default) in the spool."""
        if count is None and self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if self._acks and count != 0:
            n = len(self._acks) if count is None else count
            acks, self._acks = self._acks[:n], self._acks[n:]
            times, self._ack_at = self._ack_at[:n], self._ack_at[n:]
            try:
                if self.receipts:
                    self.spool.mark_sent(acks)
                else:
                    self.spool.ack(acks)
                self._retry_flush = False
                for seq in acks:
                    self._ids.pop(seq, None)
            except SpoolError as exc:
                # Disk full: keep them for the next flush. Until then they count as unsent
                # and go again after a reconnect: at least once, never lost.
                self._acks = acks + self._acks
                self._ack_at = times + self._ack_at
                self._retry_flush = True  # the pump tries again on its next round
                self._warn("acks", f"{exc}; will retry")
        self._apply_receipts()

    # ------------------------------------------------------------------ receipts

    def _on_receipt(self, payload: bytes) -> None:
        """A receipt arrived (event loop): delete the results it names."""
        try:
            receipt = parse_receipt(payload, self.probe_id)
        except WireError as exc:
            self.info.bad_receipts += 1
            self._warn("receipt", "ignored a receipt that breaks the contract: "
                                  f"{exc.reason}: {exc.detail}")
            return
        self.info.receipts += 1
        named = {str(i) for i in receipt.ids}
        if self.watch is not None:
            self.watch.acknowledged(named)
        self._receipted.update(named)
        if self._acks and self._ids:
            # Their rows are deleted now: marking them sent first would only write.
            pending = list(zip(self._acks, self._ack_at, strict=True))
            keep = [(seq, at) for seq, at in pending if self._ids.get(seq) not in named]
            for seq, _ in pending:
                if self._ids.get(seq) in named:
                    del self._ids[seq]
            self._moot_acks += len(pending) - len(keep)
            self._acks = [seq for seq, _ in keep]
            self._ack_at = [at for _, at in keep]
        self._apply_receipts()

    def _apply_receipts(self) -> None:
        if not self._receipted:
            return
        ids = list(self._receipted)
        try:
            self.info.receipted += self.spool.receipt(ids, acked=self._moot_acks)
            self._moot_acks = 0
        except SpoolError as exc:
            # Kept in memory and tried again on the next flush; if the agent dies first,
            # the results are resent after the timeout and receipted again.
            self._warn("receipt-delete", f"{exc}; will retry")
            return
        self._receipted.difference_update(ids)

    def _warn(self, key: str, text: str) -> None:
        now = time.monotonic()
        if now - self._warned.get(key, -WARN_EVERY_S) >= WARN_EVERY_S:
            self._warned[key] = now
            log.warning("%s", text)

    async def _pump(self) -> None:
        window = self.cfg.max_inflight
        while True:
            # Woken by new results and PUBACKs; with receipts also every resend check.
            timeout = self._resend_every if self._resends else \
                (1.0 if self._retry_flush or self._receipted else None)
            if self._resends and self.info.connected:
                # A check set sooner than a round away (reconnect_receipt_s) is kept.
                left = self._next_resend_check - time.monotonic()
                if 0 < left < self._resend_every:
                    timeout = left + 0.01
            # Write-behind: held results are committed when their delay passes.
            tick = self._spool_tick()
            if tick is not None:
                timeout = tick if timeout is None else min(timeout, tick)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            if self._retry_flush or self._receipted:
                self._flush_acks()  # retries after a spool write failure
            client = self._client
            if client is None or not self.info.connected:
                continue
            if self._resends:
                self._pick_overdue()
                if not self._send_overdue(client, window):
                    continue
            while len(self._inflight) < window:
                entries = self.spool.peek(self._cursor, window - len(self._inflight))
                if not entries:
                    break
                sent_all = True
                for entry in entries:
                    info = client.publish(entry.topic, entry.payload, qos=1)
                    if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        sent_all = False  # connection going down; resent after reconnect
                        break
                    self._inflight[info.mid] = entry.seq
                    self._watched(entry.seq, entry.payload)
                    if self._resends:
                        self._ids[entry.seq] = entry.id
                    self._cursor = entry.seq
                    self.info.published += 1
                if not sent_all:
                    break

    def _watched(self, seq: int, payload: bytes) -> None:
        if self.watch is None:
            return
        wid = self.watch.published(payload)
        if wid is not None and not self.receipts:
            self._watch_ids[seq] = wid

    def _pick_overdue(self) -> None:
        """Once per check interval, queue up to ``resend_batch`` results whose receipt is
        overdue (oldest first); the queue drains before the next pick."""
        now = time.monotonic()
        if self._resend_queue or now < self._next_resend_check:
            return
        self._next_resend_check = now + self._resend_every
        wall = time.time()
        sent_before = wall - self.receipt_timeout_s
        if self._up_since is not None:
            up_wall, up_mono = self._up_since
            if now >= up_mono + self._reconnect_receipt_s:
                # Sent before this connection: a receipt sent while the agent was away went
                # nowhere (clean session), and a collector catching up has had its time.
                sent_before = max(sent_before, up_wall)
            else:
                self._next_resend_check = min(self._next_resend_check,
                                              up_mono + self._reconnect_receipt_s)
        # In flight, or acknowledged with the PUBACK not recorded yet: not overdue.
        entries = self.spool.due(sent_before, self.resend_batch,
                                 exclude=[*self._inflight.values(), *self._acks], now=wall)
        if entries:
            log.info("no receipt within %g s (or since before this connection) for %d "
                     "result(s): publishing them again", self.receipt_timeout_s, len(entries))
        self._resend_queue = [e.seq for e in entries]
        self._resend_entries = {e.seq: (e.topic, e.payload) for e in entries}

    def _send_overdue(self, client: mqtt.Client, window: int) -> bool:
        """Publish queued overdue results while the window allows; False when the
        connection is going down."""
        while self._resend_queue and len(self._inflight) < window:
            seq = self._resend_queue[0]
            topic, payload = self._resend_entries[seq]
            info = client.publish(topic, payload, qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return False
            self._resend_queue.pop(0)
            del self._resend_entries[seq]
            self._inflight[info.mid] = seq  # its PUBACK renews sent_at
            self._watched(seq, payload)
            self.info.published += 1
            self.info.resent += 1
        return True
