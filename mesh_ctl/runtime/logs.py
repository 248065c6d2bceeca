"""Size-bounded logs in ``<run dir>/logs/``: every process's output goes through the supervisor, which caps it.

How output reaches a log: each child is spawned with its stdout and stderr on a pipe (a load client: stdout on
a pipe of its own, which the supervisor also parses for reports, and stderr on another). A :class:`LogPump`
thread per pipe reads it and appends what it reads to the child's :class:`RotatingLog`. When the next write
would take ``x.log`` past ``max_bytes``, the log rotates: ``x.log.1`` becomes ``x.log.2`` and so on,
``x.log`` becomes ``x.log.1``, a new ``x.log`` is started, and the oldest generation falls off so that at
most ``max_files`` files exist (``x.log`` included): Docker's json-file ``max-size`` / ``max-file``.

Why the supervisor owns the pipes (and not a timer that rotates the files behind the children's backs):
a child writing straight into the file keeps writing into the renamed one (none of our children reopens its
log on a signal), so renaming alone frees nothing; logrotate's ``copytruncate`` copies and then truncates in
place, which loses whatever the child writes between the copy and the truncation, and works only for files
opened with ``O_APPEND`` (another writer keeps its offset and leaves a sparse file as large as before). With
the pipe the supervisor is the only writer: it rotates between two of its own writes, nothing is lost, and
lines stay whole.

Guarantees:

- Bounded: no file is larger than ``max_bytes``, and there are at most ``max_files`` files per log, so a log
  takes at most ``max_files * max_bytes`` bytes. Generations beyond ``max_files`` (left by a run with a
  larger ``--log-max-files``) are removed when the log is opened. ``max_bytes=0`` turns rotation off.
- Whole lines: a file ends at the end of a line, except that a line longer than ``max_bytes`` is cut into
  ``max_bytes`` pieces, and a line the child wrote in two parts just as the cap was reached continues in
  the next file.
- A child never waits on the supervisor's other work: its pump thread does nothing but read (64 KiB at a
  time) and append. A write that fails (disk full, the logs directory removed) drops that data, counted in
  :attr:`RotatingLog.dropped`, is retried on a fresh file next time, and the reading goes on.
- Nothing lost at shutdown: the supervisor reaps each child and then waits for its pump to read the pipe to
  the end (EOF) before it closes the log.
- A dead supervisor: its children are SIGKILLed by the kernel (``PR_SET_PDEATHSIG``, :mod:`procs`); where
  that does not exist, their next write fails with EPIPE instead of blocking.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # per file, as Docker's commonly used max-size=10m
DEFAULT_MAX_FILES = 3  # per log, the current file included (max-file=3): at most 30 MiB per log
MIN_MAX_BYTES = 1024  # the smallest cap `up --log-max-size` accepts (0 aside: no rotation)
READ_SIZE = 65536  # a pipe's whole default buffer in one read
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``10m``, ``10MiB``, ``10MB``, ``512k``, ``1g``, ``1048576`` -> bytes. The units are powers of 1024, as
    in Docker's ``max-size``. Raises ValueError."""
    m = _SIZE.fullmatch(text)
    if m is None:
        raise ValueError(f"not a size: {text!r} (e.g. 10m, 512k, 1g, or bytes)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def generation(path: Path, n: int) -> Path:
    """``x.log`` -> ``x.log.<n>`` (``n`` = 0: ``x.log`` itself)."""
    return path if n == 0 else path.with_name(f"{path.name}.{n}")


def generations(path: Path) -> list[Path]:
    """The files of the log at ``path`` that exist, newest first: ``x.log``, ``x.log.1``, ``x.log.2``, ..."""
    return [p for p in [path] if p.exists()] + [p for _, p in _numbered(path)]


def _numbered(path: Path) -> list[tuple[int, Path]]:
    """``(n, x.log.<n>)`` for each rotated generation of ``path`` that exists, by ``n``."""
    prefix = path.name + "."
    try:
        names = [e.name for e in os.scandir(path.parent)]
    except OSError:
        return []
    found = []
    for name in names:
        suffix = name[len(prefix):]
        if name.startswith(prefix) and suffix.isascii() and suffix.isdigit() and not suffix.startswith("0"):
            found.append((int(suffix), path.parent / name))
    return sorted(found)


def tail(path: Path, n: int) -> list[str]:
    """The last ``n`` lines of the log at ``path``, reaching into ``x.log.1`` if ``x.log`` has fewer (it may
    have just been rotated)."""
    lines: list[str] = []
    for p in generations(path)[:2]:
        try:
            text = p.read_text(errors="replace")
        except OSError:
            continue
        lines = text.splitlines() + lines
        if len(lines) >= n:
            break
    return lines[-n:] if n else []


class RotatingLog:
    """An append-only log file capped at ``max_bytes`` with ``max_files`` files in all (see the module).

    :meth:`write` is thread-safe and never raises; the file is opened (created) by the constructor, which does
    raise OSError if it cannot. After :meth:`close`, writes are dropped (counted in :attr:`dropped`): the file
    may belong to the next supervisor by then. ``on_open(fd)`` is called with each newly opened file's
    descriptor (the detached supervisor points its stdout and stderr at it).
    """

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES, max_files: int = DEFAULT_MAX_FILES,
                 on_open: Callable[[int], None] | None = None) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0 (0: no rotation), got {max_bytes}")
        if max_files < 1:
            raise ValueError(f"max_files must be >= 1, got {max_files}")
        self.path = path
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.on_open = on_open
        self.dropped = 0  # bytes that could not be written
        self.rotations = 0
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0
        self._closed = False
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._remove_extra_generations()
            self._open()

    def write(self, data: bytes) -> None:
        """Append ``data``, rotating first whenever it would take the file past the cap."""
        if not data:
            return
        with self._lock:
            if self._closed:
                self.dropped += len(data)
                return
            pos = 0
            try:
                while pos < len(data):
                    if self._fd is None:
                        self._open()
                    room = max(0, self.max_bytes - self._size)
                    if not self.max_bytes or len(data) - pos <= room:
                        self._append(data, pos, len(data))
                        return
                    newline = data.rfind(b"\n", pos, pos + room)
                    if newline >= 0:
                        end = newline + 1  # the whole lines that fit
                    elif self._size == 0:
                        end = pos + room  # a line longer than the cap, on a file of its own: cut it
                    else:
                        end = pos  # the next line does not fit: it starts the next file
                    if end > pos:
                        self._append(data, pos, end)
                        pos = end
                    self._rotate()
            except OSError:
                self.dropped += len(data) - pos
                self._close()  # the next write starts again on a freshly opened file

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._close()

    @property
    def size(self) -> int:
        """The current file's size as this writer knows it."""
        return self._size

    # ------------------------------------------------------------------------------------- internals

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._fd = fd
        self._size = os.fstat(fd).st_size
        if self.on_open is not None:
            self.on_open(fd)

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)

    def _append(self, data: bytes, start: int, end: int) -> None:
        assert self._fd is not None
        view = memoryview(data)[start:end]
        while view:
            written = os.write(self._fd, view)
            self._size += written
            view = view[written:]

    def _rotate(self) -> None:
        self._close()
        # Oldest first: x.log.(N-1) is dropped, x.log.(N-2) -> x.log.(N-1), ..., x.log -> x.log.1.
        for n, p in reversed([(0, self.path), *_numbered(self.path)]):
            with contextlib.suppress(FileNotFoundError):
                if n + 1 < self.max_files:
                    os.replace(p, generation(self.path, n + 1))
                else:
                    os.unlink(p)
        self.rotations += 1
        self._open()

    def _remove_extra_generations(self) -> None:
        for n, p in _numbered(self.path):
            if n >= self.max_files:
                with contextlib.suppress(OSError):
                    p.unlink()


