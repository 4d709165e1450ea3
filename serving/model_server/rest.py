"""TF Serving's REST API on the standard library's ``ThreadingHTTPServer``.

* ``POST /v1/models/NAME[/versions/N|/labels/L]:predict`` -> ``{"predictions": ...}`` (row
  request) or ``{"outputs": ...}`` (columnar request);
* ``GET /v1/models/NAME[/versions/N]`` -> ``{"model_version_status": [...]}``;
* ``GET /v1/models/NAME[/versions/N]/metadata`` -> ``{"model_spec": ..., "metadata": ...}``.

Errors are ``{"error": "<message>"}`` with TF Serving's HTTP status for the code (400, 404,
501, 503, ...); a body over the size limit gets 413 and the connection is closed.  Bad input is
never a 500: only a bug in this server is.
"""
from __future__ import annotations

import io
import json
import logging
import re
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

from serving.model_server import errors, predict, status, tensors

log = logging.getLogger(__name__)

PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE)
STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE)


class BodyTooLarge(Exception):
    pass


def _parse_json(body: bytes):
    if not body:
        raise errors.invalid_argument("JSON Parse error: The document is empty")
    try:
        document = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise errors.invalid_argument(
            f"JSON Parse error: Invalid encoding in string. at offset: {e.start}") from None
    except json.JSONDecodeError as e:
        raise errors.invalid_argument(f"JSON Parse error: {e.msg} at offset: {e.pos}") from None
    except RecursionError:
        raise errors.invalid_argument("JSON Parse error: nesting too deep") from None
    if not isinstance(document, dict):
        raise errors.invalid_argument(f"JSON Value: {tensors._json_text(document)} Is not object")
    return document


class RestApi:
    """Request routing and TF Serving semantics, independent of the HTTP plumbing."""

    def __init__(self, versions, max_rows: Optional[int] = None, batcher=None):
        self.versions, self.max_rows, self.batcher = versions, max_rows, batcher

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        try:
            return 200, self._route(method, path, body)
        except errors.ServingError as e:
            return e.http_status, {"error": e.message}

    def _route(self, method: str, path: str, body: bytes) -> dict:
        path = urllib.parse.urlsplit(path).path
        if method == "POST":
            match = PREDICT_PATH.fullmatch(path)
            if match:
                name, version, label, verb = match.groups()
                name = urllib.parse.unquote(name)
                label = urllib.parse.unquote(label) if label else None
                if verb.lower() != "predict":
                    raise errors.ServingError(
                        errors.Code.UNIMPLEMENTED,
                        f"The {verb.lower()} API is not supported by this server: use predict")
                return self.predict(name, _version(version), label, body)
        elif method == "GET":
            match = STATUS_PATH.fullmatch(path)
            if match:
                name, version, label, metadata = match.groups()
                if not name:
                    raise errors.invalid_argument("Missing model name in request.")
                name = urllib.parse.unquote(name)
                label = urllib.parse.unquote(label) if label else None
                if metadata:
                    return self.metadata(name, _version(version), label)
                if label:
                    raise errors.invalid_argument(
                        f"Unrecognized servable version label: {label}")
                return status.status_json(
                    status.model_status(self.versions, name, _version(version)))
        raise errors.invalid_argument(f"Malformed request: {method} {path}")

    def _servable(self, name: str, version: Optional[int], label: Optional[str]):
        if name != self.versions.name:
            raise errors.servable_not_found(name, version)
        return self.versions.handle(version, label)

    def predict(self, name: str, version: Optional[int], label: Optional[str],
                body: bytes) -> dict:
        document = _parse_json(body)
        signature_name = document.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise errors.invalid_argument(
                f"JSON Value: {tensors._json_text(document)} not formatted correctly. "
                f"'signature_name' key must be a string value.")
        with self._servable(name, version, label) as servable:
            key = signature_name or predict.DEFAULT_SIGNATURE
            signature = servable.signature_defs.get(key)
            if signature is None or servable.signature(key) is None:
                raise errors.invalid_argument(
                    f'Serving signature name: "{key}" not found in signature def')
            inputs, fmt = tensors.request_to_arrays(document, signature.inputs)
            _, outputs = predict.run_predict(servable, key, inputs, max_rows=self.max_rows,
                                             batcher=self.batcher)
        return tensors.outputs_to_json(outputs, fmt)

    def metadata(self, name: str, version: Optional[int], label: Optional[str]) -> dict:
        with self._servable(name, version, label) as servable:
            return status.metadata_json(status.model_metadata(servable))


def _version(text: Optional[str]) -> Optional[int]:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise errors.invalid_argument(f"Failed to convert version: {text} to numeric.") from None


