"""``serve(...)``: the model server in-process; ``main``: the ``stars serve model`` entry point.

``main`` execs a real ``tensorflow_model_server`` with the same model configuration when one
is on PATH (the production path: the TF Serving image built with the ScaNN ops, see
deploy/README.md), unless ``--no-native``; otherwise it runs this server.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from typing import Iterable, Optional, Sequence

log = logging.getLogger(__name__)

NATIVE_BINARY = "tensorflow_model_server"
DEFAULT_MAX_REQUEST_MB = 32.0
DEFAULT_MAX_BATCH_ROWS = 4096
DEFAULT_REST_READ_TIMEOUT_S = 10.0
DEFAULT_GRPC_MAX_CONCURRENT_RPCS = 256


class ModelServer:
    """A running server: ``grpc_port``, ``rest_port`` (None when disabled), ``versions``
    (the ``ModelVersions``), ``stop()``, ``wait()``; also a context manager."""

    def __init__(self, model_name: str, model_base_path: str, versions, rest_server,
                 grpc_server, grpc_port: Optional[int], batcher=None):
        self.model_name = model_name
        self.batcher = batcher
        self.model_base_path = model_base_path
        self.versions = versions
        self.rest_server = rest_server
        self.grpc_server = grpc_server
        self.grpc_port = grpc_port
        self.rest_port = rest_server.port if rest_server is not None else None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    def stop(self, grace: float = 5.0) -> None:
        """Stops accepting requests, lets in-flight ones finish (up to ``grace`` s), unloads."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            try:
                if self.rest_server is not None:
                    self.rest_server.stop(grace)
                if self.grpc_server is not None:
                    self.grpc_server.stop(grace).wait(grace + 1)
            finally:
                if self.batcher is not None:
                    self.batcher.stop()
                self.versions.stop(grace)
                self._stopped.set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Blocks until ``stop`` completes (or ``timeout``); True when stopped."""
        return self._stopped.wait(timeout)

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def __enter__(self) -> "ModelServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(model_base_path: str, model_name: str, rest_port: Optional[int] = 8501,
          grpc_port: Optional[int] = 8500, poll_seconds: float = 1.0, *,
          host: str = "0.0.0.0", max_request_mb: float = DEFAULT_MAX_REQUEST_MB,
          num_latest: int = 1, specific_versions: Optional[Iterable[int]] = None,
          max_load_retries: int = 3, grpc_workers: int = 8, loader=None,
          max_batch_rows: Optional[int] = DEFAULT_MAX_BATCH_ROWS,
          rest_read_timeout_s: float = DEFAULT_REST_READ_TIMEOUT_S,
          grpc_max_concurrent_rpcs: Optional[int] = DEFAULT_GRPC_MAX_CONCURRENT_RPCS,
          batching=None) -> ModelServer:
    """Loads the model base path (``<base>/<version>/`` SavedModels) and serves it.

    ``rest_port``/``grpc_port``: 0 = any free port (see ``.rest_port``/``.grpc_port``), None =
    that API disabled.  ``poll_seconds``: how often new versions are looked for (<= 0: only at
    start).  Version policy: the ``num_latest`` highest versions (TF Serving's default
    ``latest 1``) or the ``specific_versions``.  Requests over ``max_request_mb`` are refused
    (HTTP 413 / gRPC RESOURCE_EXHAUSTED), and so are requests of more than
    ``max_batch_rows`` rows (400 / INVALID_ARGUMENT).  A REST request's head and body must
    arrive within ``rest_read_timeout_s``; beyond ``grpc_max_concurrent_rpcs`` gRPC calls in
    progress a call is refused at once (RESOURCE_EXHAUSTED).  ``batching``
    (``batching.BatchingParameters``): concurrent calls are merged (TF Serving's
    ``--enable_batching``).  Returns once the initial versions are loaded.
    """
    from serving.model_server.grpc_service import create_grpc_server
    from serving.model_server.rest import RestServer
    from serving.model_server.versions import ModelVersions, load_saved_model

    if rest_port is None and grpc_port is None:
        raise ValueError("at least one of rest_port and grpc_port is needed")
    max_bytes = max(1, int(max_request_mb * 1024 * 1024))
    versions = ModelVersions(model_base_path, model_name, poll_seconds=poll_seconds,
                             num_latest=num_latest, specific_versions=specific_versions,
                             max_load_retries=max_load_retries,
                             loader=loader or load_saved_model)
    versions.start()
    from serving.model_server.batching import Batcher
    batcher = Batcher(batching) if batching is not None else None
    rest_server = grpc_server = bound_grpc = None
    try:
        if grpc_port is not None:
            address = f"[{host}]:{grpc_port}" if ":" in host else \
                f"{host or '0.0.0.0'}:{grpc_port}"
            grpc_server, bound_grpc = create_grpc_server(
                versions, address, max_bytes, max_workers=grpc_workers, max_rows=max_batch_rows,
                max_concurrent_rpcs=grpc_max_concurrent_rpcs, batcher=batcher)
        if rest_port is not None:
            rest_server = RestServer((host or "0.0.0.0", rest_port), versions, max_bytes,
                                     max_rows=max_batch_rows, read_timeout_s=rest_read_timeout_s,
                                     batcher=batcher)
    except BaseException:
        if rest_server is not None:
            rest_server.server_close()
        if batcher is not None:
            batcher.stop()
        versions.stop()
        raise
    if grpc_server is not None:
        grpc_server.start()
    if rest_server is not None:
        rest_server.start()
    server = ModelServer(model_name, versions.base_path, versions, rest_server, grpc_server,
                         bound_grpc, batcher)
    log.info("serving %s from %s: gRPC %s, REST %s, versions %s", model_name,
             versions.base_path, bound_grpc, server.rest_port, versions.serving_versions())
    return server


# ------------------------------------------------------------------------------ command line
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``stars serve model`` options (TF Serving's flag spellings are accepted too)."""
    parser.add_argument("--model-base-path", "--model_base_path", dest="model_base_path",
                        required=True, help="TF Serving model base path: <base>/<version>/")
    parser.add_argument("--model-name", "--model_name", dest="model_name", default="stars")
    parser.add_argument("--port", dest="port", type=int, default=8500, help="gRPC port")
    parser.add_argument("--rest-api-port", "--rest_api_port", dest="rest_api_port", type=int,
                        default=8501, help="REST port (0 = no REST API, as TF Serving)")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (ours only)")
    parser.add_argument("--file-system-poll-wait-seconds", "--file_system_poll_wait_seconds",
                        dest="poll_seconds", type=float, default=1.0,
                        help="how often to look for new versions")
    parser.add_argument("--num-latest", dest="num_latest", type=int, default=1,
                        help="serve the N highest versions (TF Serving's 'latest' policy)")
    parser.add_argument("--versions", dest="versions", default="",
                        help="comma-separated versions to serve (TF Serving's 'specific' policy)")
    parser.add_argument("--max-request-mb", dest="max_request_mb", type=float,
                        default=DEFAULT_MAX_REQUEST_MB, help="largest request accepted (ours only)")
    parser.add_argument("--max-batch-rows", dest="max_batch_rows", type=int,
                        default=DEFAULT_MAX_BATCH_ROWS,
                        help="most rows one request may carry (400 beyond; ours only)")
    parser.add_argument("--rest-read-timeout-ms", dest="rest_read_timeout_ms", type=float,
                        default=DEFAULT_REST_READ_TIMEOUT_S * 1000,
                        help="a REST request's head and body must arrive within this "
                             "(ours only)")
    parser.add_argument("--grpc-max-concurrent-rpcs", dest="grpc_max_concurrent_rpcs",
                        type=int, default=DEFAULT_GRPC_MAX_CONCURRENT_RPCS,
                        help="gRPC calls in progress before new ones are refused with "
                             "RESOURCE_EXHAUSTED (ours only)")
    parser.add_argument("--tensorflow-intra-op-parallelism",
                        "--tensorflow_intra_op_parallelism", dest="intra_op", type=int,
                        default=0, help="threads one op may use (TF Serving's flag; 0 = "
                                        "TensorFlow's default, all cores)")
    parser.add_argument("--tensorflow-inter-op-parallelism",
                        "--tensorflow_inter_op_parallelism", dest="inter_op", type=int,
                        default=0, help="ops run at once (TF Serving's flag; 0 = default)")
    parser.add_argument("--enable-batching", "--enable_batching", dest="enable_batching",
                        action="store_true",
                        help="merge concurrent calls of a signature (TF Serving's flag)")
    parser.add_argument("--batching-parameters-file", "--batching_parameters_file",
                        dest="batching_parameters_file", default="",
                        help="TF Serving's BatchingParameters text proto (with batching)")
    parser.add_argument("--max-load-retries", dest="max_load_retries", type=int, default=3)
    parser.add_argument("--grpc-workers", dest="grpc_workers", type=int, default=8)
    parser.add_argument("--no-native", dest="no_native", action="store_true",
                        help=f"never exec a {NATIVE_BINARY} found on PATH")
    parser.add_argument("--tensorflow-model-server", dest="native_binary",
                        default=NATIVE_BINARY, help="name or path of the native server")
    return parser


