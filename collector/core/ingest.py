"""Ingest: MQTT messages in, validated points (or dead letters) out to the writer.

:func:`validate` turns one ``(topic, payload)`` into either line-protocol points or a
dead letter with a reason; it never raises, whatever the bytes. :class:`MqttIngest`
runs paho-mqtt 2.x with:

- MQTT v5, a fixed client id, ``clean_start=False`` and a Session Expiry Interval, so the
  broker keeps our subscription and queues messages while we are away (a crash or a
  restart loses nothing);
- QoS 1 subscriptions to every probe's results and status (optionally shared,
  ``$share/<group>/...``, so several collectors split the load), retain-handling 1 so a
  resumed session does not get the retained statuses again;
- ``manual_ack=True``: ``on_message`` only validates and queues; the PUBACK is sent by
  :meth:`MqttIngest.ack` after the writer has stored the point (or the dead letter).
  Acks for messages received on an earlier connection are dropped: the broker redelivers
  those, and a stale packet id could otherwise acknowledge a different message;
- a Receive Maximum (``mqtt.receive_maximum``): the broker never has more unacknowledged
  messages in flight to us, which bounds memory while InfluxDB is down;
- receipts (:meth:`MqttIngest.send_receipts`): once a batch is stored, one
  :class:`netmon.contract.ReceiptMessage` per probe (QoS 1, not retained) names the
  result ids stored, as points or as dead letters, before the batch's PUBACKs are queued.

:func:`validate` also normalises ``isp`` and ``target`` (NFC, trimmed) and bounds them
(:data:`ISP_MAX_CHARS`, :data:`TARGET_MAX_CHARS`, allowed characters; docs/protocol.md,
"Limits").
"""

from __future__ import annotations

import functools
import json
import logging
import re
import struct
import threading
import time
import unicodedata
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from collector.config import MqttSettings
from collector.core.deadletters import DeadLetter
from collector.core.integrity import content_digest
from collector.core.mqttread import ReadAheadClient
from collector.core.registry import Registry
from collector.core.schema import result_line, status_lines
from collector.core.selfmetrics import Stats
from collector.core.writer import Item
from netmon.contract import (
    MAX_MESSAGE_BYTES,
    MAX_RECEIPT_IDS,
    ContractError,
    ReceiptMessage,
    ResultMessage,
    Topics,
    parse_result,
    parse_status,
)
from netmon.mqtt import new_client

log = logging.getLogger(__name__)
_PUBACK = 0x40
_PUBACK_PACKET = struct.Struct("!BBH")
_MQTT_LOG = logging.getLogger("collector.mqtt")
# paho's network thread logs this as an ERROR once after every clean disconnect.
_MQTT_LOG.addFilter(lambda r: not str(r.msg).startswith("Client is not connected"))

#: Points before this are a probe whose clock was never set (a Pi without RTC boots in
#: 1970); InfluxDB cannot even store times before 1677.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)

#: Longest ``isp`` after normalisation (an operator's name, e.g. "Viettel").
ISP_MAX_CHARS = 64
#: Longest ``target`` after normalisation (a host name is at most 253; a URL a bit more).
TARGET_MAX_CHARS = 255
#: Besides letters, digits and combining marks (any script: Vietnamese names are fine).
ISP_PUNCTUATION = frozenset(" -_.&()/+'")
TARGET_PUNCTUATION = frozenset("-._~:/?#[]@!$&'()*+,;=%")


@functools.cache
def _ascii_ok(punctuation: frozenset[str]) -> re.Pattern[str]:
    return re.compile("[A-Za-z0-9" + re.escape("".join(sorted(punctuation))) + "]+")


def bounded_text(name: str, value: str, max_chars: int, punctuation: frozenset[str]) -> str:
    """``value`` in NFC with surrounding whitespace trimmed (and, where spaces are
    allowed, runs of whitespace made one space); ContractError ``invalid`` naming the
    field when it is empty, too long or holds a character outside the allowed set."""
    if value.isascii():
        # Fast path for the usual "VNPT" / "host:port": NFC changes no ASCII text.
        text = " ".join(value.split()) if " " in punctuation else value.strip()
        if 0 < len(text) <= max_chars and _ascii_ok(punctuation).fullmatch(text):
            return text
    text = unicodedata.normalize("NFC", value)
    text = " ".join(text.split()) if " " in punctuation else text.strip()
    if not text:
        raise ContractError("invalid", f"{name} is empty after trimming whitespace")
    if len(text) > max_chars:
        raise ContractError("invalid", f"{name} is {len(text)} characters long; at most "
                            f"{max_chars} are allowed")
    for ch in text:
        if not (ch.isalnum() or ch in punctuation
                or unicodedata.category(ch).startswith("M")):
            raise ContractError("invalid", f"{name} {text[:80]!r} contains {ch!r} "
                                f"(U+{ord(ch):04X}); allowed: letters, digits and "
                                f"{''.join(sorted(punctuation))!r}")
    return text