class _Handler(BaseHTTPRequestHandler):
    """One connection.  Between requests it may stay idle for ``idle_timeout_s``; once a
    request's first byte has arrived, its head and body must arrive within
    ``read_timeout_s`` or the connection is cut: a client that sends a byte now and then
    does not hold a thread for ever."""
    protocol_version = "HTTP/1.1"
    wbufsize = -1  # headers and body in one write: no Nagle/delayed-ACK stall (~40 ms)
    server_version = "stars-model-server"
    server: RestServer  # narrower than BaseRequestHandler's: the server this handler serves
    rfile: io.BufferedReader  # rbufsize -1: buffered, so it can peek

    def log_message(self, fmt, *args):  # noqa: D401 - quiet by default
        log.debug("%s - %s", self.address_string(), fmt % args)

    def handle_one_request(self) -> None:
        try:
            self.connection.settimeout(self.server.idle_timeout_s)
            if not self.rfile.peek(1):  # the client closed the connection
                self.close_connection = True
                return
        except OSError:  # idle past the keep-alive timeout
            self.close_connection = True
            return
        self._watchdog = threading.Timer(self.server.read_timeout_s, self._cut_off)
        self._watchdog.daemon = True
        self._watchdog.start()
        try:
            super().handle_one_request()
        finally:
            self._watchdog.cancel()

    def _cut_off(self) -> None:
        """The request did not arrive in time: unblock the read and drop the connection."""
        log.info("REST: %s sent too slowly; connection closed", self.address_string())
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _read_body(self) -> bytes:
        limit = self.server.max_request_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > limit:
                    raise BodyTooLarge(total)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        header = self.headers.get("Content-Length")
        if not header:
            return b""
        length = int(header)
        if length < 0:
            raise ValueError("negative Content-Length")
        if length > limit:
            raise BodyTooLarge(length)
        return self.rfile.read(length)

    def _drain(self, length: int) -> None:
        """Reads (and drops) a refused body so the client, still sending, gets the 413
        instead of a connection reset; bounded, as it costs bandwidth but no memory."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return
        left = min(length, max(4 * self.server.max_request_bytes, 64 << 20))
        try:
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def _send(self, code: int, payload: dict, close: bool = False) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _dispatch(self) -> None:
        server = self.server
        if not server.enter():
            self._send(503, {"error": "Server is shutting down"}, close=True)
            return
        try:
            try:
                body = self._read_body()
                self._watchdog.cancel()  # read in time; the predict has no read deadline
            except BodyTooLarge as e:
                limit = server.max_request_bytes
                self._drain(e.args[0])
                self._send(413, {"error": f"Request body of {e.args[0]} bytes exceeds the limit "
                                          f"of {limit} bytes"}, close=True)
                return
            except (ValueError, OSError):
                self._send(400, {"error": "Malformed HTTP request body"}, close=True)
                return
            if not self.path.lower().startswith("/v1/"):
                self._send(404, {"error": f"Not found: {self.command} {self.path}"})
                return
            try:
                code, payload = server.api.handle(self.command, self.path, body)
            except Exception as e:  # noqa: BLE001 - a bug here, never the client's input
                log.exception("REST request %s %s failed", self.command, self.path)
                code, payload = 500, {"error": f"Internal error: {type(e).__name__}: {e}"}
            self._send(code, payload)
        finally:
            server.leave()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch


class RestServer(ThreadingHTTPServer):
    """The HTTP server; ``stop`` waits for in-flight requests (up to ``grace`` seconds)."""
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, versions, max_request_bytes: int,
                 max_rows: Optional[int] = None, read_timeout_s: float = 10.0,
                 idle_timeout_s: float = 60.0, batcher=None):
        super().__init__(address, _Handler)
        self.api = RestApi(versions, max_rows, batcher)
        self.max_request_bytes = max_request_bytes
        self.read_timeout_s, self.idle_timeout_s = read_timeout_s, idle_timeout_s
        self._state = threading.Condition()
        self._in_flight = 0
        self._stopping = False
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        return self.server_address[1]

    def enter(self) -> bool:
        with self._state:
            if self._stopping:
                return False
            self._in_flight += 1
            return True

    def leave(self) -> None:
        with self._state:
            self._in_flight -= 1
            self._state.notify_all()

    def start(self) -> "RestServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="rest-server", daemon=True)
        self._thread.start()
        return self

    def stop(self, grace: float = 5.0) -> None:
        import time
        with self._state:
            self._stopping = True
        self.shutdown()
        deadline = time.monotonic() + grace
        with self._state:
            while self._in_flight and time.monotonic() < deadline:
                self._state.wait(0.05)
        self.server_close()
        if self._thread is not None:
            self._thread.join(grace)


__all__ = ["RestApi", "RestServer"]
