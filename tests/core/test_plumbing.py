"""The shared plumbing of the core (issue 13): one exception base with the exit-code
mapping in the CLI skeleton, one atomic write, one secret-file reader, one strict JSON
decoder, one translation helper."""

from __future__ import annotations

import argparse
import os
import stat
import threading
from pathlib import Path

import pytest

from netmon import cli, fsutil, i18n, jsonutil
from netmon.errors import EXIT_INPUT, EXIT_RUNTIME, NetmonError
from netmon.settings import ConfigError, SecretFileError, read_secret

# --------------------------------------------------------------------------- errors + cli


def _parser(func: object) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netmon-test")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("go").set_defaults(func=func)
    return parser


def test_a_netmon_error_becomes_its_exit_code_and_one_message(
        capsys: pytest.CaptureFixture[str]) -> None:
    def config_broken(args: argparse.Namespace) -> int:
        raise ConfigError(Path("x.toml"), ["broker.port: too big"])

    def broker_down(args: argparse.Namespace) -> int:
        raise NetmonError("broker unreachable")

    assert cli.run(_parser(config_broken), ["go"]) == EXIT_INPUT == 2
    err = capsys.readouterr().err
    assert err.startswith("netmon-test: invalid config x.toml:") and "broker.port" in err
    assert "Traceback" not in err
    assert cli.run(_parser(broker_down), ["go"]) == EXIT_RUNTIME == 1
    assert capsys.readouterr().err == "netmon-test: broker unreachable\n"


def test_other_exceptions_are_bugs_and_keep_their_traceback() -> None:
    def bug(args: argparse.Namespace) -> int:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        cli.run(_parser(bug), ["go"])


def test_every_project_exception_derives_from_netmon_error() -> None:
    from agent.spool import SpoolError
    from collector.bulletin.charts import FontError
    from collector.bulletin.data import MonthError
    from collector.bulletin.generate import BulletinInputError
    from collector.bulletin.pdf import PdfError
    from collector.core.influx import InfluxError
    from collector.core.registry import RegistryError
    from collector.core.writer import FatalWriteError
    from collector.fleet.errors import FleetError
    from netmon.signing import SigningError

    runtime = (SpoolError, FontError, PdfError, InfluxError, FatalWriteError)
    inputs = (ConfigError, MonthError, BulletinInputError, RegistryError, SecretFileError,
              jsonutil.JsonError)
    for cls in runtime:
        assert issubclass(cls, NetmonError) and cls.exit_code == EXIT_RUNTIME, cls
    for cls in inputs:
        assert issubclass(cls, NetmonError) and cls.exit_code == EXIT_INPUT, cls
    # Callers catch these by their other bases too.
    assert issubclass(MonthError, ValueError) and issubclass(SpoolError, RuntimeError)
    assert FleetError("x", usage=True).exit_code == 2 and FleetError("x").exit_code == 1
    assert SigningError("io", "disk full").exit_code == 1
    assert SigningError("bad_key", "not a key").exit_code == 2


# --------------------------------------------------------------------------- atomic write


def test_atomic_write_replaces_with_exact_mode_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "d" / "f.json"
    fsutil.atomic_write(target, b"one")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # the default: private
    old = os.umask(0o077)
    try:
        fsutil.atomic_write(target, "twö", mode=0o644)  # not filtered by the umask
    finally:
        os.umask(old)
    assert target.read_text(encoding="utf-8") == "twö"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.json"]


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), fsutil.atomic_writer(target) as fh:
        fh.write(b"half of the new")
        raise RuntimeError("power cut, as far as this file knows")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_concurrent_atomic_writes_never_share_a_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    errors: list[Exception] = []

    def write(n: int) -> None:
        try:
            for _ in range(50):
                fsutil.atomic_write(target, str(n) * 1000)
        except Exception as exc:  # reported below, in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    text = target.read_text()
    assert len(text) == 1000 and len(set(text)) == 1  # one writer's content, whole
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(("content", "secret"), [
    (b"s3cret\n", "s3cret"),
    (b"s3cret\r\n", "s3cret"),
    (b"  s3cret \t\n", "s3cret"),
    (b"with inner space\n", "with inner space"),
    ("mật khẩu\n".encode(), "mật khẩu"),
])
def test_secret_files_lose_surrounding_whitespace_only(tmp_path: Path, content: bytes,
                                                       secret: str) -> None:
    path = tmp_path / "pw"
    path.write_bytes(content)
    assert read_secret(path) == secret