#: :func:`bounded_text` once per distinct value: a probe sends the same few isp and
#: target strings again and again (a refusal raises, and exceptions are never cached).
_bounded_cached = functools.lru_cache(maxsize=8192)(bounded_text)


def normalise_result(msg: ResultMessage) -> ResultMessage:
    """The result with ``isp`` and ``target`` normalised and checked (see
    :func:`bounded_text`); ContractError when they break the limits."""
    isp = _bounded_cached("isp", msg.isp, ISP_MAX_CHARS, ISP_PUNCTUATION)
    target = _bounded_cached("target", msg.target, TARGET_MAX_CHARS, TARGET_PUNCTUATION)
    if isp == msg.isp and target == msg.target:
        return msg
    return msg.model_copy(update={"isp": isp, "target": target})


def parse_result_fast(payload: bytes, probe_id: str) -> ResultMessage:
    """:func:`netmon.contract.parse_result`, with the same outcome for every payload, and
    faster for a valid one: pydantic validates the bytes directly (no ``json`` decode
    and no dict in between). Whatever that does not accept goes through
    ``parse_result`` itself, so a rejected message gets exactly its reason and detail.

    Where pydantic's JSON mode is more lenient than ``parse_result``, the fast path is
    not taken: a payload over the size limit; a missing top-level ``schema`` (the model
    has a default); a ``true`` anywhere (JSON mode takes ``"schema": true`` as 1, and no
    result field is a boolean, so only a string can hold it and that message merely goes
    the slow way). tests/collector/test_validate.py compares both on hostile payloads.
    """
    if len(payload) <= MAX_MESSAGE_BYTES and b"true" not in payload:
        try:
            msg = ResultMessage.model_validate_json(payload)
        except Exception:  # ValidationError, or anything odd: the slow way below decides
            pass
        else:
            if "schema_" in msg.model_fields_set and msg.probe_id == probe_id:
                return msg
    return parse_result(payload, probe_id)


@functools.lru_cache(maxsize=8192)
def _split_topic(prefix: str, topic: str) -> tuple[str, str]:
    # Topics repeat (one per probe and kind): ``Topics.parse`` once each. Refused
    # topics raise, and exceptions are never cached.
    return Topics(prefix).parse(topic)


def _claimed_id(payload: bytes) -> str | None:
    # A rejected result still names its id (if readable): the receipt lets the probe
    # forget it, since the dead letter keeps it on the collector's disk.
    try:
        data = json.loads(payload)
        return str(uuid.UUID(str(data["id"]))) if isinstance(data, dict) else None
    except Exception:
        return None


def validate(topic: str, payload: bytes, topics: Topics, registry: Registry,
             received_ms: int | None = None) -> Item:
    """One message -> an Item with its points, or with a dead letter. Never raises."""
    probe_id: str | None = None
    kind = ""
    try:
        probe_id, kind = _split_topic(topics.prefix, topic)
        if kind == "results":
            msg = normalise_result(parse_result_fast(payload, probe_id))
            if msg.started_at < EARLIEST:
                raise ContractError("invalid", f"started_at {msg.started_at.isoformat()} is "
                                    "before 2000 (probe clock not set?)")
            # Tagged as the registry stood when the test ran: the same point whenever the
            # message arrives (docs/schema.md, "Identity").
            site = registry.get(probe_id, msg.started_at)
            if site is None:
                raise ContractError("unknown_probe", f"probe {probe_id!r} is not in the site "
                                    "registry; add it, reload (SIGHUP) and replay")
            result_id = str(msg.id)
            try:
                lines = [result_line(msg, site, result_id)]
            except ValueError as exc:
                raise ContractError("unstorable", str(exc)) from None
            return Item(lines, source=(topic, payload), kind="result",
                        receipt=(probe_id, result_id), result=msg,
                        digest=content_digest(payload))
        if kind == "status":
            st = parse_status(payload, probe_id)
            for when in (st.at, st.started_at, st.last_result_at):
                if when is not None and when < EARLIEST:
                    raise ContractError("invalid", f"status time {when.isoformat()} is before "
                                        "2000 (probe clock not set?)")
            site = registry.get(probe_id, st.at)
            if site is None:
                raise ContractError("unknown_probe", f"probe {probe_id!r} is not in the site "
                                    "registry")
            now_ms = received_ms if received_ms is not None else int(time.time() * 1000)
            try:
                lines = status_lines(st, site, now_ms)
            except ValueError as exc:
                raise ContractError("unstorable", str(exc)) from None
            return Item(lines, source=(topic, payload), kind="status")
        raise ContractError("bad_topic", f"topic kind {kind!r} is neither results nor status")
    except ContractError as exc:
        reason, detail = exc.reason, exc.detail
    except Exception as exc:  # e.g. OverflowError, RecursionError from hostile JSON
        reason, detail = "invalid", f"{type(exc).__name__}: {exc}"
    rid = _claimed_id(payload) if kind == "results" and probe_id else None
    return Item([], dead=DeadLetter.from_raw(topic, payload, reason, detail, probe_id),
                kind="dead", receipt=(probe_id, rid) if probe_id and rid else None)


