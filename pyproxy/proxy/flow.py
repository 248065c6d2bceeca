"""Sending a queue of DATA chunks as far as HTTP/2 flow control allows (both directions of a proxied request)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from pyproxy.http2.connection import H2Connection


def send_queued(eng: H2Connection, sid: int, queue: deque[bytes], end_with_last: bool,
                keep: Callable[[bytes], None] | None) -> tuple[int, bool]:
    """Send chunks from ``queue`` as far as the stream's flow-control windows allow (splitting one if needed).

    Returns (bytes sent, END_STREAM sent). ``end_with_last``: put END_STREAM on the last chunk; ``keep`` is called
    with every piece sent (the retry buffer)."""
    sent = 0
    while queue:
        room = eng.max_send(sid)
        if room <= 0:
            break
        chunk = queue[0]
        if len(chunk) > room:
            part = chunk[:room]
            eng.send_data(sid, part)
            queue[0] = chunk[room:]
            if keep is not None:
                keep(part)
            return sent + room, False
        queue.popleft()
        last = end_with_last and not queue
        eng.send_data(sid, chunk, end_stream=last)
        sent += len(chunk)
        if keep is not None:
            keep(chunk)
        if last:
            return sent, True
    return sent, False