@pytest.mark.parametrize(("content", "why"), [
    (b"", "empty"), (b"\n", "empty"), (b"  \r\n", "empty"), (b"\xff\xfe", "not UTF-8")])
def test_unusable_secret_files_are_refused(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "pw"
    path.write_bytes(content)
    with pytest.raises(SecretFileError, match=why) as info:
        read_secret(path)
    assert info.value.exit_code == 2 and info.value.path == path


def test_a_missing_secret_file_names_the_file(tmp_path: Path) -> None:
    assert read_secret(None) is None
    with pytest.raises(SecretFileError) as info:
        read_secret(tmp_path / "nope")
    assert "No such file" in info.value.why and str(tmp_path / "nope") in str(info.value)


# --------------------------------------------------------------------------- JSON


@pytest.mark.parametrize(("payload", "reason"), [
    (b"x" * 101, "too_large"),
    (b'{"a": "\xff"}', "not_utf8"),
    (b'{"a": ', "not_json"),
    (b"[" * 100 + b"]" * 100, "not_object"),
    (b'{"a": NaN}', "non_finite"),
    (b'{"a": -Infinity}', "non_finite"),
    (b"[1, 2]", "not_object"),
])
def test_the_strict_decoder_refuses(payload: bytes, reason: str) -> None:
    with pytest.raises(jsonutil.JsonError) as info:
        jsonutil.decode_object(payload, max_bytes=100 if reason == "too_large" else 10_000)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)


def test_the_strict_decoder_survives_hostile_nesting() -> None:
    with pytest.raises(jsonutil.JsonError) as info:
        jsonutil.decode_object(b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", 10**7)
    assert info.value.reason == "not_json"
    assert jsonutil.decode_object('{"tỉnh": 1.5}'.encode(), 100) == {"tỉnh": 1.5}


# --------------------------------------------------------------------------- i18n


def test_translation_defaults_to_vietnamese_and_normalises() -> None:
    t = i18n.Texts({"hello": ("Xin chào {name}", "Hello {name}"), "plain": ("{x}", "{x}"),
                    "odd": ("{key} {lang}", "{key} {lang}")}, "greeting")
    assert t("hello", name="Ha\u0300 Ti\u0303nh") == "Xin chào Hà Tĩnh"
    assert t("hello", name="Ha\u0300 Ti\u0303nh") != "Xin chào Ha\u0300 Ti\u0303nh"
    assert t("hello", "en", name="you") == "Hello you"
    assert t("plain", "vi") == "{x}"  # no values: no formatting
    assert t("odd", "en", key="k", lang="l") == "k l"  # any placeholder name works
    with pytest.raises(KeyError, match="no greeting 'nope'"):
        t("nope")
    with pytest.raises(ValueError, match="language"):
        t("hello", "fr", name="x")  # type: ignore[arg-type]


def test_both_text_tables_use_the_shared_mechanism() -> None:
    from collector.bulletin import i18n as bulletin
    from collector.dashboards import i18n as dashboards

    assert isinstance(bulletin.t, i18n.Texts) and isinstance(dashboards.t, i18n.Texts)
    assert bulletin.LANGS == dashboards.LANGS == i18n.LANGS
    assert bulletin.t("title") == bulletin.t("title", "vi") != bulletin.t("title", "en")
    assert dashboards.t("dash.probes") == "Tình trạng điểm đo"
