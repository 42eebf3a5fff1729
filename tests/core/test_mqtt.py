"""netmon.mqtt: one broker settings model, TLS context and client factory for the agent,
the collector and the NOC tools (issue 13)."""

from __future__ import annotations

import random
import ssl
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.enums import MQTTProtocolVersion
from pydantic import ValidationError

from agent.config import BrokerConfig
from collector.config import MqttSettings
from netmon.mqtt import TLS_MINIMUM_VERSION, BrokerSettings, ReconnectPolicy, new_client
from netmon.settings import SecretFileError
from tests.helpers.agent import make_tls


def test_both_configs_share_the_connection_keys_and_keep_their_own() -> None:
    common = {"host", "port", "tls", "ca_file", "cert_file", "key_file", "username",
              "password_file", "keepalive_s"}
    assert common == set(BrokerSettings.model_fields)
    assert common | {"password", "client_id", "reconnect_min_s", "reconnect_max_s",
                     "max_inflight"} == set(BrokerConfig.model_fields)
    assert common | {"client_id", "topic_prefix", "shared_group", "session_expiry_s",
                     "receive_maximum", "workers"} == set(MqttSettings.model_fields)
    # Documented defaults stay each side's.
    assert BrokerConfig().keepalive_s == 60 and MqttSettings().keepalive_s == 30
    assert BrokerConfig().client_id is None and MqttSettings().client_id == "netmon_collector"
    with pytest.raises(ValidationError, match=r"reconnect_min_s"):
        MqttSettings.model_validate({"reconnect_min_s": 1})  # an agent key


def test_a_key_without_its_certificate_is_refused_everywhere(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="key_file needs cert_file"):
        MqttSettings(key_file=tmp_path / "k")
    with pytest.raises(ValidationError, match="key_file needs cert_file"):
        BrokerConfig(key_file=tmp_path / "k")
    with pytest.raises(ValidationError, match="go together"):  # the probe: two files
        BrokerConfig(cert_file=tmp_path / "c")
    MqttSettings(cert_file=tmp_path / "c")  # the collector: a PEM may hold both


def test_the_tls_context_is_tls12_plus_and_verifies_the_host(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    for settings in (BrokerConfig(ca_file=tls["ca"]), MqttSettings(ca_file=tls["ca"])):
        ctx = settings.tls_context()
        assert ctx is not None
        assert ctx.minimum_version >= TLS_MINIMUM_VERSION == ssl.TLSVersion.TLSv1_2
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
        # Only the configured CA is trusted, not the system store as well.
        assert len(ctx.get_ca_certs()) == 1
    ctx = MqttSettings(ca_file=tls["ca"], cert_file=tls["cert"], key_file=tls["key"]
                       ).tls_context()
    assert ctx is not None
    assert MqttSettings(tls=False).tls_context() is None
    with pytest.raises(OSError):
        MqttSettings(ca_file=tmp_path / "missing.pem").tls_context()


def test_credentials_follow_each_side_s_rules(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    # Collector / NOC: a login needs a username; without one the file is not even read.
    assert MqttSettings().credentials() is None
    assert MqttSettings(password_file=tmp_path / "missing").credentials() is None
    assert MqttSettings(username="collector", password_file=pw).credentials() == (
        "collector", "s3cret")
    assert MqttSettings(username="collector").credentials() == ("collector", None)
    # Probe: the username defaults to the probe id when a password is configured.
    probe = "ht-kyanh-01"
    assert BrokerConfig().credentials(default_username=probe) is None
    assert BrokerConfig(password_file=pw).credentials(default_username=probe) == (
        probe, "s3cret")
    assert BrokerConfig(username="u").credentials(default_username=probe) == ("u", None)
    env: Any = {"password": "from-env"}
    assert BrokerConfig(**env).credentials(default_username=probe) == (probe, "from-env")


def test_an_unusable_password_file_names_the_setting(tmp_path: Path) -> None:
    empty = tmp_path / "pw"
    empty.write_text("\n")
    with pytest.raises(SecretFileError, match=r"^broker\.password_file: .*: empty$"):
        BrokerConfig(password_file=empty).read_password()
    with pytest.raises(SecretFileError, match=r"^mqtt\.password_file: "):
        MqttSettings(username="c", password_file=tmp_path / "nope").credentials()


def test_file_problems_name_the_section(tmp_path: Path) -> None:
    assert BrokerConfig(ca_file=tmp_path / "x", tls=False).file_problems() == [
        f"broker.ca_file: no such file {str(tmp_path / 'x')!r}",
        "broker.ca_file: set but tls = false"]
    assert MqttSettings(password_file=tmp_path / "x").file_problems()[0].startswith(
        "mqtt.password_file: no such file")


def test_reconnect_backoff_has_jitter_and_bounds() -> None:
    policy = ReconnectPolicy(1.0, 300.0, automatic=False)
    rng = random.Random(1)
    delays = [policy.delay(n, rng) for n in range(12)]
    assert 0.5 <= delays[0] <= 1.0 and all(150.0 <= d <= 300.0 for d in delays[9:])
    assert len({round(policy.delay(3, rng), 6) for _ in range(20)}) > 1  # not lockstep
    with pytest.raises(ValueError):
        ReconnectPolicy(5.0, 1.0)


def test_the_factory_applies_settings(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    settings = MqttSettings(ca_file=tls["ca"])
    client = new_client(settings, client_id="c1", protocol=MQTTProtocolVersion.MQTTv5,
                        reconnect=ReconnectPolicy(1, 30), credentials=("u", "p"),
                        manual_ack=True)
    assert client._ssl_context is not None and not client._tls_insecure
    assert client._ssl_context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert client.username == "u" and client.password == "p"
    assert client._reconnect_on_failure and client._reconnect_max_delay == 30
    plain = new_client(MqttSettings(tls=False), client_id="c2",
                       protocol=MQTTProtocolVersion.MQTTv311, clean_session=True,
                       reconnect=ReconnectPolicy(1, 300, automatic=False))
    assert plain._ssl_context is None and not plain._reconnect_on_failure
    assert plain.username is None
