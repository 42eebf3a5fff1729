"""Loaded by the collector processes of ``run.py --gc-stats`` (on their PYTHONPATH): the
CPU time the garbage collector takes, per generation, written to ``$NETMON_GCSTATS`` when
the process exits."""

from __future__ import annotations

import atexit
import gc
import json
import os
import time

_started = 0.0
_stats: dict[int, list[float]] = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}


def _measure(phase: str, info: dict[str, int]) -> None:
    global _started
    if phase == "start":
        _started = time.thread_time()
    else:
        entry = _stats[info["generation"]]
        entry[0] += 1
        entry[1] += time.thread_time() - _started


def _write() -> None:
    with open(os.environ["NETMON_GCSTATS"], "w") as fh:
        json.dump({str(g): {"collections": n, "cpu_s": s} for g, (n, s) in _stats.items()},
                  fh)


if os.environ.get("NETMON_GCSTATS"):
    gc.callbacks.append(_measure)
    atexit.register(_write)
