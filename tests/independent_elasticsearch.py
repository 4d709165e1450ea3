"""An independent Elasticsearch-API server for the tests: ``noida-db`` (PyPI, MIT), a
single binary that speaks the Elasticsearch 8 REST API to the official client.

It is not Elasticsearch (no Elasticsearch binary runs on these machines), but it was not
written here, so the backend's tests run against it as well as against
``ElasticsearchTestDouble``: a query or an indexing step that only our own double
accepts fails here.  Started on loopback in a temporary data directory, like the Redis
tests' ``redis-server``.
"""
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.fixtures import free_port


def _binary() -> Path:
    import noida_db  # the test extra pins it
    # the real server, not the console-script wrapper (which would orphan it on SIGTERM)
    return Path(noida_db.__file__).with_name("noida-db")



class IndependentElasticsearch:
    """``noida-db`` serving the Elasticsearch API on ``url`` until ``stop()``."""

    @staticmethod
    def available() -> bool:
        """noida-db is installed (its wheels are Linux x86_64 only)."""
        try:
            return _binary().is_file()
        except ImportError:
            return False

    def __init__(self, ready_timeout_s: float = 20.0):
        self._work = tempfile.TemporaryDirectory(prefix="noida-es-")
        self.data_dir = os.path.join(self._work.name, "data")
        self.log_file = os.path.join(self._work.name, "noida.log")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready_timeout_s = ready_timeout_s
        self.process = None
        self._start()

    def _start(self) -> None:
        with open(self.log_file, "ab") as log:  # a file: a full pipe would stall the server
            self.process = subprocess.Popen(
                [str(_binary()), "start", "--data-dir", self.data_dir, "--host", "127.0.0.1",
                 "--only", "elasticsearch", "--elasticsearch-port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            if self.process.poll() is not None:
                with open(self.log_file, errors="replace") as log:
                    output = log.read()
                self._work.cleanup()
                raise RuntimeError(f"noida-db exited with {self.process.returncode}: {output}")
            try:
                with urllib.request.urlopen(self.url + "/_cluster/health", timeout=0.5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"noida-db did not answer within {self.ready_timeout_s} s")
            time.sleep(0.05)

    def kill(self) -> None:
        """The node dies (SIGKILL); its data directory stays for :meth:`restart`."""
        self.process.kill()
        self.process.wait()

    def restart(self) -> None:
        """Starts it again on the same port over the same data (what it had saved)."""
        self._start()

    def stop(self) -> None:
        """SIGTERM (a node going away), then the data directory is removed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._work.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


__all__ = ["IndependentElasticsearch"]
