"""The exporter over real HTTP: `adm.metrics.serve` on a free loopback port, scraped with urllib
and parsed with prometheus_client's parser."""

from __future__ import annotations

import gzip
import http.client
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

import admission as adm
from admission.metrics.server import Request, Response, Server


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_serve_scrape_parse_stop() -> None:
    name = f"http-{uuid.uuid4().hex[:8]}"
    sem = adm.Semaphore(8, name=name)
    bucket = adm.TokenBucket(rate=10, burst=10, name=name)
    assert sem.try_acquire(3)
    assert bucket.try_acquire(4)
    assert not bucket.try_acquire(7)
    registry = prometheus_client.CollectorRegistry()
    exporter = adm.metrics.serve(port=0, addr="127.0.0.1", registry=registry)
    try:
        assert exporter.port > 0
        assert exporter.url == f"http://127.0.0.1:{exporter.port}/metrics"
        samples = scrape(exporter.url)
        sem_labels = {("kind", "semaphore"), ("limiter", name)}
        tb_labels = {("kind", "token_bucket"), ("limiter", name)}
        assert samples[("admission_permits_in_use", frozenset(sem_labels))] == 3
        assert samples[("admission_permits_limit", frozenset(sem_labels))] == 8
        assert samples[("admission_tokens_capacity", frozenset(tb_labels))] == 10
        assert samples[("admission_tokens_available", frozenset(tb_labels))] >= 6
        rejected = frozenset(tb_labels | {("outcome", "rejected")})
        assert samples[("admission_acquisitions_total", rejected)] == 1
        inf = frozenset(tb_labels | {("le", "+Inf")})
        assert samples[("admission_wait_seconds_bucket", inf)] == 1
        # Later calls show at the next scrape: nothing is cached.
        sem.release(3)
        assert scrape(exporter.url)[("admission_permits_in_use", frozenset(sem_labels))] == 0
    finally:
        exporter.stop()
        adm.metrics.unregister(registry)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(exporter.url, timeout=2)
    exporter.stop()  # idempotent


def test_exporter_is_a_context_manager() -> None:
    registry = prometheus_client.CollectorRegistry()
    with adm.metrics.serve(port=0, registry=registry) as exporter:
        assert scrape(exporter.url)
    adm.metrics.unregister(registry)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(exporter.url, timeout=2)


def test_a_second_process_on_the_same_port_gets_a_clear_error() -> None:
    # Issue 12 (9): uvicorn --workers 2, each worker calling serve(port=...) with one port.
    registry = prometheus_client.CollectorRegistry()
    with adm.metrics.serve(port=0, registry=registry) as exporter:
        script = (
            "import admission as adm\n"
            f"try:\n    adm.metrics.serve(port={exporter.port})\n"
            "except adm.metrics.PortInUseError as e:\n"
            "    import errno; assert e.errno == errno.EADDRINUSE and isinstance(e, OSError)\n"
            "    print(e.port, e)\n"
            "else:\n    raise SystemExit('served')\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"{exporter.port} cannot serve metrics on 127.0.0.1:")
        assert "own port" in done.stdout
        # The first exporter still serves.
        assert scrape(exporter.url)
    adm.metrics.unregister(registry)


def test_port_in_use_leaves_the_registry_as_it_was() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sem = adm.Semaphore(3, name=f"in-use-{uuid.uuid4().hex[:8]}")
        labels = {"kind": "semaphore", "limiter": sem.name or ""}
        registry = prometheus_client.CollectorRegistry()
        with pytest.raises(adm.metrics.PortInUseError, match=rf"port={port}\b"):
            adm.metrics.serve(port=port, registry=registry)
        assert registry.get_sample_value("admission_permits_limit", labels) is None
        # Registered before: stays registered.
        adm.metrics.register(registry)
        with pytest.raises(OSError, match="already in use"):
            adm.metrics.serve(port=port, registry=registry)
        assert registry.get_sample_value("admission_permits_limit", labels) == 3
        adm.metrics.unregister(registry)


# ---------------------------------------------------------------------------------------------
# Bounded by design, whatever the clients do (issue 12, case 6)
# ---------------------------------------------------------------------------------------------


def raise_fd_limit(needed: int) -> None:
    """Makes room for ``needed`` more file descriptors (the soft limit is often 1,024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            raise AssertionError(
                f"the test needs {want} file descriptors; the hard limit is {hard}"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def closed_by_peer(sock: socket.socket, within: float = 30.0) -> bool:
    """Reads (and discards) until the server closes ``sock``; False if it has not within
    ``within`` seconds."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def answers(url: str) -> bool:
    """Whether a scrape of ``url`` gets the exposition (primitives or not)."""
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status == 200 and b"# TYPE admission_limiters gauge" in response.read()


def test_a_thousand_idle_connections_hold_no_threads_and_are_closed() -> None:
    # 1,000 idle (or half-open) connections held 1,000 threads forever.
    raise_fd_limit(2_100)
    name = f"idle-{uuid.uuid4().hex[:8]}"
    keep = adm.Semaphore(5, name=name)
    limit = ("admission_permits_limit", frozenset({("kind", "semaphore"), ("limiter", name)}))
    registry = prometheus_client.CollectorRegistry()
    with adm.metrics.serve(port=0, registry=registry) as exporter:
        threads = threading.active_count()
        idle = [socket.create_connection(("127.0.0.1", exporter.port), timeout=30)]
        try:
            for _ in range(999):
                idle.append(socket.create_connection(("127.0.0.1", exporter.port), timeout=30))
            # Served meanwhile: the exporter accepted all of them before this scrape.
            assert scrape(exporter.url)[limit] == 5
            assert threading.active_count() <= threads
            assert exporter.connections <= 16
            # Every one of them is closed by the server: the oldest to make room for newer
            # ones, the rest after the idle timeout (10 s by default).
            assert sum(not closed_by_peer(s, within=60.0) for s in idle) == 0
        finally:
            for s in idle:
                s.close()
        assert scrape(exporter.url)[limit] == 5
    adm.metrics.unregister(registry)
    del keep


def test_silent_and_trickling_clients_are_closed_at_the_idle_timeout() -> None:
    registry = prometheus_client.CollectorRegistry()
    with adm.metrics.serve(port=0, registry=registry, idle_timeout=0.5) as exporter:
        silent = socket.create_connection(("127.0.0.1", exporter.port), timeout=10)
        trickle = socket.create_connection(("127.0.0.1", exporter.port), timeout=10)
        trickle.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        kept_alive = http.client.HTTPConnection("127.0.0.1", exporter.port, timeout=10)
        kept_alive.request("GET", "/metrics")
        response = kept_alive.getresponse()
        assert response.status == 200
        assert response.getheader("Connection") == "keep-alive"
        response.read()
        assert kept_alive.sock is not None
        # A header byte every 0.1 s does not keep a connection open: the request must be
        # complete within the timeout.
        closed = False
        for _ in range(200):
            try:
                trickle.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.1)
        assert closed or closed_by_peer(trickle, within=10.0)
        assert closed_by_peer(silent, within=10.0)
        assert closed_by_peer(kept_alive.sock, within=10.0)
        for s in (silent, trickle):
            s.close()
        kept_alive.close()
        assert answers(exporter.url)
    adm.metrics.unregister(registry)


