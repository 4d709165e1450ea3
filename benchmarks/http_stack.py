"""The sidecar's HTTP stack, measured (``make bench-http-stack``): the same app behind the
standard library's ``ThreadingHTTPServer`` (what the sidecar used before) and behind
uvicorn (what it uses now), side by side in one run.

    python -m benchmarks.http_stack [--requests 2000] [--out benchmarks/results/http_stack.json]

Each stack serves, in a child process of its own, the real ``SidecarApp`` over the test
doubles of the sidecar's tests (``ModelClientTestDouble`` answering after a 2 ms wait that
releases the GIL, as a gRPC call does; the embedded catalogue), so only the HTTP layer
differs.  The load generator (``benchmarks.load``) runs here, on the same two cores:

* closed loop at concurrency 1, 8, 32, 64;
* slow clients: 64 connections that send their request head a byte at a time, and 64
  that stop half-way through the body, then the closed loop at concurrency 8 again, with
  the server's thread count read from ``/proc``.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import socket
import subprocess
import sys
import time
from typing import Any

from benchmarks.report import command_line, write_results
from stars.environment import configure

STACKS = ("stdlib", "uvicorn")


# ------------------------------------------------------------------------------ the server
def _app():
    from stars.environment import configure
    configure()
    from serving.sidecar.api import SidecarApp
    from serving.sidecar.popularity import Popularity
    from serving.sidecar.recommender import Recommender, RecommenderConfig
    from serving.sidecar.user_store import InMemoryUserEmbeddingStore
    from tests.test_sidecar_doubles import ModelClientTestDouble, catalog_backend
    catalog = catalog_backend()
    model = ModelClientTestDouble()
    model.delay_s = 0.002
    store = InMemoryUserEmbeddingStore()
    store.put("known", [1, 0, 0, 0], [0, 1, 0, 0], "7")
    return SidecarApp(Recommender(model, catalog, Popularity(catalog), store,
                                  RecommenderConfig(budget_s=0.2)))


def _serve_stdlib(app, port: int) -> None:
    """The pre-uvicorn sidecar's transport, reduced to what this comparison needs: a
    thread per connection, a 30 s socket timeout, keep-alive."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from serving.sidecar.api import error_response
    from serving.sidecar.validation import RequestError

    class Handler(BaseHTTPRequestHandler):
        protocol_version, wbufsize, timeout = "HTTP/1.1", -1, 30

        def log_message(self, *args):
            pass

        def do_POST(self):
            arrival = time.perf_counter()
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                status, headers, body = app.recommendations(raw, arrival)
            except RequestError as e:
                status, headers, body = error_response(e)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        daemon_threads, request_queue_size = True, 256
    Server(("127.0.0.1", port), Handler).serve_forever()


def serve(stack: str, port: int) -> None:
    app = _app()
    if stack == "stdlib":
        _serve_stdlib(app, port)
    else:
        from serving.sidecar.server import SidecarServer
        SidecarServer(app, "127.0.0.1", port).serve_forever()


# ------------------------------------------------------------------------------ measuring
def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


def _slow_clients(port: int, n: int):
    """``n`` connections trickling a request head and ``n`` stopping mid-body; kept open."""
    sockets = []
    for k in range(2 * n):
        s = socket.create_connection(("127.0.0.1", port))
        if k < n:
            s.sendall(b"POST /v1/recommendations HTTP/1.1\r\nHo")
        else:
            s.sendall(b"POST /v1/recommendations HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        sockets.append(s)
    return sockets


def _still_open(sock: socket.socket) -> bool:
    """Whether the server still holds the connection (whatever it answered), then closes it."""
    sock.setblocking(False)
    try:
        while True:
            if sock.recv(65536) == b"":
                return False  # the server closed it
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.close()


def measure(stack: str, requests: int) -> dict:
    from benchmarks.load import AnswerCheck, closed_loop, summarize
    from tests.test_sidecar_api import GOOD
    from tests.test_sidecar_doubles import catalog_backend
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    child = subprocess.Popen([sys.executable, "-m", "benchmarks.http_stack", "--serve", stack,
                              "--port", str(port)])
    url = f"http://127.0.0.1:{port}/v1/recommendations"
    check = AnswerCheck(catalog_backend())
    bodies = [GOOD, {**GOOD, "user_id": "nobody", "events": [{"item_id": "it3"}]}]
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or child.poll() is not None:
                    raise RuntimeError(f"{stack}: the server did not start") from None
                time.sleep(0.1)
        result: dict[str, Any] = {"stack": stack, "load": []}
        for concurrency in (1, 8, 32, 64):
            asyncio.run(closed_loop(url, bodies, check, concurrency, 200))  # warm-up
            started = time.monotonic()
            outcomes = asyncio.run(closed_loop(url, bodies, check, concurrency, requests))
            result["load"].append({"concurrency": concurrency, **summarize(
                outcomes, wall_s=time.monotonic() - started)})
        threads_before = _threads(child.pid)
        slow = _slow_clients(port, 64)
        time.sleep(1.0)
        for s in slow:  # a byte now and then
            try:
                s.sendall(b"s")
            except OSError:
                pass
        started = time.monotonic()
        outcomes = asyncio.run(closed_loop(url, bodies, check, 8, requests // 2, timeout_s=10))
        result["with_slow_clients"] = {
            "slow_connections": len(slow), "threads_before": threads_before,
            "threads_with_slow_clients": _threads(child.pid),
            **summarize(outcomes, wall_s=time.monotonic() - started)}
        time.sleep(6.0)  # past uvicorn's 5 s head and body deadlines
        result["with_slow_clients"]["slow_connections_open_after_6s"] = sum(
            _still_open(s) for s in slow)
        return result
    finally:
        child.terminate()
        child.wait(30)


def markdown(document: dict) -> str:
    cols = ["rps", "p50_ms", "p99_ms", "max_ms", "http_5xx", "connection_errors"]
    lines = [f"# Sidecar HTTP stack ({document['date']})", "", f"Command: `{document['command']}`",
             "", "Same `SidecarApp` over the sidecar's test doubles (model answers after 2 ms), "
             "each stack in its own process; load generator beside it on 2 cores.", "",
             "| stack | concurrency | " + " | ".join(cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for r in document["stacks"]:
        for row in r["load"]:
            lines.append(f"| {r['stack']} | {row['concurrency']} | "
                         + " | ".join(str(row[c]) for c in cols) + " |")
    lines += ["", "With 64 connections trickling their head and 64 stalled mid-body, closed "
              "loop at concurrency 8:", "",
              "| stack | threads before / with slow clients | slow connections still open "
              "after 6 s | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols)]
    for r in document["stacks"]:
        w = r["with_slow_clients"]
        lines.append(f"| {r['stack']} | {w['threads_before']} / {w['threads_with_slow_clients']} "
                     f"| {w['slow_connections_open_after_6s']} of {w['slow_connections']} | "
                     + " | ".join(str(w[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    configure()  # the entry point sets the process up (stars.environment)
    p = argparse.ArgumentParser(prog="python -m benchmarks.http_stack")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--out", default="benchmarks/results/http_stack.json")
    p.add_argument("--serve", choices=STACKS, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return 0
    document = {"date": datetime.date.today().isoformat(),
                "command": command_line("bench-http-stack", "BENCH_HTTP_ARGS",
                                        argv if argv is not None else sys.argv[1:]),
                "cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg(),
                "stacks": [measure(stack, args.requests) for stack in STACKS]}
    document["load_avg_end"] = os.getloadavg()
    print(write_results(args.out, document, markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
