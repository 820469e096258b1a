"""A small HTTP/1.1 server for the metrics exporter: one thread, bounded connections,
timeouts, and responses streamed as fast as the client takes them.

`admission.metrics.serve` runs one on a daemon thread. Every connection is read and written
without blocking, from one selector loop, so the number of threads never depends on the
number of clients:

- at most ``max_connections`` connections are open: one more closes the connection that has
  waited longest for a request, or is itself closed when every connection is busy sending;
- a client has ``idle_timeout`` seconds to send a complete request, counted from when it
  connected or was last answered: an idle keep-alive connection, a half-open one and a
  client trickling its headers are all closed after that;
- a response must be taken by the client within ``send_timeout`` seconds, else the
  connection is closed;
- a response's body is an iterator of chunks, pulled only when the socket has room for more:
  a client that reads slowly, or not at all, holds one chunk, never a whole body.

It serves GET and HEAD; the application (`App`) decides what every path returns.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

__all__ = ["App", "Request", "Response", "Server"]

_log = logging.getLogger("admission.metrics")

MAX_REQUEST_BYTES = 16 * 1024
"""Request line and headers together; a longer request is answered 431 and closed."""

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    505: "HTTP Version Not Supported",
}


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request (its body, if any, is not read: only GET and HEAD are served)."""

    method: str
    path: str
    query: dict[str, list[str]]
    version: str
    headers: dict[str, str]
    """Header names in lower case; a repeated header's values joined with ``", "``."""


