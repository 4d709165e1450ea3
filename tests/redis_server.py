"""A throw-away ``redis-server`` on loopback for the tests and the reliability benchmark
(Debian's package; ``.ci/run`` installs it): no persistence, its own port and directory."""
import os
import shutil
import signal
import subprocess
import time

import pytest

from tests.fixtures import free_port

MISSING = ("redis-server is not installed: the Redis tests need Debian's redis-server "
           "(apt-get install -y redis-server; .ci/run installs it)")



class RedisServer:
    """``redis-server`` serving ``url`` until ``stop()``; ``pause()`` / ``resume()`` hang
    it (SIGSTOP / SIGCONT) the way a stuck host does: connections open, no answers."""

    def __init__(self, workdir):
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError(MISSING)
        import redis
        os.makedirs(workdir, exist_ok=True)
        port = free_port()
        self.process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--dir", str(workdir), "--protected-mode", "yes", "--daemonize", "no"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(self.url)
        deadline = time.time() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.time() > deadline:
                    self.process.kill()
                    out = self.process.stdout.read().decode(errors="replace")
                    raise RuntimeError(
                        f"redis-server did not start on port {port}:\n{out}") from None
                time.sleep(0.05)
        client.close()

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


def start_or_skip(workdir) -> RedisServer:
    """For tests: a started server; without the binary, fail (or skip with
    ``STARS_ALLOW_NO_REDIS=1``)."""
    try:
        return RedisServer(workdir)
    except FileNotFoundError:
        if os.environ.get("STARS_ALLOW_NO_REDIS") == "1":
            pytest.skip(MISSING + " [skipped: STARS_ALLOW_NO_REDIS=1]")
        pytest.fail(MISSING)


__all__ = ["RedisServer", "start_or_skip"]
