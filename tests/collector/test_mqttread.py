"""The collector's read-ahead paho client (collector/core/mqttread.py) against a real
mosquitto, plain and TLS: every message arrives whole, in order, with its properties,
across buffer boundaries; and the buffered socket on a real socket pair."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion, _ConnectionState
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from collector.core.mqttread import READ_SIZE, ReadAheadClient, ReadAheadSocket
from netmon.mqtt import BrokerSettings, ReconnectPolicy, new_client
from tests.helpers.agent import start_tls_mosquitto


def test_read_ahead_socket_serves_small_reads_from_one_recv() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    sock = ReadAheadSocket(a)
    with pytest.raises(BlockingIOError):  # nothing sent yet: what the socket itself says
        sock.recv(1)
    b.sendall(b"\x32\x05hello" + b"x" * 1000)
    deadline = time.monotonic() + 30
    while True:
        try:
            assert sock.recv(1) == b"\x32"
            break
        except BlockingIOError:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert sock.pending() == 1006  # the rest came with the first recv
    assert sock.recv(1) == b"\x05" and sock.recv(5) == b"hello"
    assert sock.recv(5000) == b"x" * 1000  # never more than is buffered
    assert sock.pending() == 0
    with pytest.raises(BlockingIOError):
        sock.recv(1)
    assert sock.fileno() == a.fileno() and sock.getsockname() == a.getsockname()
    b.close()
    deadline = time.monotonic() + 30
    while True:
        try:
            assert sock.recv(1) == b""  # end of stream, as the socket says it
            break
        except BlockingIOError:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    a.close()


def _collect(settings: BrokerSettings, sent: list[tuple[bytes, bool]],
             publish: Any) -> list[mqtt.MQTTMessage]:
    got: list[mqtt.MQTTMessage] = []
    subscribed = threading.Event()
    done = threading.Event()
    client = new_client(settings, client_id="readahead-sub",
                        protocol=MQTTProtocolVersion.MQTTv5, manual_ack=True,
                        reconnect=ReconnectPolicy(), credentials=settings.credentials(),
                        client_class=ReadAheadClient)
    assert isinstance(client, ReadAheadClient)

    def on_connect(c: mqtt.Client, *_: Any) -> None:
        c.subscribe([("t/#", SubscribeOptions(qos=1))])

    def on_subscribe(*_: Any) -> None:
        subscribed.set()

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        got.append(msg)
        c.ack(msg.mid, msg.qos)
        if len(got) == len(sent):
            done.set()

    client.on_connect, client.on_subscribe = on_connect, on_subscribe
    client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.ReceiveMaximum = 1000
    client.connect(settings.host, settings.port, properties=props)
    client.loop_start()
    try:
        assert subscribed.wait(60)
        assert isinstance(client.socket(), ReadAheadSocket)
        publish()
        assert done.wait(300), f"{len(got)} of {len(sent)} messages"
    finally:
        client.disconnect()
        client.loop_stop()
    return got


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_every_message_arrives_whole_and_in_order(request: pytest.FixtureRequest,
                                                  tmp_path: Path, tls: bool) -> None:
    if tls:
        broker = start_tls_mosquitto(tmp_path / "tls", {"sub": "sub-password-1234",
                                                        "pub": "pub-password-1234"})
        (tmp_path / "pw").write_text("sub-password-1234")
        (tmp_path / "pw").chmod(0o600)
        settings = BrokerSettings(port=broker.port, tls=True, ca_file=broker.extra["ca"],
                                  username="sub", password_file=tmp_path / "pw")
    else:
        broker = request.getfixturevalue("mosquitto")
        settings = BrokerSettings(port=broker.port, tls=False)
    # Sizes around the header's length bytes (127/128, 16383/16384) and beyond one read
    # (READ_SIZE), so packets straddle the buffer; every 7th carries properties (paho's
    # own decoder), the rest none (the fast path).
    sizes = [0, 1, 126, 127, 128, 400, 16383, 16384, READ_SIZE + 3]
    sent = [(bytes([i % 251]) * sizes[i % len(sizes)] + str(i).encode(), i % 7 == 0)
            for i in range(3000)]

    def publish() -> None:
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="readahead-pub",
                          protocol=mqtt.MQTTv5)
        if tls:
            pub.tls_set(ca_certs=str(broker.extra["ca"]))
            pub.username_pw_set("pub", "pub-password-1234")
        pub.max_inflight_messages_set(1000)
        pub.max_queued_messages_set(0)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        infos = []
        for i, (payload, with_props) in enumerate(sent):
            props = None
            if with_props:
                props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                props.UserProperty = [("n", str(i))]
            infos.append(pub.publish(f"t/{i % 3}", payload, qos=1, properties=props))
        for info in infos:
            info.wait_for_publish(120)
        pub.disconnect()
        pub.loop_stop()

    got = _collect(settings, sent, publish)
    try:
        assert [m.payload for m in got] == [p for p, _ in sent]
        assert [m.topic for m in got] == [f"t/{i % 3}" for i in range(len(sent))]
        assert all(m.qos == 1 and not m.retain for m in got)
        for i, (m, (_, with_props)) in enumerate(zip(got, sent, strict=True)):
            assert m.properties is not None
            user = getattr(m.properties, "UserProperty", None)
            assert user == ([("n", str(i))] if with_props else None), i
    finally:
        if tls:
            broker.stop()


def test_qos_0_and_2_retained_and_keepalive_as_paho_has_them(
        mosquitto: Any) -> None:
    """The shapes the fast path leaves to paho (QoS 0, QoS 2 with its PUBREC/PUBREL/
    PUBCOMP under manual acknowledgement) and one it takes (a retained QoS 1 message:
    the probes' status) arrive whole with their flags; and with a 1-s keep-alive the
    connection survives idle seconds (the PINGRESPs come through the read-ahead)."""
    settings = BrokerSettings(port=mosquitto.port, tls=False)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="shapes-pub",
                      protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    retained = pub.publish("s/status", b"online", qos=1, retain=True)
    retained.wait_for_publish(60)
    got: list[mqtt.MQTTMessage] = []
    lock = threading.Lock()
    subscribed, disconnected = threading.Event(), threading.Event()
    client = new_client(settings, client_id="shapes-sub", protocol=MQTTProtocolVersion.MQTTv5,
                        manual_ack=True, reconnect=ReconnectPolicy(),
                        credentials=settings.credentials(), client_class=ReadAheadClient)

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with lock:
            got.append(msg)
        c.ack(msg.mid, msg.qos)

    client.on_connect = lambda c, *_: c.subscribe([("s/#", SubscribeOptions(qos=2))])
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_disconnect = lambda *_: disconnected.set()
    client.on_message = on_message
    client.connect(settings.host, settings.port, keepalive=1)
    client.loop_start()
    try:
        assert subscribed.wait(60)
        sent = [(f"s/q{q}", b"m" * n + bytes([q]), q) for n in (0, 5, 70_000)
                for q in (0, 1, 2)]
        for topic, payload, qos in sent:
            pub.publish(topic, payload, qos=qos).wait_for_publish(60)
        deadline = time.monotonic() + 60
        while len(got) < 1 + len(sent):
            assert time.monotonic() < deadline, f"{len(got)} of {1 + len(sent)} messages"
            time.sleep(0.05)
        with lock:
            first, rest = got[0], got[1:]
        assert (first.topic, first.payload, first.qos, first.retain) == \
            ("s/status", b"online", 1, True)
        assert sorted((m.topic, m.payload, m.qos, m.retain) for m in rest) == \
            sorted((t, p, q, False) for t, p, q in sent)
        time.sleep(4)  # four keep-alive periods, idle: PINGREQ/PINGRESP each second
        assert not disconnected.is_set(), "keep-alive timed out"
        pub.publish("s/q1", b"after", qos=1).wait_for_publish(60)
        deadline = time.monotonic() + 60
        while got[-1].payload != b"after":
            assert time.monotonic() < deadline, "no message after the idle seconds"
            time.sleep(0.05)
    finally:
        client.disconnect()
        client.loop_stop()
        pub.disconnect()
        pub.loop_stop()


class _CuttingRelay:
    """A TCP relay this test puts between the client and the real mosquitto: the first
    connection is cut after ``cut_after`` bytes from the broker (in the middle of a
    packet); later connections are relayed whole."""

    def __init__(self, broker_port: int, cut_after: int) -> None:
        self.broker_port, self.cut_after = broker_port, cut_after
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.cut = threading.Event()
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                down, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.broker_port))
            self.connections += 1
            limit = self.cut_after if self.connections == 1 else None
            threading.Thread(target=self._pipe, args=(down, up, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(up, down, limit), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while not self._stop.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) >= limit:
                    dst.sendall(data[:limit - sent])
                    self.cut.set()
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()


def test_connection_cut_mid_packet_next_connection_starts_clean(mosquitto: Any) -> None:
    """The broker's connection ends in the middle of a big PUBLISH (half of it in the
    read-ahead buffer and paho's partial packet): paho reconnects, the persistent session
    sends the unacknowledged message again, and it arrives whole, once, with nothing of
    the cut connection's bytes mixed in."""
    payload = bytes(range(256)) * 4096  # 1 MiB
    relay = _CuttingRelay(mosquitto.port, cut_after=len(payload) // 2)
    settings = BrokerSettings(port=relay.port, tls=False)
    client = new_client(settings, client_id="cut-sub", protocol=MQTTProtocolVersion.MQTTv5,
                        manual_ack=True, reconnect=ReconnectPolicy(min_s=1, max_s=1),
                        credentials=settings.credentials(), client_class=ReadAheadClient)
    got: list[mqtt.MQTTMessage] = []
    subscribed = threading.Event()
    client.on_connect = lambda c, *_: c.subscribe([("cut/#", SubscribeOptions(qos=1))])
    client.on_subscribe = lambda *_: subscribed.set()

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        got.append(msg)
        c.ack(msg.mid, msg.qos)

    client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 300
    client.connect_async("127.0.0.1", relay.port, clean_start=False, properties=props)
    client.loop_start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cut-pub", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    try:
        assert subscribed.wait(60)
        pub.publish("cut/big", payload, qos=1).wait_for_publish(60)
        assert relay.cut.wait(60), "the relay never cut the connection"
        deadline = time.monotonic() + 120
        while not got:
            assert time.monotonic() < deadline, "the message never arrived after the cut"
            time.sleep(0.05)
        pub.publish("cut/after", b"after", qos=1).wait_for_publish(60)
        while len(got) < 2:
            assert time.monotonic() < deadline, "no message after the redelivered one"
            time.sleep(0.05)
        assert relay.connections >= 2
        assert [(m.topic, m.payload) for m in got] == [("cut/big", payload),
                                                      ("cut/after", b"after")]
    finally:
        client.disconnect()
        client.loop_stop()
        pub.disconnect()
        pub.loop_stop()
        relay.close()


def _publish_packet(header: int, topic: bytes, mid: int | None, props: bytes,
                    payload: bytes) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic
    if mid is not None:
        body += mid.to_bytes(2, "big")
    body += bytes([len(props)]) + props + payload
    n, length = len(body), bytearray()
    while True:
        n, digit = divmod(n, 128)
        length.append(digit | (128 if n else 0))
        if not n:
            return bytes([header]) + bytes(length) + body


def _read_all(cls: type[mqtt.Client], data: bytes, expected: int) -> tuple[
        list[tuple[Any, ...]], int]:
    """The messages a client of ``cls`` delivers reading ``data`` from a socket pair (its
    own network loop, connected state set by hand: no broker speaks here), and how many
    PUBLISH packets went through paho's own ``_handle_publish``."""
    a, b = socket.socketpair()
    a.setblocking(False)
    slow = [0]

    class Counting(cls):  # type: ignore[valid-type,misc]
        def _handle_publish(self) -> Any:
            slow[0] += 1
            return super()._handle_publish()

    client = Counting(CallbackAPIVersion.VERSION2, client_id="sockpair",
                      protocol=MQTTProtocolVersion.MQTTv5, manual_ack=True)
    got: list[tuple[Any, ...]] = []

    def on_message(c: mqtt.Client, userdata: Any, m: mqtt.MQTTMessage) -> None:
        # info: made on demand for a message taken whole from the buffer, as paho's own.
        got.append((m.mid, m.topic, m.payload, m.qos, m.retain, m.dup, m.state,
                    getattr(m.properties, "UserProperty", None), m.timestamp > 0,
                    type(m.info), m.info.mid, m.info.rc, m.info.is_published()))

    client.on_message = on_message
    client._sock = ReadAheadSocket(a) if cls is ReadAheadClient else a
    client._state = _ConnectionState.MQTT_CS_CONNECTED
    sender = threading.Thread(target=b.sendall, args=(data,))
    sender.start()
    deadline = time.monotonic() + 120
    while len(got) < expected and time.monotonic() < deadline:
        client._loop(1.0)
    sender.join()
    a.close()
    b.close()
    return got, slow[0]


def test_whole_packets_taken_from_the_buffer_match_paho() -> None:
    # Every shape of PUBLISH, as paho itself decodes it: QoS 1 without properties (taken
    # whole from the buffer), with properties, QoS 0, retain and dup flags, remaining
    # lengths of 1, 2 and 3 bytes, and packets straddling the read-ahead buffer.
    user = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    user.UserProperty = [("k", "v")]
    props = user.pack()[1:]  # type: ignore[no-untyped-call]  # without its length byte
    packets, plain = [], 0
    sizes = [0, 1, 100, 200, 20_000, READ_SIZE // 3]
    for i in range(400):
        size = sizes[i % len(sizes)]
        payload = bytes([i % 251]) * size + str(i).encode()
        topic = f"t/{i % 5}".encode()
        if i % 9 == 4:
            packets.append(_publish_packet(0x30, topic, None, b"", payload))  # QoS 0
        elif i % 9 == 7:
            packets.append(_publish_packet(0x32, topic, i + 1, props, payload))
        else:
            header = 0x32 | (0x08 if i % 4 == 1 else 0) | (0x01 if i % 6 == 5 else 0)
            packets.append(_publish_packet(header, topic, i % 65535 + 1, b"", payload))
            plain += 1
    data = b"".join(packets)
    paho_got, _ = _read_all(mqtt.Client, data, len(packets))
    fast_got, slow = _read_all(ReadAheadClient, data, len(packets))
    assert len(paho_got) == len(packets)
    assert fast_got == paho_got
    # Most plain QoS 1 packets never reach paho's decoder (only those that straddle a
    # read of the buffer do); every other shape always does.
    assert len(packets) - plain <= slow < len(packets) - plain + plain // 4
