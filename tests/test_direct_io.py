"""The large-output file written past the page cache (layers/direct_io.DirectFile) and the
append-only text column answer pieces are kept in (grids/answer.GrowingText)."""

from __future__ import annotations

import errno
import os

import numpy as np
import pyarrow as pa
import pytest

from grids.answer import GrowingText
from layers import direct_io
from layers.direct_io import BLOCK, DirectFile


def _pieces(rng, sizes) -> list[bytes]:
    return [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]


@pytest.mark.parametrize("sizes", [
    [],  # an empty file
    [1],
    [BLOCK - 1, 1],  # exactly one block
    [BLOCK, BLOCK, 17],  # whole blocks, then a tail
    [3 * BLOCK + 5],  # one write larger than the buffer
    [7] * 5000,  # many small writes across several buffers
    [2 * BLOCK, 0, 2 * BLOCK, 1, 4 * BLOCK - 1],  # the buffer filled exactly, empty writes
])
def test_the_file_holds_every_byte_written_in_order(tmp_path, sizes):
    rng = np.random.default_rng(len(sizes))
    data = _pieces(rng, sizes)
    target = tmp_path / "out.bin"
    with DirectFile(target, buffer_bytes=2 * BLOCK) as out:
        for k, piece in enumerate(data):  # bytes, memoryview and arrow buffers alike
            given = [piece, memoryview(piece), pa.py_buffer(piece)][k % 3]
            assert out.write(given) == len(piece)
        # Where this file system takes direct writes (ext4 here), they were direct.
        assert out.direct == _takes_direct_writes(tmp_path)
    assert target.read_bytes() == b"".join(data)
    assert target.stat().st_size == sum(sizes)


def _takes_direct_writes(folder) -> bool:
    import mmap

    probe = folder / "probe.bin"
    block = mmap.mmap(-1, BLOCK)
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError:
        return False
    try:
        return os.write(fd, block) == BLOCK
    except OSError:
        return False
    finally:
        os.close(fd)
        probe.unlink()


def test_a_file_system_refusing_direct_writes_gets_the_same_bytes(tmp_path, monkeypatch):
    """EINVAL from a direct write (tmpfs, some network file systems, an odd alignment): the
    same bytes at the same place the ordinary way, and the rest of the file too."""
    assert _takes_direct_writes(tmp_path), "the test folder must take direct writes (ext4)"
    import fcntl

    real = os.write
    calls: list[tuple[int, bool]] = []  # (bytes asked, whether O_DIRECT was on)

    def write(fd, data):
        calls.append((len(data), bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)))
        if len(calls) == 1:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data)

    monkeypatch.setattr(direct_io.os, "write", write)
    data = _pieces(np.random.default_rng(3), [5 * BLOCK + 3, 2 * BLOCK, 11])
    target = tmp_path / "out.bin"
    with DirectFile(target, buffer_bytes=2 * BLOCK) as out:
        for piece in data:
            out.write(piece)
    # (The writes are made by a thread of their own: looked at once the file is closed.)
    assert not out.direct
    assert calls[0] == (2 * BLOCK, True)  # refused as a direct write …
    assert calls[1] == (2 * BLOCK, False)  # … the same buffer again, the ordinary way
    assert not any(direct for _size, direct in calls[1:])  # and never direct again
    assert target.read_bytes() == b"".join(data)


def test_a_short_direct_write_is_continued(tmp_path, monkeypatch):
    """A direct write that wrote only part (allowed by POSIX) is continued from where it
    stopped; an unaligned rest is written the ordinary way."""
    real = os.write

    def write(fd, data):
        return real(fd, data[:len(data) // 2 + 1])  # half and a byte: unaligned after

    monkeypatch.setattr(direct_io.os, "write", write)
    data = _pieces(np.random.default_rng(4), [9 * BLOCK + 100])
    target = tmp_path / "out.bin"
    with DirectFile(target, buffer_bytes=4 * BLOCK) as out:
        out.write(data[0])
    assert target.read_bytes() == data[0]


def test_a_full_disk_is_raised_and_the_file_closed(tmp_path):
    """/dev/full: every write fails with ENOSPC — raised, not swallowed or retried, and the
    descriptor is closed all the same."""
    if not os.path.exists("/dev/full"):
        pytest.fail("this test needs /dev/full (Linux)")
    fds = len(os.listdir("/proc/self/fd"))
    out = DirectFile("/dev/full", buffer_bytes=BLOCK)
    with pytest.raises(OSError) as raised:  # raised once a buffer must be waited for
        out.write(b"x" * (2 * direct_io.BUFFERS * BLOCK))
    assert raised.value.errno == errno.ENOSPC
    with pytest.raises(OSError):
        out.close()  # the writes still under way, and the rest of the buffer: fail too
    assert out.closed
    assert len(os.listdir("/proc/self/fd")) == fds
    with pytest.raises(ValueError, match="closed"):
        out.write(b"more")


def test_a_failed_background_write_is_raised_by_close(tmp_path):
    """Fewer full buffers than BUFFERS: nothing waits for their writes before `close`, which
    raises their error."""
    out = DirectFile("/dev/full", buffer_bytes=BLOCK)
    out.write(b"x" * (2 * BLOCK))
    with pytest.raises(OSError) as raised:
        out.close()
    assert raised.value.errno == errno.ENOSPC and out.closed


def test_the_buffer_must_be_whole_blocks(tmp_path):
    with pytest.raises(ValueError, match="multiple"):
        DirectFile(tmp_path / "x.bin", buffer_bytes=BLOCK + 1)


def test_growing_text_keeps_what_was_appended_and_views_stay_as_they_were():
    grown = GrowingText()
    assert grown.words.to_pylist() == []
    rng = np.random.default_rng(5)
    expected: list[str] = []
    views = []
    for round_ in range(40):  # past the first buffers' room, several times
        new = ["甲" * int(k) + f"{round_}" for k in rng.integers(0, 3000, 50)]
        if round_ % 7 == 3:
            new = [*new, "", '𝄞,"x"']
        array = pa.array(["skipped", *new], pa.string()).slice(1)  # an offset into its buffers
        grown.append(array)
        expected += new
        views.append((grown.words, list(expected)))
    assert len(grown) == len(expected)
    assert grown.words.to_pylist() == expected
    for view, then in views:  # every earlier view still shows exactly what it showed
        assert view.to_pylist() == then
        view.validate(full=True)
    at = rng.integers(0, len(expected), 1000)
    assert grown.words.take(pa.array(at)).to_pylist() == [expected[k] for k in at]
    with pytest.raises(ValueError, match="no nulls"):
        grown.append(pa.array(["a", None]))
    assert len(grown) == len(expected)