def test_one_more_connection_than_allowed_closes_the_longest_idle() -> None:
    registry = prometheus_client.CollectorRegistry()
    with adm.metrics.serve(port=0, registry=registry, max_connections=3) as exporter:
        first = socket.create_connection(("127.0.0.1", exporter.port), timeout=10)
        others = [
            socket.create_connection(("127.0.0.1", exporter.port), timeout=10) for _ in range(2)
        ]
        assert closed_by_peer(first, within=0.2) is False  # within the cap: left open
        # The scrape's connection is the fourth: the first idle one makes room.
        assert answers(exporter.url)
        assert closed_by_peer(first, within=10.0)
        for s in (first, *others):
            s.close()
    adm.metrics.unregister(registry)


_SLOW_READERS_CHILD = """
import resource, sys, threading
import admission as adm, prometheus_client
keep = [adm.Semaphore(10, name=f"slow-reader-{i}") for i in range(int(sys.argv[1]))]
registry = prometheus_client.CollectorRegistry()
exporter = adm.metrics.serve(port=0, registry=registry)
print(exporter.port, flush=True)
for line in sys.stdin:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(peak * (1 if sys.platform == "darwin" else 1024), flush=True)
"""


def test_clients_that_never_read_cost_no_body_each() -> None:
    # 20 clients that never read a 9 MiB body pushed the exporter's RSS to ~1 GB: each
    # response was built whole. Now each is rendered as it is read.
    readers: list[socket.socket] = []
    with subprocess.Popen(
        [sys.executable, "-c", _SLOW_READERS_CHILD, "2000"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        stdin, stdout = child.stdin, child.stdout

        def peak_rss() -> int:
            stdin.write("rss\n")
            stdin.flush()
            return int(stdout.readline().split()[0])

        try:
            port = int(stdout.readline())
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=120) as r:
                body = len(r.read())  # one scrape read in full: the warm state
            assert body > 5 * 2**20
            before = peak_rss()
            request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n"
            for _ in range(20):
                s = socket.create_connection(("127.0.0.1", port), timeout=120)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.sendall(request)
                readers.append(s)
            # Each has its status line (the exporter is sending to it), or was refused
            # (closed: more clients than max_connections); none reads its body.
            served = 0
            for s in readers:
                try:
                    head = s.recv(12, socket.MSG_PEEK)
                except ConnectionResetError:
                    head = b""
                assert head in (b"", b"HTTP/1.1 200", b"HTTP/1.0 200"), head
                served += head != b""
            assert served >= 16
            grown = peak_rss() - before
            assert grown < 20 * body / 4, (
                f"{grown / 2**20:.0f} MiB for 20 responses of {body / 2**20:.1f} MiB"
            )
        finally:
            for s in readers:
                s.close()
            child.kill()


def test_a_body_is_pulled_only_as_fast_as_the_client_reads() -> None:
    # An endless body: buffering a response whole would never end. It is pulled while the
    # socket takes more, and dropped (closed) when the client has not taken it in time.
    pulled = 0
    closed = threading.Event()

    def endless() -> Iterator[bytes]:
        nonlocal pulled
        try:
            while True:
                pulled += 1
                yield b"x" * 65536
        finally:
            closed.set()

    def app(request: Request) -> Response:
        return Response(200, [("Content-Type", "text/plain")], endless())

    listener = socket.create_server(("127.0.0.1", 0))
    server = Server(listener, app, max_connections=4, idle_timeout=10.0, send_timeout=1.0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = socket.create_connection(listener.getsockname()[:2], timeout=10)
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert closed.wait(30), "the body was never closed"
        # What the socket buffers took (a few MiB on loopback), not an unbounded amount.
        assert pulled < 300, pulled
        assert closed_by_peer(client, within=10.0)
        client.close()
        assert server.connections == 0
    finally:
        server.stop()
        thread.join(timeout=30)
    assert not thread.is_alive()


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_http_keep_alive_pipelining_head_gzip_and_errors() -> None:
    name = f"http-{uuid.uuid4().hex[:8]}"
    keep = adm.Semaphore(2, name=name)
    registry = prometheus_client.CollectorRegistry()
    app_counter = prometheus_client.Counter("app_jobs", "Jobs.", registry=registry)
    app_counter.inc(3)
    with adm.metrics.serve(port=0, registry=registry) as exporter:
        port = exporter.port
        # Keep-alive: two requests on one connection; the registry's own metrics follow
        # admission's, which appear once (the collector is not asked for them again).
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/metrics")
        first = conn.getresponse()
        text = first.read().decode()
        sock = conn.sock
        conn.request("GET", "/")
        assert conn.getresponse().read().decode().count("# TYPE admission_limiters gauge") == 1
        assert conn.sock is sock
        assert first.getheader("Transfer-Encoding") == "chunked"
        assert first.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
        assert text.count("# TYPE admission_limiters gauge") == 1
        samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }
        assert samples[("app_jobs_total", frozenset())] == 3
        labels = frozenset({("kind", "semaphore"), ("limiter", name)})
        assert samples[("admission_permits_limit", labels)] == 2
        # HEAD: the headers only.
        conn.request("HEAD", "/metrics")
        head = conn.getresponse()
        assert head.status == 200
        assert head.read() == b""
        # gzip, as Prometheus asks for it.
        conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        zipped = conn.getresponse()
        assert zipped.getheader("Content-Encoding") == "gzip"
        assert "# TYPE admission_limiters gauge" in gzip.decompress(zipped.read()).decode()
        # prometheus_client's name filter.
        conn.request("GET", "/metrics?name[]=admission_permits_limit&name[]=app_jobs_total")
        filtered = conn.getresponse().read().decode()
        assert {f.name for f in text_string_to_metric_families(filtered)} == {
            "admission_permits_limit",
            "app_jobs",
        }
        # Other methods: 405, and the connection closes (a body would follow).
        conn.request("POST", "/metrics", body=b"x")
        refused = conn.getresponse()
        assert refused.status == 405
        assert refused.getheader("Allow") == "GET, HEAD"
        refused.read()
        conn.close()
        # Pipelined requests are answered in order; HTTP/1.0 closes after its answer.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            raw.sendall(
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /favicon.ico HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /metrics HTTP/1.0\r\n\r\n"
            )
            replies = read_all(raw)
        assert replies.count(b"HTTP/1.1 200 OK\r\n") == 2
        assert replies.count(b"HTTP/1.1 404 Not Found\r\n") == 1
        last = replies.rsplit(b"HTTP/1.1 200 OK\r\n", 1)[1]
        assert b"Connection: close\r\n" in last
        assert b"Transfer-Encoding" not in last
        assert b"\napp_jobs_total 3.0\n" in last  # whole: the end of the body is the close
        # Hundreds pipelined at once are answered one after the other (not recursively), and
        # an HTTP/1.0 client asking to keep the connection gets no chunked body: it closes.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            raw.sendall(
                b"GET /favicon.ico HTTP/1.1\r\nHost: x\r\n\r\n" * 500
                + b"GET /metrics HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
            )
            replies = read_all(raw)
        assert replies.count(b"HTTP/1.1 404 Not Found\r\n") == 500
        assert b"Transfer-Encoding" not in replies.rsplit(b"HTTP/1.1 200 OK\r\n", 1)[1]
        # Malformed and oversized requests: an error, then closed.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            raw.sendall(b"nonsense\r\n\r\n")
            assert read_all(raw).startswith(b"HTTP/1.1 400 Bad Request\r\n")
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\n" + b"X-Filler: " + b"a" * 20_000)
            assert read_all(raw).startswith(b"HTTP/1.1 431 ")
        assert scrape(exporter.url)
    adm.metrics.unregister(registry)
    del keep
