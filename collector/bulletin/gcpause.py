"""Python's cyclic garbage collector paused over a stage of the bulletin.

The bulletin's heavy stages allocate hundreds of thousands of container objects that live
until the stage ends: the decoded InfluxDB answers of the fetch, WeasyPrint's box tree (a
node per table cell, line and text run) in the PDF. Each allocation burst triggers
collections, and the objects that survive them are traversed again by every later full
collection: with the collector on, WeasyPrint alone spent about a third of its CPU time in
it (benchmarks/bulletin/README.md). Almost nothing is freed by that work: these objects go
by reference counting when the stage drops them. Pausing the collector changes no output.
Reference cycles made meanwhile stay until the next collection: the bulletin collects once
after its fetch (cycles around httpx's requests and responses hold the answers' bodies) and
leaves WeasyPrint's for after the PDF.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Run the ``with`` body with automatic garbage collection off; restore it after (also
    on an exception). Nested uses are fine: only the outermost one turns it back on."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
