"""Shared by the benchmarks that compare this checkout with an earlier revision in the
same run (``--baseline REV``)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """The files of ``rev`` in a temporary folder (``git archive``: the repository's own
    state is not touched)."""
    tmp = Path(tempfile.mkdtemp(prefix="netmon-bench-baseline-"))
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