def set_tensorflow_threads(intra_op: int = 0, inter_op: int = 0) -> None:
    """TensorFlow's thread pools, before anything runs.  A server answers many small
    requests at once: one thread per op (1 / 1) avoids the pools' spinning, about 40 %
    less CPU per call here (BUILD_NOTES)."""
    import tensorflow as tf
    if intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)


def _batching(args):
    if not args.enable_batching:
        if args.batching_parameters_file:
            raise ValueError("--batching_parameters_file needs --enable_batching")
        return None
    from serving.model_server.batching import BatchingParameters
    if args.batching_parameters_file:
        return BatchingParameters.from_file(args.batching_parameters_file)
    return BatchingParameters()


def _specific(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--versions must be comma-separated integers, not {text!r}") from None


def model_config_text(model_name: str, model_base_path: str, num_latest: int = 1,
                      specific_versions: Sequence[int] = ()) -> str:
    """A TF Serving ``model_config_file`` (text proto) for a non-default version policy."""
    if specific_versions:
        policy = "specific { " + " ".join(f"versions: {v}" for v in specific_versions) + " }"
    else:
        policy = f"latest {{ num_versions: {num_latest} }}"
    return ("model_config_list {\n  config {\n"
            f"    name: {json.dumps(model_name)}\n"
            f"    base_path: {json.dumps(model_base_path)}\n"
            '    model_platform: "tensorflow"\n'
            f"    model_version_policy {{ {policy} }}\n"
            "  }\n}\n")


def native_argv(binary: str, args) -> list[str]:
    """``tensorflow_model_server`` command line with the same model configuration."""
    base = os.path.abspath(args.model_base_path)
    argv = [binary, f"--port={args.port}", f"--rest_api_port={args.rest_api_port}"]
    specific = _specific(args.versions)
    if specific or args.num_latest != 1:
        fd, path = tempfile.mkstemp(prefix="stars-model-config-", suffix=".pbtxt")
        with os.fdopen(fd, "w") as f:
            f.write(model_config_text(args.model_name, base, args.num_latest, specific))
        argv.append(f"--model_config_file={path}")
    else:
        argv += [f"--model_name={args.model_name}", f"--model_base_path={base}"]
    # TF Serving's flag is whole seconds; 0 would mean "poll once".
    poll = args.poll_seconds
    argv.append(f"--file_system_poll_wait_seconds={max(1, int(round(poll))) if poll > 0 else 0}")
    for flag, value in (("tensorflow_intra_op_parallelism", getattr(args, "intra_op", 0)),
                        ("tensorflow_inter_op_parallelism", getattr(args, "inter_op", 0))):
        if value:
            argv.append(f"--{flag}={value}")
    if getattr(args, "enable_batching", False):
        argv.append("--enable_batching=true")
        if args.batching_parameters_file:
            argv.append(f"--batching_parameters_file="
                        f"{os.path.abspath(args.batching_parameters_file)}")
    return argv


def run(args) -> int:
    """Runs ``stars serve model`` from parsed arguments (execs the native server if any)."""
    if not args.no_native:
        binary = shutil.which(args.native_binary)
        if binary:
            argv = native_argv(binary, args)
            print(f"stars serve model: exec {' '.join(argv)}", file=sys.stderr, flush=True)
            os.execv(binary, argv)  # does not return
    if not os.path.isdir(args.model_base_path):
        raise FileNotFoundError(f"model base path {args.model_base_path} does not exist")
    set_tensorflow_threads(args.intra_op, args.inter_op)
    server = serve(args.model_base_path, args.model_name,
                   rest_port=args.rest_api_port or None, grpc_port=args.port,
                   poll_seconds=args.poll_seconds, host=args.host,
                   max_request_mb=args.max_request_mb, num_latest=args.num_latest,
                   specific_versions=_specific(args.versions) or None,
                   max_load_retries=args.max_load_retries, grpc_workers=args.grpc_workers,
                   max_batch_rows=args.max_batch_rows,
                   rest_read_timeout_s=args.rest_read_timeout_ms / 1000.0,
                   grpc_max_concurrent_rpcs=args.grpc_max_concurrent_rpcs,
                   batching=_batching(args))
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal %d: shutting down", signum)
        stop.set()
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    print(json.dumps({"model_name": server.model_name, "model_base_path": server.model_base_path,
                      "grpc_port": server.grpc_port, "rest_port": server.rest_port,
                      "versions": server.versions.serving_versions()}), flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(
        prog="stars serve model", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"stars serve model: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
