"""Loading TOML config files with ``NETMON_`` environment overrides (pydantic-settings),
turning validation errors into one line per bad key, and reading the ``*_file`` secrets
a config points to. Shared by agent and collector.

Environment variables override the file: ``NETMON_BROKER__HOST=10.0.0.5`` sets
``[broker] host`` (``__`` separates nesting levels).

The config-file plumbing that needs no pydantic (:class:`ConfigError`, :func:`read_toml`,
the secret-file rule :func:`read_secret`) lives in :mod:`netmon.configfile` and is
re-exported here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ValidationError
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from netmon.configfile import ConfigError, SecretFileError, read_secret, read_toml

__all__ = ["ConfigError", "SecretFileError", "describe_errors", "env_problems",
           "load_settings", "read_secret", "read_toml", "url_problem",
           "writable_path_problem"]

T = TypeVar("T", bound=BaseSettings)


def describe_errors(exc: ValidationError) -> list[str]:
    """``a.b.c: why (got X)`` for each error, with secrets never echoed."""
    out = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        value = err.get("input")
        secretish = any(s in loc.lower() for s in ("password", "secret", "token", "key"))
        if err["type"] not in ("missing", "extra_forbidden") and not secretish and \
                isinstance(value, str | int | float) and len(str(value)) < 80:
            msg += f" (got {value!r})"
        if err["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        out.append(f"{loc}: {msg}")
    return out


def env_problems(model: type[BaseModel], env_prefix: str = "NETMON_") -> list[str]:
    """Environment variables overriding a whole table of ``model`` with text that is not
    a JSON object, named with the variable (``NETMON_BROKER: not JSON ...``)."""
    problems = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            continue
        var = f"{env_prefix}{name}".upper()
        value = next((v for k, v in os.environ.items() if k.upper() == var), None)
        if value is None:
            continue
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            problems.append(f"{name}: environment variable {var} is not JSON ({exc}); set a "
                            f"whole table as a JSON object, or one key as {var}__<KEY>")
            continue
        if not isinstance(parsed, dict):
            problems.append(f"{name}: environment variable {var} must be a JSON object, got "
                            f"{type(parsed).__name__}")
    return problems


def load_settings(model: type[T], path: Path | None, env_prefix: str = "NETMON_",
                  data: dict[str, Any] | None = None) -> T:
    """Validate ``path`` (or ``data``) as ``model``, environment overriding the file.

    Raises :class:`ConfigError` naming every bad key; nothing is started before this
    returns.
    """
    file_data = data if data is not None else (read_toml(path) if path else {})

    class _FromFile(model):  # type: ignore[valid-type, misc]
        model_config = SettingsConfigDict(
            env_prefix=env_prefix, env_nested_delimiter="__", extra="forbid",
            case_sensitive=False)

        @classmethod
        def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (env_settings, InitSettingsSource(settings_cls, file_data))

    _FromFile.__name__ = model.__name__
    _FromFile.__qualname__ = model.__qualname__
    try:
        loaded = _FromFile()
    except ValidationError as exc:
        # A table overridden by a variable holding JSON that is not an object: name the
        # variable instead of pydantic's "Input should be a valid dictionary".
        env = env_problems(model, env_prefix)
        tables = {p.split(":", 1)[0] for p in env}
        raise ConfigError(path, env + [p for p in describe_errors(exc)
                                       if p.split(":", 1)[0].split(".")[0] not in tables]
                          ) from None
    except SettingsError as exc:
        # e.g. NETMON_BROKER='not-json{': a structured override that does not parse.
        raise ConfigError(path, env_problems(model, env_prefix) or [str(exc)]) from None
    # Hand back the caller's own type so equality and pickling behave as expected.
    return cast(T, model.model_construct(
        _fields_set=loaded.model_fields_set,
        **{k: getattr(loaded, k) for k in model.model_fields}))


def writable_path_problem(key: str, path: Path, want: str = "file") -> str | None:
    """Why ``path`` cannot be created or written as a ``want`` ("file" or "dir") by this
    process, or None: the path itself, when it exists, is of the right kind, and the
    nearest existing folder above it is a folder this process may write into (so run can
    create what is missing). Checked before anything starts."""
    if path.exists():
        if want == "dir" and not path.is_dir():
            return f"{key}: {path} exists and is not a folder"
        if want == "file" and path.is_dir():
            return f"{key}: {path} is a folder, not a file"
        target = path if want == "dir" else path.parent
        if not os.access(target, os.W_OK | os.X_OK):
            return f"{key}: no permission to write in {target}"
        return None
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{key}: {path} cannot be created: {parent} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{key}: {path} cannot be created: no permission to write in {parent}"
    return None


def url_problem(key: str, url: str, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
    """Why ``url`` is not an absolute URL with one of ``schemes`` and a host, or None."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError as exc:
        return f"{key}: {url!r} is not a URL: {exc}"
    if parts.scheme not in schemes:
        return f"{key}: {url!r} must start with {' or '.join(s + '://' for s in schemes)}"
    if not parts.hostname:
        return f"{key}: {url!r} has no host"
    return None