class LogPump:
    """A thread that copies a child's pipe into its :class:`RotatingLog` until EOF, then closes the pipe."""

    def __init__(self, pipe: IO[bytes], log: RotatingLog, name: str) -> None:
        self.pipe = pipe
        self.log = log
        self.bytes = 0
        self._thread = threading.Thread(target=self._run, name=f"log-pump-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        fd = self.pipe.fileno()
        try:
            while True:
                try:
                    data = os.read(fd, READ_SIZE)
                except OSError:
                    return
                if not data:  # EOF: the child (and whatever inherited its output) is gone
                    return
                self.bytes += len(data)
                self.log.write(data)
        finally:
            with contextlib.suppress(OSError):
                self.pipe.close()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for EOF and the last write; True when the pump is done. (A grandchild that
        inherited the pipe can keep it open after the child exits: then this times out; the daemon thread goes
        on reading while the supervisor lives.)"""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()


class _RawLog(io.RawIOBase):
    def __init__(self, log: RotatingLog) -> None:
        super().__init__()
        self.log = log

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        b = bytes(data)
        self.log.write(b)
        return len(b)


def text_stream(log: RotatingLog) -> TextIO:
    """A text stream onto ``log`` (what the detached supervisor prints); each line is written when complete,
    the rest on ``flush()``."""
    return io.TextIOWrapper(io.BufferedWriter(_RawLog(log)), encoding="utf-8", errors="replace",
                            line_buffering=True, write_through=True)