@dataclass(slots=True)
class Response:
    """What the application answers: the body is pulled one chunk at a time."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: Iterable[bytes] = ()


App = Callable[[Request], Response]
"""Turns a request into a response. Called on the server's thread; the body's chunks too."""


class _Conn:
    """One client connection: reading a request, or sending a response."""

    __slots__ = (
        "body",
        "close_after",
        "deadline",
        "framed",
        "inbuf",
        "out",
        "sending",
        "sock",
    )

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.deadline = deadline
        self.sending = False
        self.out = memoryview(b"")
        self.body: Iterator[bytes] | None = None
        self.framed = False  # chunked transfer encoding
        self.close_after = False


class Server:
    """Serves `App` on a listening socket until `stop`; see the module docs for the bounds.

    ``clock`` is the time source of the timeouts (``time.monotonic``).
    """

    def __init__(
        self,
        sock: socket.socket,
        app: App,
        *,
        max_connections: int,
        idle_timeout: float,
        send_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._listener = sock
        self._app = app
        self._max_connections = max_connections
        self._idle_timeout = idle_timeout
        self._send_timeout = send_timeout
        self._clock = clock
        self._conns: dict[socket.socket, _Conn] = {}
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._paused_until: float | None = None  # not accepting until then (out of fds)
        self._pipelined: collections.deque[_Conn] = collections.deque()
        self._stopping = threading.Event()
        self._done = threading.Event()
        sock.setblocking(False)
        self._wake_r.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._conns)

    def serve_forever(self) -> None:
        """Runs the loop until `stop`; then closes every connection and the listener."""
        try:
            while not self._stopping.is_set():
                self._step()
        finally:
            for conn in list(self._conns.values()):
                self._close(conn)
            self._selector.close()
            self._listener.close()
            self._wake_r.close()
            self._wake_w.close()
            self._done.set()

    def stop(self) -> None:
        """Stops the loop (from any thread) and waits until it has closed everything."""
        self._stopping.set()
        with contextlib.suppress(OSError):  # already closed: the loop has ended
            self._wake_w.send(b"\0")
        self._done.wait()

    # -- the loop -------------------------------------------------------------------------

    def _step(self) -> None:
        now = self._clock()
        timeout = None
        if self._conns:
            timeout = max(0.0, min(c.deadline for c in self._conns.values()) - now)
        if self._paused_until is not None:
            timeout = min(timeout, 0.5) if timeout is not None else 0.5
        for key, mask in self._selector.select(timeout):
            if key.fileobj is self._listener:
                self._accept()
            elif key.fileobj is self._wake_r:
                self._wake_r.recv(64)
            elif (conn := self._conns.get(key.fileobj)) is not None:  # type: ignore[call-overload]
                self._guarded(conn, self._read if mask & selectors.EVENT_READ else self._write)
        while self._pipelined:
            conn = self._pipelined.popleft()
            if conn.sock in self._conns and not conn.sending:
                self._guarded(conn, self._next_request)
        now = self._clock()
        for conn in [c for c in self._conns.values() if now >= c.deadline]:
            self._close(conn)
        if self._paused_until is not None and now >= self._paused_until:
            self._paused_until = None
            self._selector.register(self._listener, selectors.EVENT_READ, None)

    def _guarded(self, conn: _Conn, step: Callable[[_Conn], None]) -> None:
        try:
            step(conn)
        except Exception:
            # One client's trouble (or a bug) never ends the exporter.
            _log.exception("metrics exporter: a connection failed")
            self._close(conn)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except (ConnectionAbortedError, ConnectionResetError):
                continue  # gone before it was accepted
            except OSError as e:
                # Out of file descriptors (or memory): stop accepting for a moment rather
                # than spin on a listener that stays readable.
                _log.warning("metrics exporter cannot accept connections for now: %s", e)
                self._selector.unregister(self._listener)
                self._paused_until = self._clock() + 0.5
                return
            if len(self._conns) >= self._max_connections and not self._evict():
                sock.close()  # every connection is sending: no room
                continue
            sock.setblocking(False)
            conn = _Conn(sock, self._clock() + self._idle_timeout)
            self._conns[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ, None)

    def _evict(self) -> bool:
        """Closes the connection waiting longest for a request; False if none is."""
        waiting = [c for c in self._conns.values() if not c.sending]
        if not waiting:
            return False
        self._close(min(waiting, key=lambda c: c.deadline))
        return True

    def _close(self, conn: _Conn) -> None:
        if self._conns.pop(conn.sock, None) is None:
            return
        self._selector.unregister(conn.sock)
        conn.sock.close()
        conn.out = memoryview(b"")
        body, conn.body = conn.body, None
        if body is not None:
            _close_body(body)

    # -- reading a request ----------------------------------------------------------------

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:  # the client closed (or half-closed) without a complete request
            self._close(conn)
            return
        conn.inbuf += data
        self._next_request(conn)

    def _next_request(self, conn: _Conn) -> None:
        """Answers the request in the buffer if it is complete."""
        end = conn.inbuf.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.inbuf) > MAX_REQUEST_BYTES:
                self._respond(conn, _error(431, "request headers too large"), close=True)
            return
        head = bytes(conn.inbuf[:end])
        del conn.inbuf[: end + 4]
        try:
            request = _parse(head.decode("latin-1"))
        except ValueError as e:
            self._respond(conn, _error(400, str(e)), close=True)
            return
        if request.version not in ("HTTP/1.0", "HTTP/1.1"):
            self._respond(conn, _error(505, "HTTP/1.0 or HTTP/1.1 only"), close=True)
            return
        if request.method not in ("GET", "HEAD"):
            response = _error(405, "GET or HEAD only")
            response.headers.append(("Allow", "GET, HEAD"))
            # Any request body would be read as the next request: close instead.
            self._respond(conn, response, close=True)
            return
        connection = request.headers.get("connection", "").lower()
        close = (
            "close" in connection
            if request.version == "HTTP/1.1"
            else "keep-alive" not in connection
        )
        try:
            response = self._app(request)
        except Exception:
            _log.exception("metrics exporter failed to answer %s %s", request.method, request.path)
            response = _error(500, "the exporter failed; see its log")
        chunked = request.version == "HTTP/1.1"
        self._respond(conn, response, close=close, head=request.method == "HEAD", chunked=chunked)

    # -- sending a response ---------------------------------------------------------------

    def _respond(
        self,
        conn: _Conn,
        response: Response,
        *,
        close: bool,
        head: bool = False,
        chunked: bool = False,
    ) -> None:
        """Starts sending ``response``. ``chunked``: the client takes a chunked body
        (HTTP/1.1); a body of unknown length otherwise ends with the connection."""
        body = iter(response.body)
        first = b""
        if not head:
            # The first chunk before the status line: a failure there is still a 500.
            try:
                first = next(body, b"")
            except Exception:
                _log.exception("metrics exporter failed to render a response")
                _close_body(body)
                response, body = _error(500, "the exporter failed; see its log"), iter(())
                first = next(body, b"")
        else:
            _close_body(body)
            body = iter(())
        headers = [(k, v) for k, v in response.headers if k.lower() != "connection"]
        has_length = any(k.lower() == "content-length" for k, _ in headers)
        conn.framed = chunked and not head and not has_length and not close
        if conn.framed:
            headers.append(("Transfer-Encoding", "chunked"))
        elif not has_length and not head:
            close = True  # the body ends when the connection does
        headers.append(("Connection", "close" if close else "keep-alive"))
        status = f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}\r\n"
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers)
        out = (status + lines + "\r\n").encode("latin-1") + self._frame(conn, first)
        conn.out = memoryview(out)
        conn.body = body
        conn.close_after = close
        conn.sending = True
        conn.deadline = self._clock() + self._send_timeout
        self._selector.modify(conn.sock, selectors.EVENT_WRITE, None)
        self._write(conn)

    def _frame(self, conn: _Conn, chunk: bytes) -> bytes:
        if not conn.framed or not chunk:
            return chunk
        return b"%x\r\n%b\r\n" % (len(chunk), chunk)

    def _write(self, conn: _Conn) -> None:
        # A few chunks per turn, so that one fast client does not hold up the others.
        for _ in range(8):
            if not conn.out:
                if not self._pull(conn):
                    return
                continue
            try:
                sent = conn.sock.send(conn.out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close(conn)
                return
            conn.out = conn.out[sent:]
            if conn.out:
                return  # the socket is full: wait until it is writable

    def _pull(self, conn: _Conn) -> bool:
        """Puts the next chunk of the body in ``out``; False when the response has ended
        (the connection is then closed or waits for the next request)."""
        body = conn.body
        if body is None:
            self._finish(conn)
            return False
        try:
            chunk = next(body, None)
        except Exception:
            # The status line is sent: closing mid-body is how the client learns of it.
            _log.exception("metrics exporter failed while sending a response")
            self._close(conn)
            return False
        if chunk is None:
            conn.body = None
            if not conn.framed:
                self._finish(conn)
                return False
            conn.out = memoryview(b"0\r\n\r\n")  # the last chunk
            return True
        conn.out = memoryview(self._frame(conn, chunk))
        return True

    def _finish(self, conn: _Conn) -> None:
        if conn.close_after:
            self._close(conn)
            return
        conn.sending = False
        conn.deadline = self._clock() + self._idle_timeout
        self._selector.modify(conn.sock, selectors.EVENT_READ, None)
        if conn.inbuf:  # a pipelined request: answered by the loop, not from in here
            self._pipelined.append(conn)


def _close_body(body: Iterator[bytes]) -> None:
    close = getattr(body, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            _log.exception("metrics exporter: closing a response body failed")


def _error(status: int, message: str) -> Response:
    body = (message + "\n").encode()
    return Response(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
        (body,),
    )


def _parse(head: str) -> Request:
    line, *header_lines = head.split("\r\n")
    parts = line.split(" ")
    if len(parts) != 3:
        raise ValueError(f"malformed request line {line[:100]!r}")
    method, target, version = parts
    headers: dict[str, str] = {}
    for h in header_lines:
        name, sep, value = h.partition(":")
        if not sep or not name or name != name.strip():
            raise ValueError(f"malformed header line {h[:100]!r}")
        name, value = name.lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    url = urlsplit(target)
    return Request(method, url.path or "/", parse_qs(url.query), version, headers)
