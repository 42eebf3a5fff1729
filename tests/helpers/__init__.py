"""Shared test helpers, one module per area; import as ``from tests.helpers.<area> import``."""

from pathlib import Path

import pytest

from devstack import services

#: The repository's root folder.
REPO = Path(__file__).resolve().parents[2]


def need(binary: str) -> str:
    """The path of ``binary``, or skip the test naming what is missing (under CI=true a
    skip fails the run: tests/conftest.py)."""
    try:
        return services.require_binary(binary)
    except services.ServiceError as exc:
        pytest.skip(str(exc))
