"""Byte transports over non-blocking sockets on trio: plaintext and TLS (ssl.MemoryBIO), one API.

Reads are ``await transport.receive()`` from the connection's own task. Writes are synchronous and never
block: :meth:`Transport.write` tries the socket at once and keeps what the kernel did not take; the
connection's writer task (:meth:`Transport.run_writer`) sends the rest when the socket becomes writable. The
amount kept is visible as :attr:`Transport.pending`, which the proxy uses for backpressure: it stops
reading from a peer, or stops returning HTTP/2 flow-control window, while the other side's transport is above
:data:`HIGH_WATER`, and resumes from the drain callbacks once it falls below :data:`LOW_WATER`.

Why not ``trio.SocketStream``/``trio.SSLStream``: they cost ~11 us and ~22 us per operation here and need an
``await`` (a task switch) for every write; a proxy writes to many connections from one task per read, so a
synchronous, coalesced write path is the cheaper shape. The waiting is still trio's (``wait_readable`` /
``wait_writable``), so cancellation and nurseries work as usual.

Resource handling: the transport owns its socket; :meth:`close` closes it at once, dropping queued output (after
``notify_closing`` so tasks blocked on it wake up with ``trio.ClosedResourceError``). A connection that ends
normally uses :meth:`close_lingering` instead: queued output goes out, then a FIN, and the owner reads on until
the peer closes (closing with unread input would make the kernel send RST, which can destroy the last response
before the peer reads it).
Error handling: socket errors surface from ``receive`` as :class:`TransportClosed`; write errors mark the
transport broken and are reported by the next ``receive``, once what the peer sent before is read.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Callable

import trio

HIGH_WATER = 1 << 20  # 1 MiB pending -> apply backpressure
LOW_WATER = 256 << 10  # resume below 256 KiB
RECV_SIZE = 256 * 1024
_YIELD_EVERY = 16  # successive immediate reads before a forced scheduling point (fairness)

# One receive buffer for the whole process (one thread; the bytes are copied out before any await). Reading
# into it instead of recv(RECV_SIZE) avoids a 256 KiB malloc per read, which glibc serves from the heap and
# which fragmented it: RSS crept up by several MB under load.
_RECV_BUF = bytearray(RECV_SIZE)
_RECV_VIEW = memoryview(_RECV_BUF)


CLOSE_LINGER_TIMEOUT = 1.0  # how long a closing connection waits for its last bytes to go and the peer to close


class TransportClosed(Exception):
    """The connection is gone (EOF, reset, TLS failure, or closed locally)."""


class Transport:
    """A plaintext TCP connection."""

    __slots__ = ("_close_when_flushed", "_drain_callbacks", "_immediate_reads", "_out", "_wake_writer", "broken",
                 "closed", "high_water", "low_water", "pending", "sock")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.high_water = HIGH_WATER
        self.low_water = LOW_WATER
        self._out: list[bytes] = []
        self.pending = 0
        self._wake_writer = trio.Event()
        self._drain_callbacks: list[Callable[[], None]] = []
        self.closed = False
        self.broken: BaseException | None = None
        self._immediate_reads = 0
        self._close_when_flushed = False

    # -------------------------------------------------------------------------------------- reading

    async def _recv_raw(self) -> bytes:
        sock = self.sock
        while True:
            if self.broken is not None:
                # A write failed (the peer reset the connection), but what it sent before may still be waiting
                # to be read, e.g. a GOAWAY saying which of our streams it never processed: read that first.
                try:
                    n = sock.recv_into(_RECV_BUF)
                except OSError:
                    n = 0
                if n <= 0:
                    raise TransportClosed(str(self.broken))
                return bytes(_RECV_VIEW[:n])
            try:
                n = sock.recv_into(_RECV_BUF)
            except BlockingIOError:
                self._immediate_reads = 0
                try:
                    await trio.lowlevel.wait_readable(sock)
                except trio.ClosedResourceError:
                    raise TransportClosed("closed") from None
                continue
            except OSError as e:
                raise TransportClosed(e.strerror or str(e)) from None
            data = bytes(_RECV_VIEW[:n])
            self._immediate_reads += 1
            if self._immediate_reads >= _YIELD_EVERY:
                self._immediate_reads = 0
                await trio.lowlevel.checkpoint()
            else:
                await trio.lowlevel.checkpoint_if_cancelled()
            return data

    async def receive(self) -> bytes:
        """Bytes from the peer; ``b""`` at EOF. Raises TransportClosed on errors."""
        return await self._recv_raw()

    # -------------------------------------------------------------------------------------- writing

    def write(self, data: bytes) -> None:
        """Queue ``data``; sends immediately what the socket takes. Never blocks."""
        if self.closed or self.broken is not None or not data or self._close_when_flushed:
            return
        if self._out:
            self._out.append(data)
            self.pending += len(data)
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as e:
            self.broken = e
            return
        if sent < len(data):
            rest = data[sent:]
            self._out.append(rest)
            self.pending += len(rest)
            self._wake_writer.set()

    def _send_pending(self) -> bool:
        """Send what the socket takes; True when everything went out."""
        out = self._out
        while out:
            chunk = out[0]
            try:
                sent = self.sock.send(chunk)
            except BlockingIOError:
                return False
            except OSError as e:
                self.broken = e
                out.clear()
                self.pending = 0
                return True
            self.pending -= sent
            if sent < len(chunk):
                out[0] = chunk[sent:]
                return False
            out.pop(0)
        return True

    def set_buffer_limit(self, limit: int) -> None:
        """Envoy's per_connection_buffer_limit_bytes: the high-water mark of queued output."""
        self.high_water = max(limit, 16384)
        self.low_water = self.high_water // 4

    def on_drain(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once pending output falls below the low-water mark (now, if it already is)."""
        if self.pending < self.low_water:
            callback()
        else:
            self._drain_callbacks.append(callback)

    async def run_writer(self) -> None:
        """Send queued output whenever the socket is writable. Runs for the life of the connection."""
        while not self.closed:
            await self._wake_writer.wait()
            self._wake_writer = trio.Event()
            while self._out and not self.closed:
                try:
                    await trio.lowlevel.wait_writable(self.sock)
                except (trio.ClosedResourceError, OSError):
                    return
                self._send_pending()
                if self.pending < self.low_water and self._drain_callbacks:
                    self._fire_drain()
            if self._drain_callbacks:
                self._fire_drain()
            if self._close_when_flushed and not self._out:
                self._shutdown_write()

    def close_when_flushed(self) -> None:
        """Graceful close: what is queued goes out, then a FIN (``shutdown(SHUT_WR)``); later writes are dropped.

        The caller keeps reading until the peer closes too (a *lingering close*, as Envoy's delayed close and
        nginx's lingering_close do: closing a socket with unread input makes the kernel send RST, which can
        destroy the response the peer has not read yet) and arms a timer that calls :meth:`close`."""
        if self.closed or self._close_when_flushed:
            return
        self._close_when_flushed = True
        if not self._out:
            self._shutdown_write()
        else:
            self._wake_writer.set()

    def close_lingering(self, call_later: Callable[[float, Callable[[], None]], object],
                        timeout: float = CLOSE_LINGER_TIMEOUT) -> None:
        """:meth:`close_when_flushed`, and :meth:`close` for good after ``timeout`` seconds (``call_later`` is
        the runtime's timer) if the peer has neither read everything nor closed by then. Idempotent."""
        if self.closed or self._close_when_flushed:
            return
        self.close_when_flushed()
        if not self.closed:
            call_later(timeout, self.close)

    @property
    def closing(self) -> bool:
        """:meth:`close_when_flushed` was called."""
        return self._close_when_flushed

    def _shutdown_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _fire_drain(self) -> None:
        callbacks = self._drain_callbacks
        self._drain_callbacks = []
        for cb in callbacks:
            cb()

    async def wait_drained(self) -> None:
        """Wait until pending output is below the low-water mark (stop reading from a peer that never reads)."""
        while self.pending >= self.low_water and not self.closed and self.broken is None:
            event = trio.Event()
            self._drain_callbacks.append(event.set)
            await event.wait()

    async def flush(self, timeout: float = 1.0) -> None:
        """Best effort: wait until queued output has reached the kernel (used before closing)."""
        with trio.move_on_after(timeout):
            while self._out and not self.closed and self.broken is None:
                try:
                    await trio.lowlevel.wait_writable(self.sock)
                except (trio.ClosedResourceError, OSError):
                    return
                self._send_pending()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._out.clear()
        self.pending = 0
        self._wake_writer.set()
        try:
            trio.lowlevel.notify_closing(self.sock)
        except Exception:
            pass
        self.sock.close()
        self._fire_drain()

    # -------------------------------------------------------------------------------------- info

    @property
    def peer_address(self) -> tuple[str, int]:
        try:
            addr = self.sock.getpeername()
        except OSError:
            return ("", 0)
        return (addr[0], addr[1])

    @property
    def local_address(self) -> tuple[str, int]:
        try:
            addr = self.sock.getsockname()
        except OSError:
            return ("", 0)
        return (addr[0], addr[1])

    @property
    def secure(self) -> bool:
        return False

    @property
    def alpn(self) -> str | None:
        return None

    def peer_certificate(self) -> dict[str, object] | None:
        return None


class PrefixedTransport(Transport):
    """A plaintext transport that first replays bytes already read (for protocol sniffing)."""

    __slots__ = ("_prefix",)

    def __init__(self, sock: socket.socket, prefix: bytes) -> None:
        super().__init__(sock)
        self._prefix = prefix

    async def receive(self) -> bytes:
        if self._prefix:
            data, self._prefix = self._prefix, b""
            await trio.lowlevel.checkpoint()
            return data
        return await self._recv_raw()


class TlsTransport(Transport):
    """TLS over a non-blocking socket with ``ssl.MemoryBIO`` (OpenSSL does the crypto, we move the bytes)."""

    __slots__ = ("_in", "_prefix", "_ssl", "_tls_out", "first_bytes")

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, *, server_side: bool,
                 server_hostname: str | None = None, prefix: bytes = b"") -> None:
        super().__init__(sock)
        self._in = ssl.MemoryBIO()
        self._tls_out = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._in, self._tls_out, server_side=server_side,
                                     server_hostname=server_hostname)
        self._prefix = prefix
        self.first_bytes = b""  # what the peer sent first (tells a plaintext client apart in logs)

    async def _feed(self) -> bool:
        """Read ciphertext from the socket into the TLS engine; False at EOF."""
        if self._prefix:
            data, self._prefix = self._prefix, b""
        else:
            data = await self._recv_raw()
        if not self.first_bytes:
            self.first_bytes = data[:24]
        if not data:
            self._in.write_eof()
            return False
        self._in.write(data)
        return True

    def _flush_tls(self) -> None:
        data = self._tls_out.read()
        if data:
            Transport.write(self, data)

    async def handshake(self) -> None:
        """Run the TLS handshake (callers bound it with a timeout). Raises TransportClosed on failure."""
        while True:
            try:
                self._ssl.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush_tls()
                if not await self._feed():
                    raise TransportClosed("connection closed during the TLS handshake") from None
            except ssl.SSLError as e:
                self._flush_tls()  # send the alert
                why = f" ({e.verify_message})" if isinstance(e, ssl.SSLCertVerificationError) else ""
                raise TransportClosed(f"TLS error: {e.reason or e}{why}") from None
        self._flush_tls()

    async def receive(self) -> bytes:
        ssl_obj = self._ssl
        while True:
            chunks: list[bytes] = []
            try:
                while True:
                    n: int = ssl_obj.read(RECV_SIZE, _RECV_BUF)  # type: ignore[assignment]  # int with a buffer
                    if not n:  # EOF after close_notify: SSLObject.read returns 0 instead of raising
                        return b"".join(chunks)
                    chunks.append(bytes(_RECV_VIEW[:n]))
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                if chunks:
                    return b"".join(chunks)
                return b""
            except ssl.SSLError as e:
                raise TransportClosed(f"TLS error: {e.reason or e}") from None
            if self._tls_out.pending:
                self._flush_tls()  # post-handshake messages (session tickets, key updates)
            if chunks:
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if not await self._feed():
                # EOF without close_notify: treat as EOF (peers often do this).
                return b""

    def write(self, data: bytes) -> None:
        if self.closed or self.broken is not None or not data or self._close_when_flushed:
            return
        try:
            self._ssl.write(data)
        except ssl.SSLError as e:
            self.broken = e
            return
        Transport.write(self, self._tls_out.read())

    def _send_close_notify(self) -> None:
        try:
            self._ssl.unwrap()
        except (ssl.SSLError, ValueError):
            pass
        self._flush_tls()

    def close(self) -> None:
        if not self.closed and self.broken is None and not self._close_when_flushed:
            self._send_close_notify()
        super().close()

    def close_when_flushed(self) -> None:
        if not self.closed and self.broken is None and not self._close_when_flushed:
            self._send_close_notify()
        super().close_when_flushed()

    @property
    def secure(self) -> bool:
        return True

    @property
    def alpn(self) -> str | None:
        return self._ssl.selected_alpn_protocol()

    def peer_certificate(self) -> dict[str, object] | None:
        cert = self._ssl.getpeercert()
        return dict(cert) if cert else None

    def peer_certificate_der(self) -> bytes | None:
        return self._ssl.getpeercert(binary_form=True)


def is_disconnect(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED)
