"""The run dir's logs: the rotating writer (cap, generations, whole lines, nothing lost), the pipe pump, the
`up --log-max-size / --log-max-files` options, and reading a log that was rotated under the reader."""

from __future__ import annotations

import argparse
import os
import random
import threading
from pathlib import Path

import pytest

from mesh_ctl.cli import build_parser
from mesh_ctl.commands.up import _forwarded, log_size
from mesh_ctl.runtime import control
from mesh_ctl.runtime.logs import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_FILES,
    LogPump,
    RotatingLog,
    generation,
    generations,
    parse_size,
    tail,
    text_stream,
)


def lines(start: int, stop: int, width: int = 20) -> bytes:
    """Numbered lines, ``width`` bytes each with the newline."""
    return b"".join(f"line {i:06d}".ljust(width - 1, ".").encode() + b"\n" for i in range(start, stop))


def oldest_first(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in reversed(generations(path)))


def test_each_file_stays_under_the_cap_and_only_max_files_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    log = RotatingLog(path, max_bytes=100, max_files=3)
    data = lines(0, 100)  # 2000 bytes: 5 lines (100 bytes) per file
    for i in range(0, len(data), 20):
        log.write(data[i:i + 20])
    assert [p.name for p in generations(path)] == ["x.log", "x.log.1", "x.log.2"]
    assert sorted(os.listdir(tmp_path)) == ["x.log", "x.log.1", "x.log.2"]
    for p in generations(path):
        assert 0 < p.stat().st_size <= 100 and p.read_bytes().endswith(b"\n")
    assert oldest_first(path) == lines(85, 100)  # the newest 15 lines, in order
    assert log.rotations == 19 and log.dropped == 0


def test_nothing_is_lost_or_reordered_across_rotations_whatever_the_chunks(tmp_path: Path) -> None:
    """Random chunks (partial lines, several lines, lines cut anywhere), generations enough to keep it all:
    the files, oldest first, are exactly what was written; every file is within the cap, and every file
    but the current one ends with a whole line when the writer writes whole lines."""
    rng = random.Random(7)
    data = b"".join(f"{i} {'x' * rng.randint(0, 60)}\n".encode() for i in range(3000))
    path = tmp_path / "x.log"
    log = RotatingLog(path, max_bytes=1000, max_files=10_000)
    pos = 0
    while pos < len(data):
        n = rng.randint(1, 300)
        log.write(data[pos:pos + n])
        pos += n
    assert oldest_first(path) == data
    assert all(p.stat().st_size <= 1000 for p in generations(path))
    assert log.rotations == len(generations(path)) - 1 >= len(data) // 1000

    whole = tmp_path / "whole.log"
    log = RotatingLog(whole, max_bytes=1000, max_files=10_000)
    for line in data.splitlines(keepends=True):
        log.write(line)
    assert oldest_first(whole) == data
    assert all(p.read_bytes().endswith(b"\n") for p in generations(whole))
    assert all(990 - 70 < p.stat().st_size <= 1000 for p in generations(whole)[1:])  # full, to a line