class MqttIngest:
    """The MQTT side of the collector (paho network thread)."""

    def __init__(self, settings: MqttSettings, registry: Registry, stats: Stats,
                 submit: Callable[[Item], None],
                 known_isps: Iterable[str] | None = None) -> None:
        self.settings = settings
        #: Case-folded; an ISP outside it is stored but counted (``unknown_isp``).
        self.known_isps = frozenset(i.casefold() for i in known_isps or ())
        self.registry = registry
        self.stats = stats
        self.submit = submit
        self.topics = Topics(settings.topic_prefix)
        self._gen = 0
        self._gen_lock = threading.Lock()
        self._accepting = True
        self.subscribed = threading.Event()
        self.connected = threading.Event()
        self.last_error: str | None = None
        # The password is read once: paho's reconnect loop reuses it (restart to change it).
        # new_client never drops outgoing dead-letter publishes silently inside paho.
        client = new_client(settings, client_id=settings.client_id,
                            protocol=MQTTProtocolVersion.MQTTv5, manual_ack=True,
                            reconnect=settings.reconnect_policy(),
                            credentials=settings.credentials(), logger=_MQTT_LOG,
                            client_class=ReadAheadClient)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self.client = client

    # ------------------------------------------------------------------ lifecycle

    def filters(self) -> list[str]:
        """Topic filters we subscribe to (shared when ``shared_group`` is set)."""
        base = [self.topics.all_results(), self.topics.all_status()]
        if self.settings.shared_group:
            return [f"$share/{self.settings.shared_group}/{f}" for f in base]
        return base

    def start(self) -> None:
        """Connect (asynchronously; paho reconnects by itself) and start the network thread."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.settings.session_expiry_s
        props.ReceiveMaximum = self.settings.receive_maximum
        self.client.connect_async(self.settings.host, self.settings.port,
                                  keepalive=self.settings.keepalive_s,
                                  clean_start=False, properties=props)
        self.client.loop_start()

    def pause(self) -> None:
        """Stop accepting new messages (they stay unacknowledged and come back later)."""
        self._accepting = False

    def stop(self) -> None:
        """Disconnect after the PUBACKs already queued, and stop the network thread."""
        self._accepting = False
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    # ------------------------------------------------------------------ callbacks

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                    reason: object, properties: object) -> None:
        if getattr(reason, "is_failure", False):
            self.last_error = f"broker refused connection: {reason}"
            log.error("MQTT: %s", self.last_error)
            return
        with self._gen_lock:
            self._gen += 1
        self.connected.set()
        log.info("MQTT connected to %s:%d as %r (session present: %s)", self.settings.host,
                 self.settings.port, self.settings.client_id, flags.session_present)
        opts = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        client.subscribe([(f, opts) for f in self.filters()])
        if flags.session_present and self.settings.shared_group:
            # Switched from one plain subscriber to a share group: drop the session's old
            # plain subscription, or every message would arrive twice.
            client.unsubscribe([self.topics.all_results(), self.topics.all_status()])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reason_codes: list[ReasonCode], properties: Properties) -> None:
        bad = [str(rc) for rc in reason_codes if getattr(rc, "is_failure", False)]
        if bad:
            self.last_error = f"subscription refused: {bad}"
            log.error("MQTT: %s", self.last_error)
            return
        if not self.subscribed.is_set():
            log.info("MQTT subscribed (QoS 1): %s", ", ".join(self.filters()))
        self.subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object,
                       reason: object, properties: object) -> None:
        with self._gen_lock:
            self._gen += 1  # acks for what we received so far must not reach the next session
        self.connected.clear()
        if self._accepting:
            log.warning("MQTT disconnected (%s); reconnecting", reason)

    def _on_message(self, client: mqtt.Client, userdata: object,
                    message: mqtt.MQTTMessage) -> None:
        # Runs in the network thread: parse + validate only; never raise (paho would stop).
        if not self._accepting:
            return
        try:
            item = validate(message.topic, bytes(message.payload), self.topics, self.registry)
        except Exception as exc:  # message.topic itself may be invalid UTF-8
            topic = repr(message._topic)
            item = Item([], dead=DeadLetter.from_raw(topic, bytes(message.payload), "bad_topic",
                                                     str(exc)))
        if message.qos > 0:
            item.ack = (message.mid, message.qos, self._gen)
        # Only this thread writes these counters: plain increments, no lock.
        stats = self.stats
        stats.received += 1
        if item.kind == "result":
            stats.results += 1
            if (self.known_isps and item.result is not None
                    and item.result.isp.casefold() not in self.known_isps):
                stats.unknown_isp += 1
        elif item.kind == "status":
            stats.statuses += 1
        self.submit(item)

    # ------------------------------------------------------------------ acks

    def is_stale(self, item: Item) -> bool:
        """True when the item came on a connection that has since dropped."""
        return item.ack is not None and item.ack[2] != self._gen

    def ack(self, items: list[Item]) -> None:
        """PUBACK every item received on the current connection (called by the writer)."""
        with self._gen_lock:
            gen = self._gen
            # Subscribed at QoS 1: every message with an ack is QoS 1 (PUBACK, no PUBREC).
            mids = [it.ack[0] for it in items if it.ack is not None and it.ack[2] == gen]
            queue = getattr(self.client, "_packet_queue", None)
            if mids and queue is not None:
                # One socket write for the whole batch instead of a wake-up and a send()
                # per message: the same 4-byte PUBACKs paho's ack() would queue one by one.
                queue(_PUBACK, b"".join([_PUBACK_PACKET.pack(_PUBACK, 2, m) for m in mids]),
                      0, 1)
            else:
                for mid in mids:
                    self.client.ack(mid, 1)
        self.stats.add(acked=len(mids))

    def send_receipts(self, items: list[Item], stored_dead: bool = True) -> int:
        """Publish receipts for the stored items: one message per probe per
        ``MAX_RECEIPT_IDS`` ids, QoS 1, not retained. Called by the writer's success path
        before :meth:`ack`, so the receipts are on the socket ahead of the PUBACKs.

        Items whose connection has dropped are receipted too: they *are* stored. Dead
        letters are receipted when ``stored_dead`` (they are in the durable file).
        Returns the receipt messages queued."""
        by_probe: dict[str, list[uuid.UUID]] = defaultdict(list)
        for it in items:
            if it.receipt is None or (it.dead is not None and not stored_dead):
                continue
            # The parsed result's id when there is one: parsing the string again cost
            # more than the rest of the receipt.
            by_probe[it.receipt[0]].append(it.result.id if it.result is not None
                                           else uuid.UUID(it.receipt[1]))
        sent = ids = 0
        for probe_id, rids in by_probe.items():
            topic = self.topics.receipts(probe_id)
            unique = list(dict.fromkeys(rids))
            for i in range(0, len(unique), MAX_RECEIPT_IDS):
                chunk = tuple(unique[i:i + MAX_RECEIPT_IDS])
                payload = ReceiptMessage(probe_id=probe_id, ids=chunk).to_json()
                # Queued even while disconnected (paho keeps QoS 1 messages, max_queued
                # 0); a receipt that is lost anyway makes the agent resend after its
                # timeout, which stores the same point again.
                self.client.publish(topic, payload, qos=1, retain=False)
                sent += 1
                ids += len(chunk)
        if sent:
            self.stats.add(receipts_sent=sent, receipted=ids)
        return sent

    def publish_dead(self, rec: DeadLetter) -> None:
        """Courtesy copy of a dead letter on the dead-letter topic (QoS 1)."""
        self.client.publish(self.topics.dead_letters(), rec.to_line().rstrip(b"\n"), qos=1)
