"""TF Serving's REST API on the standard library's ``ThreadingHTTPServer``.

* ``POST /v1/models/NAME[/versions/N|/labels/L]:predict`` -> ``{"predictions": ...}`` (row
  request) or ``{"outputs": ...}`` (columnar request);
* ``POST /v1/models/NAME[/versions/N|/labels/L]:classify|:regress`` (``{"examples": [...]}``,
  optional ``"context"``) -> ``{"results": ...}`` (``inference.py``);
* ``GET /v1/models/NAME[/versions/N]`` -> ``{"model_version_status": [...]}``;
* ``GET /v1/models/NAME[/versions/N]/metadata`` -> ``{"model_spec": ..., "metadata": ...}``.
* ``GET /monitoring/prometheus/metrics`` (the ``--monitoring_config_file`` path) -> the
  Prometheus text format (``monitoring.py``).

Errors are ``{"error": "<message>"}`` with TF Serving's HTTP status for the code (400, 404,
501, 503, ...); a body over the size limit gets 413 and the connection is closed.  Bad input is
never a 500: only a bug in this server is.
"""
from __future__ import annotations

import io
import logging
import re
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

from serving.model_server import errors, inference, json_text, predict, status, tensors
from serving.model_server.deadline import CallDeadline
from serving.model_server.models import as_registry

log = logging.getLogger(__name__)

PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE)
STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE)


class BodyTooLarge(Exception):
    pass


class RestApi:
    """Request routing and TF Serving semantics, independent of the HTTP plumbing."""

    def __init__(self, versions, max_rows: Optional[int] = None, batcher=None,
                 metrics=None, deadline: Optional[CallDeadline] = None):
        self.versions, self.max_rows, self.batcher = as_registry(versions), max_rows, batcher
        self.metrics, self.deadline = metrics, deadline or CallDeadline(None)

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        started, code = time.perf_counter(), errors.Code.OK
        try:
            if method == "POST":  # inference: --rest_api_timeout_in_ms
                return 200, self.deadline.run(self._route, method, path, body)
            return 200, self._route(method, path, body)
        except errors.ServingError as e:
            code = e.code
            return e.http_status, {"error": e.message}
        except BaseException:
            code = errors.Code.INTERNAL
            raise
        finally:
            if self.metrics is not None:
                self.metrics.record_rest(method, path, code, time.perf_counter() - started)

    def _route(self, method: str, path: str, body: bytes) -> dict:
        path = urllib.parse.urlsplit(path).path
        if method == "POST":
            match = PREDICT_PATH.fullmatch(path)
            if match:
                name, version, label, verb = match.groups()
                name = urllib.parse.unquote(name)
                label = urllib.parse.unquote(label) if label else None
                verb = verb.lower()
                if verb != "predict":
                    return self.classify_or_regress(verb, name, _version(version), label, body)
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
                return status.status_json(
                    status.model_status(self.versions, name, _version(version)))
        raise errors.invalid_argument(f"Malformed request: {method} {path}")

    def _servable(self, name: str, version: Optional[int], label: Optional[str]):
        return self.versions.servable(name, version, label)

    def predict(self, name: str, version: Optional[int], label: Optional[str],
                body: bytes) -> dict:
        document = json_text.parse_object(body)
        signature_name = tensors.signature_name(document)
        with self._servable(name, version, label) as servable:
            key = signature_name or predict.DEFAULT_SIGNATURE
            signature = servable.signature_defs.get(key)
            if signature is None or servable.signature(key) is None:
                raise errors.invalid_argument(
                    f'Serving signature name: "{key}" not found in signature def')
            inputs, fmt = tensors.request_to_arrays(document, signature.inputs, signature_name)
            _, outputs = predict.run_predict(servable, key, inputs, max_rows=self.max_rows,
                                             batcher=self.batcher)
        return tensors.outputs_to_json(outputs, fmt)

    def classify_or_regress(self, verb: str, name: str, version: Optional[int],
                            label: Optional[str], body: bytes) -> dict:
        """TF Serving's order: the body is read (and refused) before the model is looked up."""
        from tensorflow_serving.apis import classification_pb2, regression_pb2
        request = (classification_pb2.ClassificationRequest() if verb == "classify"
                   else regression_pb2.RegressionRequest())
        request.model_spec.name = name
        document = json_text.parse_object(body)
        request.model_spec.signature_name = tensors.signature_name(document)
        request.input.CopyFrom(inference.input_from_json(document))
        with self._servable(name, version, label) as servable:
            if verb == "classify":
                response = inference.classify(servable, request, self.max_rows, self.batcher)
                return inference.classification_json(response.result)
            response = inference.regress(servable, request, self.max_rows, self.batcher)
        return inference.regression_json(response.result)

    def metadata(self, name: str, version: Optional[int], label: Optional[str]) -> dict:
        with self._servable(name, version, label) as servable:
            return status.metadata_json(status.model_metadata(servable))


def _version(text: Optional[str]) -> Optional[int]:
    if not text:
        return None
    try:
        version = int(text)
    except ValueError:
        version = -1
    if not 0 <= version < 1 << 63:  # absl::SimpleAtoi into an int64
        raise errors.invalid_argument(f"Failed to convert version: {text} to numeric.")
    return version


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
        self._send_bytes(code, json_text.json_bytes(payload), "application/json", close)

    def _send_bytes(self, code: int, data: bytes, content_type: str,
                    close: bool = False) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
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
            metrics = server.api.metrics
            if metrics is not None and metrics.serves(self.path):  # --monitoring_config_file
                self._send_bytes(200, metrics.page(), metrics.content_type)
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
                 idle_timeout_s: float = 60.0, batcher=None, metrics=None,
                 call_timeout_s: Optional[float] = None):
        super().__init__(address, _Handler)
        self.api = RestApi(versions, max_rows, batcher, metrics, CallDeadline(call_timeout_s))
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
        self.api.deadline.stop()
        if self._thread is not None:
            self._thread.join(grace)


__all__ = ["RestApi", "RestServer"]
