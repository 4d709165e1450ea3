"""A Cloud Storage emulator on loopback, and the environment that points TensorFlow, TFX and
Beam at it (``python -m tests.gcs_emulator PORT`` serves until SIGTERM).

The emulator is the independent ``gcp-storage-emulator`` package, not a test double of
ours; three patches adapt it to TensorFlow's GCS client (google-cloud-cpp), each a gap in
the emulator that real Cloud Storage does not have:

* an empty-body upload (``makedirs`` writes ``dir/`` markers) read as ``None`` -> 500;
* a ``Host`` header without the port (google-cloud-cpp sends ``Host: 127.0.0.1``): the
  emulator builds download links from it, so Beam could not read what TensorFlow wrote;
* bodies written in one piece: the libcurl bundled with ``tensorflow-io-gcs-filesystem``
  corrupts its heap when a plain-HTTP loopback read hands it more than 16 KiB at once
  (real GCS speaks TLS, whose records are at most 16 KiB). Bodies go out in 16 KiB
  slices, 1 ms apart.

How each client is pointed at it (BUILD_NOTES.md, "Artefacts on object storage"):
TensorFlow's built-in ``gs://`` filesystem has no endpoint setting, so the modular plugin
(``TF_USE_MODULAR_FILESYSTEM=1``, read when TensorFlow is imported) is used with
``CLOUD_STORAGE_EMULATOR_ENDPOINT``; its cache settings must all be given (it crashes on
an unset one) and the block cache off (it misreads backward seeks). TFX's ``fileio``
delegates to TensorFlow. Beam's ``gcsio`` (google-cloud-storage) reads
``STORAGE_EMULATOR_HOST``; a non-expiring fake credential spares each Beam process
25 s of credential retries.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlparse

BUCKET = "stars-test"
_SLICE = 16 * 1024


def environment(port: int, scratch: str) -> dict:
    """The variables a process needs (set before TensorFlow is imported) to use the
    emulator on ``port`` for ``gs://``; the fake credential is written under ``scratch``."""
    credential = os.path.join(scratch, "emulator_adc.json")
    with open(credential, "w") as f:
        json.dump({"type": "authorized_user", "client_id": "emulator",
                   "client_secret": "emulator", "refresh_token": "emulator",
                   "token": "emulator-token", "expiry": "2999-01-01T00:00:00Z"}, f)
    endpoint = f"http://127.0.0.1:{port}"
    return {
        "TF_USE_MODULAR_FILESYSTEM": "1",
        "CLOUD_STORAGE_EMULATOR_ENDPOINT": endpoint,
        "GCS_READ_CACHE_BLOCK_SIZE_MB": "0", "GCS_READ_CACHE_MAX_SIZE_MB": "0",
        "GCS_READ_CACHE_MAX_STALENESS": "0", "GCS_STAT_CACHE_MAX_AGE": "0",
        "GCS_STAT_CACHE_MAX_ENTRIES": "0",
        "STORAGE_EMULATOR_HOST": endpoint,
        "GOOGLE_APPLICATION_CREDENTIALS": credential,
        "GOOGLE_CLOUD_PROJECT": "stars-test",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(port: int, log_path: str) -> subprocess.Popen:
    """The emulator in its own process (its HTTP server is single-threaded: it must not
    share a GIL with the clients it serves); returns once it answers."""
    log = open(log_path, "wb")
    process = subprocess.Popen([sys.executable, "-m", "tests.gcs_emulator", str(port)],
                               stdout=log, stderr=subprocess.STDOUT,
                               cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the emulator exited ({process.returncode}); see {log_path}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
            return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the emulator did not answer within 30 s; see {log_path}")


def patch_directory_rename() -> None:
    """In the process that uses the emulator: directory renames copy and delete object by
    object. The modular GCS plugin renames a directory's marker object under the name
    without its slash (RewriteObject ``dir`` -> NOT_FOUND) and none of its files; the
    built-in GCS filesystem that Vertex and TFX use in production renames the children
    (tensorflow/core/platform/cloud/gcs_file_system.cc). tf.Transform publishes its output
    with a directory rename, so the pipeline cannot run on the plugin without this."""
    import tensorflow as tf
    rename = tf.io.gfile.rename

    def rename_tree(source, target, overwrite=False):
        source, target = str(source).rstrip("/"), str(target).rstrip("/")
        if not source.startswith("gs://") or not tf.io.gfile.isdir(source):
            return rename(source, target, overwrite)
        for directory, _, files in tf.io.gfile.walk(source):
            directory = directory.rstrip("/")
            into = target + directory[len(source):]
            tf.io.gfile.makedirs(into)
            for name in files:
                tf.io.gfile.copy(f"{directory}/{name}", f"{into}/{name}", overwrite)
        tf.io.gfile.rmtree(source)

    tf.io.gfile.rename = rename_tree


def _patch(server, objects) -> None:
    def upload_allowing_empty_body(request, response, storage, *args, **kwargs):
        if request.data is None:
            request._data = b""
        return objects.xml_upload(request, response, storage, *args, **kwargs)

    for _, handlers in server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler is objects.xml_upload:
                handlers[method] = upload_allowing_empty_body

    request_init = server.Request.__init__

    def init_with_port(self, handler, method):
        request_init(self, handler, method)
        host = handler.headers.get("Host")
        if host and ":" not in host:
            self._base_url = f"http://{host}:{handler.server.server_address[1]}"
            self._full_url = self._base_url + self._path
            self._parsed_url = urlparse(self._full_url)

    server.Request.__init__ = init_with_port

    def close_in_slices(self):
        self._handler.send_response(self.status.value, self.status.phrase)
        for key, value in self._headers.items():
            self._handler.send_header(key, value)
        content = self._content.encode() if isinstance(self._content, str) else self._content
        self._handler.send_header("Content-Length", str(len(content)))
        self._handler.end_headers()
        for offset in range(0, len(content), _SLICE):
            if offset:
                time.sleep(0.001)
            self._handler.wfile.write(content[offset:offset + _SLICE])
            self._handler.wfile.flush()

    server.Response.close = close_in_slices


def main(port: int) -> None:
    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import objects
    _patch(server, objects)
    emulator = server.create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    emulator.start()
    signal.signal(signal.SIGTERM, lambda *_: (emulator.stop(), sys.exit(0)))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main(int(sys.argv[1]))
