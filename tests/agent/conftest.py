"""Fixtures shared by the agent's tests: a loopback TCP target and a broker per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.services import Service
from tests.helpers.agent import Listener, start_broker


@pytest.fixture
def target() -> Iterator[Listener]:
    """A TCP listener on loopback for the agent's test methods to measure."""
    listener = Listener()
    yield listener
    listener.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Service]:
    """A mosquitto of the test's own, stopped at the end."""
    svc = start_broker(tmp_path / "broker")
    yield svc
    svc.stop()
