"""How often the cyclic garbage collector runs in processes that make millions of objects."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def rare_collections() -> Iterator[None]:
    """Run the cyclic garbage collector seldom while importing: parsing and writing make millions
    of short-lived objects without reference cycles (refcounting frees them), while the long-lived
    tables (the parsers' sessions, queue files and uids; the bulk writer's recent messages:
    hundreds of thousands of objects) only grow, and each growth of the first threshold started a
    pass over them: at 200,000 that still cost a tenth of the parsing time (measured), at
    2,000,000 next to nothing; the default (700) cost the bulk writer 2.6-3.1 us of its 31-41 per
    event (timed with `gc.callbacks` over bench/import_writer.py's batches)."""
    previous = gc.get_threshold()
    gc.set_threshold(2_000_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
