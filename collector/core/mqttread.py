"""paho-mqtt with read-ahead: the collector's subscriber reads many packets per ``recv``.

paho reads each packet with at least three ``recv`` calls (the command byte, each byte of
the remaining length, then the rest) and, with few messages of its own in flight, goes
back to ``select`` after every packet. In a backlog drain that was a third of paho's
share of the collector's CPU. :class:`ReadAheadClient` keeps paho's packet parsing,
state machine and callbacks exactly as they are and changes only where the bytes come
from:

- :class:`ReadAheadSocket` wraps the connection's socket (plain TCP or TLS): one
  ``recv`` of up to :data:`READ_SIZE` bytes fills a buffer, and paho's small reads are
  served from it. Its ``pending()`` counts the buffered bytes; paho's loop already asks
  a (TLS) socket for ``pending()`` and does not wait in ``select`` while it is non-zero,
  so a packet that is in the buffer but no longer in the kernel is never stranded;
- a whole plain QoS 1 PUBLISH (below) already in that buffer is sliced out of it in one
  step (paho reads the command byte, each length byte and the body with separate
  ``recv`` calls into a packet dictionary); a packet only partly buffered, and any
  other packet, is read by paho's own reader from the same bytes;
- ``loop_read`` handles up to :data:`READ_BURST` packets before returning to the loop
  (paho: one per message *it* has in flight, usually one), stopping as soon as no whole
  packet is left to read;
- the usual PUBLISH (MQTT v5, QoS 1, manual acknowledgement, a topic name and no
  properties) is decoded without building a ``Properties`` object per message (that
  was half of paho's remaining cost) and handed to ``on_message`` without the topic
  matcher when no topic-specific callback is registered. Every other packet, and any
  PUBLISH of another shape, goes through paho's own code.

A reconnection makes a new socket and so a new, empty buffer: bytes of one connection
never reach the next.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

#: Bytes asked of the kernel per ``recv`` (a few hundred result messages; a TLS socket
#: returns at most one record, 16 KiB, per call).
READ_SIZE = 256 * 1024
#: Packets handled per ``loop_read`` before paho's loop gets to write (PUBACKs, receipts)
#: and to its keep-alive checks again.
READ_BURST = 500
_PUBLISH_QOS1 = 0x32  # PUBLISH, QoS 1 (dup and retain bits masked off)
#: What paho's decoder gives a PUBLISH without properties; shared, so read-only.
_NO_PROPERTIES = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]


_INFO_SLOT: Any = mqtt.MQTTMessage.__dict__["info"]


class ReceivedMessage(mqtt.MQTTMessage):
    """A received PUBLISH exactly as paho builds one, except that ``info`` (the publish
    handle of an outgoing message, with a ``threading.Condition`` inside: half the
    cost of the whole message object, and nothing a received one needs) is made only
    if something asks for it."""

    __slots__ = ()

    @property
    def info(self) -> mqtt.MQTTMessageInfo:
        try:
            return _INFO_SLOT.__get__(self, ReceivedMessage)  # type: ignore[no-any-return]
        except AttributeError:
            value = mqtt.MQTTMessageInfo(self.mid)
            _INFO_SLOT.__set__(self, value)
            return value

    @info.setter
    def info(self, value: mqtt.MQTTMessageInfo) -> None:
        _INFO_SLOT.__set__(self, value)


class ReadAheadSocket:
    """A connected socket whose ``recv`` is served from a read-ahead buffer; every other
    attribute is the wrapped socket's."""

    __slots__ = ("_buf", "_pos", "_sock")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, bufsize: int) -> bytes:
        """Up to ``bufsize`` bytes: from the buffer, else from one large ``recv`` (which
        raises BlockingIOError / ssl.SSLWantReadError, or returns b"" at end of stream,
        exactly as the socket's own would)."""
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            buf = self._sock.recv(max(bufsize, READ_SIZE))
            if not buf:
                return buf
            self._buf, pos = buf, 0
        end = min(pos + bufsize, len(buf))
        self._pos = end
        return buf[pos:end]

    def pending(self) -> int:
        """Bytes readable without the kernel: the buffer's, plus a TLS socket's own."""
        inner = getattr(self._sock, "pending", None)
        return len(self._buf) - self._pos + (inner() if inner is not None else 0)

    def fileno(self) -> int:
        """The wrapped socket's descriptor (for ``select``)."""
        return int(self._sock.fileno())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class ReadAheadClient(mqtt.Client):
    """A paho client reading through :class:`ReadAheadSocket` (plain TCP and TLS; the
    websocket transport is left as paho has it)."""

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        if isinstance(sock, socket.socket):  # ssl.SSLSocket is one too
            return ReadAheadSocket(sock)
        return sock

    _read_fast = False

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Handle every whole packet already received, up to :data:`READ_BURST`."""
        try:
            for _ in range(max(max_packets, READ_BURST)):
                if self._sock is None:
                    return MQTTErrorCode.MQTT_ERR_NO_CONN
                rc = self._packet_read()
                if rc > 0:
                    return self._loop_rc_handle(rc)
                if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                    break
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        finally:
            if self._read_fast:
                # paho notes the time after every packet it reads (its keep-alive); the
                # packets taken whole are noted once per burst.
                self._read_fast = False
                with self._msgtime_mutex:
                    self._last_bytes_received = mqtt.time_func()

    _topic_callbacks = False

    def message_callback_add(self, sub: str, callback: mqtt.CallbackOnMessage) -> None:
        """paho's, noting that messages must go through the topic matcher."""
        self._topic_callbacks = True
        super().message_callback_add(sub, callback)

    def _fast_publish_ok(self) -> bool:
        return self._manual_ack and self._protocol == MQTTProtocolVersion.MQTTv5

    def _packet_read(self) -> MQTTErrorCode:
        # A whole plain QoS 1 PUBLISH already in the read-ahead buffer is taken from it in
        # one slice: paho would read it with a recv per header byte into its packet
        # dictionary. A packet that is partly in the buffer, any other packet and any
        # other shape go through paho's own reader, which then finds the same bytes.
        sock = self._sock
        if (sock.__class__ is ReadAheadSocket and self._in_packet["command"] == 0
                and self._fast_publish_ok()):
            buf, pos = sock._buf, sock._pos
            size = len(buf)
            if pos < size and buf[pos] & 0xF6 == _PUBLISH_QOS1:
                # The remaining length (MQTT 2.1.4): at most 4 bytes of 7 bits each.
                i, length, shift = pos + 1, 0, 0
                while i < size and shift <= 21:
                    byte = buf[i]
                    i += 1
                    length |= (byte & 0x7F) << shift
                    if byte < 0x80:
                        end = i + length
                        if end <= size and length >= 5:
                            slen = (buf[i] << 8) | buf[i + 1]
                            at = i + 2 + slen
                            if slen and at + 3 <= end and buf[at + 2] == 0:
                                sock._pos = end
                                self._read_fast = True
                                self._deliver(buf[pos], (buf[at] << 8) | buf[at + 1],
                                              buf[i + 2:at], buf[at + 3:end])
                                return MQTTErrorCode.MQTT_ERR_SUCCESS
                        break
                    shift += 7
        return super()._packet_read()

    def _handle_publish(self) -> MQTTErrorCode:
        # The layout is MQTT v5's (3.3): topic length and name, packet id, properties
        # length (0: none), payload. Anything else is left to paho, errors included.
        header = self._in_packet["command"]
        packet = self._in_packet["packet"]
        if (header & 0xF6 != _PUBLISH_QOS1 or not self._fast_publish_ok()
                or len(packet) < 5):
            return super()._handle_publish()
        slen = (packet[0] << 8) | packet[1]
        pos = 2 + slen
        if slen == 0 or len(packet) < pos + 3 or packet[pos + 2] != 0:
            return super()._handle_publish()
        self._deliver(header, (packet[pos] << 8) | packet[pos + 1], bytes(packet[2:pos]),
                      bytes(packet[pos + 3:]))
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _deliver(self, header: int, mid: int, topic: bytes, payload: bytes) -> None:
        # What paho's _handle_publish does for such a packet, without a Properties object
        # (and MQTTMessage.__init__'s attributes set here, ``info`` left for later).
        message = ReceivedMessage.__new__(ReceivedMessage)
        message.state = mqtt.mqtt_ms_invalid
        message.mid = mid
        message._topic = topic
        message.dup = bool(header & 0x08)
        message.qos = 1
        message.retain = bool(header & 0x01)
        message.properties = _NO_PROPERTIES
        message.payload = payload
        logger = self._logger
        if self.on_log is not None or (logger is not None
                                       and logger.isEnabledFor(logging.DEBUG)):
            self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received PUBLISH (d%d, q%d, r%d, m%d), %r, "
                           "properties=%s, ...  (%d bytes)", message.dup, message.qos,
                           message.retain, message.mid, message._topic, message.properties,
                           len(message.payload))
        message.timestamp = time.monotonic()
        self._handle_on_message(message)

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        on_message = self.on_message
        if self._topic_callbacks or on_message is None:
            super()._handle_on_message(message)
            return
        with self._in_callback_mutex:
            try:
                on_message(self, self._userdata, message)
            except Exception as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not self.suppress_exceptions:
                    raise
