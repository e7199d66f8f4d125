"""A large output file written past the page cache (O_DIRECT), through a few reused buffers.

Why: `gridmap assign` writes about 600 MB for a million rows. Written the ordinary way, every
byte is copied into page-cache pages the kernel must first find and clear, and the dirty pages
of one run are still being flushed while the next writes (measured on this 2-core machine: 0.2
to 1.9 s of system time for 600 MB, varying with what the previous run left). Written directly,
the disk reads our own buffer, which is touched once and reused: the system time is almost
nothing, and the page cache keeps what other processes (the app, PostGIS) had in it.

Direct writes need block-aligned memory, sizes and offsets. The buffers are page-aligned
(anonymous mmaps) and each is written only when full, by a thread of its own while the caller
fills the next (a direct write waits for the disk); the last partial block goes the ordinary
way.
A file system that refuses direct writes (EINVAL: tmpfs on older kernels, some network and FUSE
file systems) gets the ordinary way from then on — the bytes written are the same either way.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
from collections import deque
from pathlib import Path

import numpy as np

# Direct-write alignment: a page, a multiple of every common logical block size (512, 4096).
BLOCK = 4096
BUFFER_BYTES = 4 * 2**20
BUFFERS = 4  # filled while earlier ones are written: a slow moment of the disk is absorbed
DIRECT = getattr(os, "O_DIRECT", 0)  # 0 where the platform has none (the ordinary way)


class DirectFile:
    """A file opened for writing (created or truncated), `write` and `close` as a binary file's.
    Up to BUFFERS buffers: while full ones are written out (by a thread of its own: a direct
    write waits for the disk), the caller fills the next. Not for several writers at once
    (assign's write-behind thread is its one writer)."""

    def __init__(self, path: str | Path, buffer_bytes: int = BUFFER_BYTES) -> None:
        if buffer_bytes <= 0 or buffer_bytes % BLOCK:
            raise ValueError(f"buffer_bytes must be a positive multiple of {BLOCK}")
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            self._maps: list[mmap.mmap] = [mmap.mmap(-1, buffer_bytes)]  # more when needed
        except BaseException:
            os.close(self._fd)
            raise
        self.direct = self._set_direct(True)
        self._size = buffer_bytes
        self._current = 0
        self._filled = 0
        self._pool = None
        self._flight: deque = deque()  # (write under way, its buffer), oldest first
        self.closed = False

    def write(self, data) -> int:
        """Append `data` (any bytes-like object)."""
        if self.closed:
            raise ValueError("write to a closed file")
        source = np.frombuffer(data, dtype=np.uint8) if len(memoryview(data)) else None
        if source is None:
            return 0
        at = 0
        while at < len(source):
            at += self._copy(source[at:])
            if self._filled == self._size:
                self._hand_over()
        return len(source)

    def _copy(self, source: np.ndarray) -> int:
        """Copy the start of `source` into the current buffer; how many bytes. (A function of
        its own: its view of the buffer is gone when it returns, so an error raised later
        does not keep the buffer from being closed.)"""
        buffer = np.frombuffer(self._maps[self._current], dtype=np.uint8)
        take = min(len(source), self._size - self._filled)
        # numpy copies outside the GIL: the routing thread goes on meanwhile.
        buffer[self._filled:self._filled + take] = source[:take]
        self._filled += take
        return take

    def _hand_over(self) -> None:
        """Write the full current buffer out in the background and go on in another: a new
        one while there are fewer than BUFFERS, else the oldest once its write is done (its
        error is raised here)."""
        from concurrent.futures import ThreadPoolExecutor

        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="direct-write")
        self._flight.append((self._pool.submit(self._write_out, self._maps[self._current],
                                               self._size), self._current))
        if len(self._maps) < BUFFERS:
            self._maps.append(mmap.mmap(-1, self._size))
            self._current = len(self._maps) - 1
        else:
            pending, self._current = self._flight.popleft()
            pending.result()
        self._filled = 0

    def _wait(self) -> None:
        """Every write under way done (the first error raised)."""
        while self._flight:
            pending, _buffer = self._flight.popleft()
            pending.result()

    def close(self) -> None:
        """Write what is left (whole blocks directly, the last partial one the ordinary way)
        and close; the file is closed even when a write fails (its error is raised)."""
        if self.closed:
            return
        self.closed = True
        try:
            self._wait()
            current = self._maps[self._current]
            whole = self._filled - self._filled % BLOCK
            if whole:
                self._write_out(current, whole)
            if self._filled > whole:
                if self.direct:
                    self.direct = not self._set_direct(False)
                self._write_out(current, self._filled, start=whole)
        finally:
            if self._pool is not None:
                for pending, _buffer in self._flight:  # a failure above: the rest end
                    with contextlib.suppress(Exception):
                        pending.result()
                self._pool.shutdown(wait=True)
            self._filled = 0
            for buffer in self._maps:
                buffer.close()
            os.close(self._fd)

    def _write_out(self, buffer: mmap.mmap, end: int, start: int = 0) -> None:
        """Write the buffer's bytes [start, end), all of them (a short write is continued)."""
        with memoryview(buffer) as view:
            done = start
            while done < end:
                try:
                    done += os.write(self._fd, view[done:end])
                except OSError as exc:
                    # Refused as a direct write (alignment, or not supported here): the
                    # ordinary way from now on, the same bytes at the same place.
                    if exc.errno != errno.EINVAL or not self.direct:
                        raise
                    self.direct = not self._set_direct(False)
                    if self.direct:
                        raise

    def _set_direct(self, on: bool) -> bool:
        """Turn O_DIRECT on or off for the open file; whether that was done."""
        if not DIRECT:
            return not on
        with contextlib.suppress(OSError):
            flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
            flags = flags | DIRECT if on else flags & ~DIRECT
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags)
            return True
        return False

    def __enter__(self) -> DirectFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()
