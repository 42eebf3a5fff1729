"""The files a config is made of, read without pydantic: the TOML file, the ``*_file``
secrets it points to, and :class:`ConfigError` naming each bad key.

Split from :mod:`netmon.settings` (which re-exports all of it) so the agent's run time,
which never validates a config (issue 20: it runs without pydantic), reads its password
file by the same rule.

Secret files (``password_file``, ``token_file``) follow one rule, :func:`read_secret`: the
file is UTF-8 text, leading and trailing whitespace (the newline an editor or Ansible's
``content: "...\\n"`` adds, a stray space) is not part of the secret, and a file that is
empty after that is refused rather than sent as an empty password.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from netmon.errors import EXIT_INPUT, NetmonError


class ConfigError(NetmonError):
    """A config file that cannot be used. ``problems`` has one ``key: why`` per bad key."""

    exit_code = EXIT_INPUT

    def __init__(self, path: Path | None, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        where = f"{path}: " if path else ""
        super().__init__(where + "; ".join(problems))

    def report(self) -> str:
        """Multi-line text for an operator."""
        head = f"invalid config {self.path}" if self.path else "invalid config"
        return head + ":\n" + "\n".join(f"  - {p}" for p in self.problems)


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; ConfigError with the line on a syntax error."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(path, ["file not found"]) from None
    except PermissionError:
        raise ConfigError(path, ["permission denied"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [f"TOML syntax: {exc}"]) from None


class SecretFileError(NetmonError):
    """A secret file that cannot be used: unreadable, not UTF-8, or empty.

    ``why`` is the reason alone (``No such file or directory``, ``empty``); the message
    names the config ``key`` when known, and never contains the secret.
    """

    exit_code = EXIT_INPUT

    def __init__(self, path: Path, why: str, key: str | None = None) -> None:
        super().__init__(f"{key}: {path}: {why}" if key else f"{path}: {why}")
        self.path = path
        self.why = why
        self.key = key


def read_secret(path: Path | None, key: str | None = None) -> str | None:
    """The secret held in ``path`` (None when no file is configured); ``key`` (e.g.
    ``mqtt.password_file``) names the setting in errors.

    The rule for every ``*_file`` secret: UTF-8 text with leading and trailing whitespace
    stripped; an unreadable, non-UTF-8 or (after stripping) empty file raises
    :class:`SecretFileError`. Nothing is cached: a caller that reads at every connection
    attempt (the agent) picks up a corrected file without a restart.
    """
    if path is None:
        return None
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SecretFileError(path, exc.strerror or str(exc), key) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretFileError(path, "not UTF-8 text", key) from None
    # Strip both ends: an invisible space is as much a typo as the trailing newline.
    secret = text.strip()
    if not secret:
        raise SecretFileError(path, "empty", key)
    return secret
