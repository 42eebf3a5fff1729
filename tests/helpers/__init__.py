"""Shared test helpers, one module per area; import as ``from tests.helpers.<area> import``."""

from pathlib import Path

#: The repository's root folder.
REPO = Path(__file__).resolve().parents[2]