def test_a_line_longer_than_the_cap_is_cut_into_cap_sized_pieces(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    log = RotatingLog(path, max_bytes=64, max_files=100)
    big = b"B" * 200 + b"\n"
    log.write(b"before\n")
    log.write(big)
    log.write(b"after\n")
    files = [p.read_bytes() for p in reversed(generations(path))]
    assert files == [b"before\n", b"B" * 64, b"B" * 64, b"B" * 64, b"B" * 8 + b"\n" + b"after\n"]
    # In one write, with lines around it: the same cut.
    other = tmp_path / "y.log"
    RotatingLog(other, max_bytes=64, max_files=100).write(b"before\n" + big + b"after\n")
    assert [p.read_bytes() for p in reversed(generations(other))] == files


def test_a_line_written_in_two_parts_stays_whole_unless_it_reaches_the_cap(tmp_path: Path) -> None:
    """print() in an unbuffered child: the text, then the newline, in two writes."""
    path = tmp_path / "x.log"
    log = RotatingLog(path, max_bytes=50, max_files=100)
    for i in range(20):
        log.write(f"message number {i:02d}".encode())
        log.write(b"\n")
    assert oldest_first(path) == b"".join(f"message number {i:02d}\n".encode() for i in range(20))
    assert all(p.read_bytes().endswith(b"\n") for p in generations(path))


def test_one_file_only_keeps_the_newest_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    log = RotatingLog(path, max_bytes=100, max_files=1)
    log.write(lines(0, 12))
    assert os.listdir(tmp_path) == ["x.log"]
    assert path.read_bytes() == lines(10, 12)


def test_no_cap_means_no_rotation(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    log = RotatingLog(path, max_bytes=0, max_files=2)
    log.write(lines(0, 1000))
    assert generations(path) == [path] and path.read_bytes() == lines(0, 1000)


def test_an_existing_log_is_appended_to_rotated_when_full_and_extra_generations_removed(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(b"an earlier run\n" * 20)  # 300 bytes, over the new cap
    for n in (1, 2, 3, 7):
        generation(path, n).write_bytes(b"old\n")
    (tmp_path / "x.log.01").write_bytes(b"not a generation\n")
    (tmp_path / "x.log.bak").write_bytes(b"not a generation\n")
    log = RotatingLog(path, max_bytes=100, max_files=3)
    assert [p.name for p in generations(path)] == ["x.log", "x.log.1", "x.log.2"]  # .3 and .7 are gone
    log.write(b"this run\n")
    assert path.read_bytes() == b"this run\n"
    assert generation(path, 1).read_bytes() == b"an earlier run\n" * 20
    assert generation(path, 2).read_bytes() == b"old\n"
    assert (tmp_path / "x.log.01").exists() and (tmp_path / "x.log.bak").exists()

    small = tmp_path / "y.log"
    small.write_bytes(b"an earlier run\n")
    RotatingLog(small, max_bytes=100).write(b"this run\n")
    assert small.read_bytes() == b"an earlier run\nthis run\n"  # appended: room enough


def test_write_errors_drop_data_and_never_raise_and_the_log_recovers(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    path = logs / "x.log"
    log = RotatingLog(path, max_bytes=40, max_files=2)
    log.write(lines(0, 2))  # 40 bytes: full
    for p in generations(path):
        p.unlink()
    logs.rmdir()  # someone removed the logs directory
    log.write(lines(2, 3))  # rotation needed: the new file cannot be created
    log.write(lines(3, 4))
    assert log.dropped == 40 and not logs.exists()
    logs.mkdir()
    log.write(lines(4, 5))
    assert path.read_bytes() == lines(4, 5)
    log.close()
    log.write(lines(5, 6))  # after close: dropped, the file is not reopened
    assert log.dropped == 60 and path.read_bytes() == lines(4, 5)


def test_concurrent_writers_interleave_whole_writes(tmp_path: Path) -> None:
    """The pump of a client's stderr and the supervisor writing its reports share one log."""
    path = tmp_path / "x.log"
    log = RotatingLog(path, max_bytes=4096, max_files=1000)

    def writer(tag: str) -> None:
        for i in range(500):
            log.write(f"{tag} {i:04d}\n".encode())

    threads = [threading.Thread(target=writer, args=(tag,)) for tag in ("aaaa", "bbbb", "cccc")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    got = oldest_first(path).decode().splitlines()
    assert len(got) == 1500
    for tag in ("aaaa", "bbbb", "cccc"):
        assert [line for line in got if line.startswith(tag)] == [f"{tag} {i:04d}" for i in range(500)]
    assert all(p.stat().st_size <= 4096 for p in generations(path))


def test_the_pump_copies_a_pipe_to_the_log_until_eof(tmp_path: Path) -> None:
    r, w = os.pipe()
    path = tmp_path / "x.log"
    log = RotatingLog(path, max_bytes=10_000, max_files=1000)
    pump = LogPump(os.fdopen(r, "rb", buffering=0), log, "test")
    data = lines(0, 5000)  # 100 KB: more than a pipe holds, so the pump must keep reading
    with os.fdopen(w, "wb", buffering=0) as out:
        out.write(data)
    assert pump.join(10) and pump.done
    assert oldest_first(path) == data and pump.bytes == len(data)


def test_tail_reaches_into_the_previous_generation(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    log = RotatingLog(path, max_bytes=60, max_files=3)
    log.write(lines(0, 4))  # 3 lines in x.log.1, 1 in x.log
    assert generation(path, 1).read_bytes() == lines(0, 3) and path.read_bytes() == lines(3, 4)
    assert tail(path, 2) == lines(2, 4).decode().splitlines()
    assert tail(path, 1) == lines(3, 4).decode().splitlines()
    assert tail(tmp_path / "missing.log", 5) == []


def test_text_stream_writes_each_line_through(tmp_path: Path) -> None:
    path = tmp_path / "s.log"
    stream = text_stream(RotatingLog(path, max_bytes=1000))
    stream.write("minimesh is up\n")
    assert path.read_text() == "minimesh is up\n"
    stream.write("no newline yet")
    stream.flush()
    assert path.read_text() == "minimesh is up\nno newline yet" and not stream.isatty()


def test_down_shows_what_the_supervisor_logged_even_across_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "supervisor.log"
    log = RotatingLog(path, max_bytes=60, max_files=2)
    log.write(b"minimesh is up\n")
    seen = control._position(path)
    log.write(b"warning: killing a (pid 1)\n")
    assert control._new_lines(path, seen) == ["warning: killing a (pid 1)"]
    log.write(b"warning: killing b (pid 2)\nminimesh stopped (run r)\n")  # rotates
    assert log.rotations == 1
    assert control._new_lines(path, seen) == ["warning: killing a (pid 1)", "warning: killing b (pid 2)",
                                              "minimesh stopped (run r)"]
    assert control._new_lines(tmp_path / "none.log", control._position(tmp_path / "none.log")) == []


@pytest.mark.parametrize(("text", "size"), [
    ("10m", 10 * 1024**2), ("10M", 10 * 1024**2), ("10MiB", 10 * 1024**2), ("10mb", 10 * 1024**2),
    ("512k", 512 * 1024), ("1g", 1024**3), ("1.5m", 1536 * 1024), ("4096", 4096), ("0", 0), (" 2 k ", 2048),
])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_up_log_options_have_documented_defaults_and_reach_the_detached_supervisor(tmp_path: Path) -> None:
    defaults = build_parser().parse_args(["up"])
    assert (defaults.log_max_size, defaults.log_max_files) == (DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES) == (
        10 * 1024 * 1024, 3)
    args = build_parser().parse_args(["up", "--log-max-size", "64k", "--log-max-files", "5"])
    assert (args.log_max_size, args.log_max_files) == (65536, 5)
    forwarded = _forwarded(args, tmp_path)
    assert forwarded[forwarded.index("--log-max-size") + 1] == "65536"
    assert forwarded[forwarded.index("--log-max-files") + 1] == "5"
    again = build_parser().parse_args(["up", *forwarded])
    assert (again.log_max_size, again.log_max_files) == (65536, 5)
    for bad in ("ten", "10x", "-1", "100", "1023"):
        with pytest.raises(argparse.ArgumentTypeError):
            log_size(bad)
    assert log_size("0") == 0 and log_size("1k") == 1024
    with pytest.raises(SystemExit):
        build_parser().parse_args(["up", "--log-max-files", "0"])
