"""The plumbing the agent's run time shares with the rest (config and secret files, the
MQTT client factory, topic names and the contract's constants, the config hand-over)
works without pydantic (issue 20: the run time never loads it). Each is used for real in
a fresh interpreter, which then must hold no ``pydantic*`` module; the re-exports keep
the old import paths the same objects."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

_SCRIPT = """
import json, ssl, sys
from pathlib import Path
from paho.mqtt.enums import MQTTProtocolVersion
from agent import handoff
from netmon import configfile, contractbase, mqttclient

folder = Path(sys.argv[1])
(folder / "pw").write_text("  s3cret\\n")
(folder / "a.toml").write_text('[broker]\\nhost = "mqtt.example"\\n')
assert configfile.read_secret(folder / "pw", "broker.password_file") == "s3cret"
assert configfile.read_toml(folder / "a.toml") == {"broker": {"host": "mqtt.example"}}
try:
    configfile.read_toml(folder / "missing.toml")
except configfile.ConfigError as exc:
    assert exc.exit_code == 2 and exc.problems == ["file not found"]
else:
    raise AssertionError("a missing file was read")


class Tls:
    def tls_context(self):
        return mqttclient.tls_context()


client = mqttclient.new_client(Tls(), client_id="light", protocol=MQTTProtocolVersion.MQTTv311,
                               reconnect=mqttclient.ReconnectPolicy(1, 2, automatic=False),
                               credentials=("u", "p"))
assert client._ssl_context.minimum_version == ssl.TLSVersion.TLSv1_2
topics = contractbase.Topics("netmon/v1")
assert topics.parse(topics.results("ht-01x")) == ("ht-01x", "results")
try:
    topics.parse("netmon/v1/probes/BAD ID/results")
except contractbase.ContractError as exc:
    assert exc.reason == "bad_topic"
else:
    raise AssertionError("a bad topic was parsed")
assert contractbase.now_utc().utcoffset().total_seconds() == 0
doc = {"format": handoff.FORMAT, "config": {"probe_id": "x"}, "tests": {}}
assert handoff.read_fd(handoff.write_fd(json.dumps(doc).encode())) == doc
print(json.dumps(sorted(m for m in sys.modules if m.startswith("pydantic"))))
"""


def test_config_files_mqtt_client_topics_and_hand_over_need_no_pydantic(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_the_old_import_paths_are_the_same_objects() -> None:
    from netmon import configfile, contract, contractbase, mqtt, mqttclient, settings

    for name in ("ConfigError", "SecretFileError", "read_secret", "read_toml"):
        assert getattr(settings, name) is getattr(configfile, name)
    for name in ("new_client", "tls_context", "ReconnectPolicy", "TLS_MINIMUM_VERSION"):
        assert getattr(mqtt, name) is getattr(mqttclient, name)
    for name in ("Topics", "ContractError", "now_utc", "EXIT_RESTART", "DEFAULT_PREFIX",
                 "SCHEMA_VERSION", "MAX_MESSAGE_BYTES", "MAX_SPEED_MBPS", "PROBE_ID_PATTERN",
                 "LINK_NAME_PATTERN"):
        assert getattr(contract, name) is getattr(contractbase, name)
