"""Config loading: TOML plus NETMON_ environment overrides, every bad key named."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings

from netmon.settings import ConfigError, load_settings


class Broker(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(8883, ge=1, le=65535)
    password: str | None = None


class Cfg(BaseSettings):
    probe_id: str
    broker: Broker = Broker()
    interval_s: float = Field(3600, gt=0)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_file_is_loaded(tmp_path: Path) -> None:
    cfg = load_settings(Cfg, write(tmp_path, 'probe_id = "ky-anh-01"\n[broker]\nport = 1884\n'))
    assert type(cfg) is Cfg
    assert cfg.probe_id == "ky-anh-01" and cfg.broker.port == 1884


def test_environment_overrides_nested_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETMON_BROKER__HOST", "mqtt.example")
    monkeypatch.setenv("NETMON_INTERVAL_S", "60")
    cfg = load_settings(Cfg, write(tmp_path, 'probe_id = "ky-anh-01"\n[broker]\nport = 1884\n'))
    assert cfg.broker.host == "mqtt.example" and cfg.broker.port == 1884
    assert cfg.interval_s == 60


def test_every_bad_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, 'interval_s = -1\n[broker]\nport = 70000\npassword = "hunter2-secret"\n'
                           "colour = 1\n")
    with pytest.raises(ConfigError) as err:
        load_settings(Cfg, path)
    text = err.value.report()
    assert "probe_id: Field required" in text
    assert "broker.port" in text and "70000" in text
    assert "broker.colour: unknown key" in text
    assert "interval_s" in text
    assert "hunter2" not in text


def test_toml_syntax_error_has_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(Cfg, write(tmp_path, 'probe_id = "x\n'))
    assert "line 1" in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(Cfg, tmp_path / "nope.toml")
