"""A served process settling after its start (the app's `warm_up`, the API workers' preload)."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc


def settle() -> None:
    """Everything loaded so far moved out of the garbage collector's reach, and what arrow's
    allocator keeps of the memory freed while warming given back to the system.

    - `gc.freeze`: Python's full collections otherwise walk every loaded geometry and row
      again and again while people use the app (~40 ms for the sample's layers, a stall for
      whichever requests are in flight).
    - `release_unused`: arrow holds freed blocks for reuse; a province's process (a million
      entities: their routed answers, the map's tiles) stayed 0.9 GB larger without it
      (3.1 → 2.25 GB in a measurement of the same steps).
    - `malloc_trim`: the same for Python's own freed memory (the answers of a million routed
      entities, the rows read before they became frames), which glibc's allocator otherwise
      keeps mapped.
    """
    import pyarrow as pa

    gc.collect()
    gc.freeze()
    pa.default_memory_pool().release_unused()
    _trim_malloc()


def _trim_malloc() -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to give back this way
        pass
