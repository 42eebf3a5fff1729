"""The collector process's garbage-collector policy.

During a backlog drain up to ``mqtt.receive_maximum`` messages are in flight, each a
few dozen container objects (the parsed result, its item, its lines) that live until
their batch is written: with CPython's default thresholds (700, 10, 10) the collector
traversed them over and over: 22 µs of CPU per result (median; 166 µs in all) in the
ingest benchmark's backlog drain (benchmarks/ingest/README.md, ``--gc-stats``). Freezing
what start-up built (modules, pydantic's validators, the registry) and collecting the
young generation every :data:`THRESHOLDS` ``[0]`` allocations instead cut that to 8 µs,
start-up included. Reference
cycles are still collected, later: memory held by cyclic garbage is bounded by the
thresholds, not by time.
"""

from __future__ import annotations

import gc

#: Allocations between young collections, young collections between middle ones, and
#: middle collections between full ones (``gc.set_threshold``).
THRESHOLDS = (50_000, 20, 10)


def tune_for_service() -> None:
    """Freeze the objects that exist now (call once start-up is done) and apply
    :data:`THRESHOLDS`. For the long-running service process only: it changes the
    whole interpreter."""
    gc.collect()  # what start-up left as garbage is not worth keeping forever
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
