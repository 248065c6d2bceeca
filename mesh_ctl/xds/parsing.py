"""Parse the files of a management API request in a process of its own, so the control plane's event loop
never waits for it (issue 9.6).

Parsing 1.5 MiB of YAML costs seconds of CPU. In a worker thread that is not enough: libyaml's C parser holds
the GIL for stretches of ~200 ms, and the loop (ADS streams, the API) waits for each. A child process has a
GIL of its own: the loop only unpickles the result (~50 ms for a 1.5 MiB object). One child, started on
first use ("spawn": never a fork of this multi-threaded gRPC process) and kept; a child that dies (killed,
out of memory) is replaced on the next request, and that request is answered with an error.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from mesh_ctl.resources.loader import Loaded, load_files
from mesh_ctl.runtime.procs import kill_with_parent

log = logging.getLogger("mesh_ctl.api")


class ParserGone(Exception):
    """The parsing process died while parsing (the request is not applied)."""


class FileParser:
    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    async def load(self, texts: Sequence[tuple[str, str]]) -> Loaded:
        """:func:`~mesh_ctl.resources.loader.load_files` of ``texts``, in the parsing process."""
        if self._pool is None:
            # The child dies with the control plane, however that ends (SIGKILL included): its queue pipe never
            # reports EOF to it (it holds both ends), so without this it outlived every control plane.
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=kill_with_parent, initargs=(os.getpid(),))
        pool = self._pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, load_files, list(texts))
        except BrokenProcessPool as e:
            log.error("the file parsing process died: %s; a new one is started for the next request", e)
            if self._pool is pool:
                self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise ParserGone("the process parsing the files died (out of memory?); nothing was applied") from e

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
