"""``serve(...)``: the model server in-process; ``main``: the ``stars serve model`` entry point.

``main`` execs a real ``tensorflow_model_server`` with the same model configuration when one
is on PATH (the production path: the TF Serving image built with the ScaNN ops, see
deploy/README.md), unless ``--no-native``; otherwise it runs this server.

The models come from TF Serving's ``--model_config_file`` (several models, version policies
and labels; re-read every ``--model_config_file_poll_wait_seconds``) or from
``--model_name/--model_base_path`` (one model; ``--num-latest``/``--versions`` are its
policy, the config TF Serving's ``BuildSingleModelConfig`` would make plus that policy).
TF Serving's ``--monitoring_config_file``, ``--rest_api_timeout_in_ms``,
``--allow_version_labels_for_unavailable_models``, ``--enable_batching`` and
``--batching_parameters_file`` keep its spelling and meaning.
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

from serving.model_server.deadline import DEFAULT_REST_API_TIMEOUT_MS
from serving.model_server.errors import ServingError

log = logging.getLogger(__name__)

NATIVE_BINARY = "tensorflow_model_server"
DEFAULT_MAX_REQUEST_MB = 32.0
DEFAULT_MAX_BATCH_ROWS = 4096
DEFAULT_REST_READ_TIMEOUT_S = 10.0
DEFAULT_GRPC_MAX_CONCURRENT_RPCS = 256


class ModelServer:
    """A running server: ``grpc_port``, ``rest_port`` (None when disabled), ``models`` (the
    ``ModelRegistry``), ``versions`` (the first model's ``ModelVersions``), ``metrics``
    (None without Prometheus export), ``stop()``, ``wait()``; also a context manager."""

    def __init__(self, models, rest_server, grpc_server, grpc_port: Optional[int],
                 batcher=None, metrics=None, config_poller=None):
        self.models = models
        names = [m.name for m in models.config.model_config_list.config] \
            if models.config is not None else models.names()
        self.model_name = names[0] if names else None
        self.batcher = batcher
        self.metrics = metrics
        self.rest_server = rest_server
        self.grpc_server = grpc_server
        self.grpc_port = grpc_port
        self.rest_port = rest_server.port if rest_server is not None else None
        self._config_poller = config_poller
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    @property
    def versions(self):
        """The ``ModelVersions`` of the first model configured at start (one-model use)."""
        return self.models.get(self.model_name) if self.model_name is not None else None

    @property
    def model_base_path(self) -> Optional[str]:
        versions = self.versions
        return versions.base_path if versions is not None else None

    def stop(self, grace: float = 5.0) -> None:
        """Stops accepting requests, lets in-flight ones finish (up to ``grace`` s), unloads."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            try:
                if self._config_poller is not None:
                    self._config_poller.stop()
                if self.rest_server is not None:
                    self.rest_server.stop(grace)
                if self.grpc_server is not None:
                    self.grpc_server.stop(grace).wait(grace + 1)
            finally:
                if self.batcher is not None:
                    self.batcher.stop()
                self.models.stop(grace)
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


class ConfigFilePoller:
    """TF Serving's ``--model_config_file_poll_wait_seconds``: re-reads the config file every
    ``seconds`` and applies it (server.cc ``PollFilesystemAndReloadConfig``).  A file that
    does not parse, or a config the registry refuses, is logged and changes nothing; the
    next poll tries again."""

    def __init__(self, path: str, models, seconds: float):
        self.path, self.models, self.seconds = path, models, seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-config-poll",
                                        daemon=True)

    def start(self) -> "ConfigFilePoller":
        self._thread.start()
        return self

    def poll(self) -> bool:
        """One read-and-apply; True when the file's config is the one applied."""
        from serving.model_server import errors
        from serving.model_server.model_config import ConfigError, read_model_server_config
        try:
            config = read_model_server_config(self.path)
        except ConfigError as e:
            log.error("Failed to read ModelServerConfig file: %s", e)
            return False
        try:
            self.models.reload(config)
        except errors.ServingError as e:
            log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s", e.message)
            return False
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.seconds):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the poller must survive anything
                log.exception("polling %s failed", self.path)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(10)


def serve(model_base_path: Optional[str] = None, model_name: Optional[str] = "stars",
          rest_port: Optional[int] = 8501, grpc_port: Optional[int] = 8500,
          poll_seconds: float = 1.0, *,
          host: str = "0.0.0.0", max_request_mb: float = DEFAULT_MAX_REQUEST_MB,
          num_latest: int = 1, specific_versions: Optional[Iterable[int]] = None,
          max_load_retries: int = 3, grpc_workers: int = 8, loader=None,
          max_batch_rows: Optional[int] = DEFAULT_MAX_BATCH_ROWS,
          rest_read_timeout_s: float = DEFAULT_REST_READ_TIMEOUT_S,
          grpc_max_concurrent_rpcs: Optional[int] = DEFAULT_GRPC_MAX_CONCURRENT_RPCS,
          batching=None, model_config=None, model_config_file: Optional[str] = None,
          model_config_poll_seconds: float = 0.0,
          allow_version_labels_for_unavailable_models: bool = False,
          monitoring=None, monitoring_config_file: Optional[str] = None,
          rest_api_timeout_s: Optional[float] = DEFAULT_REST_API_TIMEOUT_MS / 1000.0,
          grpc_socket_path: Optional[str] = None, grpc_channel_arguments: str = "",
          ) -> ModelServer:
    """Loads the models and serves them.

    The models: ``model_config`` (a ``ModelServerConfig``, or its text), else the
    ``model_config_file`` (re-read every ``model_config_poll_seconds`` when > 0), else one
    model ``model_name`` at ``model_base_path`` (``<base>/<version>/`` SavedModels) whose
    version policy is the ``num_latest`` highest versions (TF Serving's default ``latest
    1``) or the ``specific_versions``.  Version labels may only point at an AVAILABLE
    version unless ``allow_version_labels_for_unavailable_models``.

    ``rest_port``/``grpc_port``: 0 = any free port (see ``.rest_port``/``.grpc_port``), None =
    that API disabled.  ``poll_seconds``: how often new versions are looked for (<= 0: only at
    start).  Requests over ``max_request_mb`` are refused (HTTP 413 / gRPC
    RESOURCE_EXHAUSTED), and so are requests of more than ``max_batch_rows`` rows (400 /
    INVALID_ARGUMENT).  A REST request's head and body must arrive within
    ``rest_read_timeout_s``, and a REST inference call must answer within
    ``rest_api_timeout_s`` (TF Serving's ``--rest_api_timeout_in_ms``; None: no limit);
    beyond ``grpc_max_concurrent_rpcs`` gRPC calls in progress a call is refused at once
    (RESOURCE_EXHAUSTED).  ``batching`` (``batching.BatchingParameters``): concurrent calls
    are merged (TF Serving's ``--enable_batching``).  ``monitoring`` (a
    ``MonitoringConfig``) or ``monitoring_config_file``: Prometheus metrics on the REST port.
    Returns once the initial versions are loaded.
    """
    from serving.model_server import model_config as configs
    from serving.model_server.grpc_service import create_grpc_server
    from serving.model_server.models import ModelRegistry
    from serving.model_server.monitoring import Metrics, MetricsInterceptor
    from serving.model_server.rest import RestServer
    from serving.model_server.versions import load_saved_model

    if rest_port is None and grpc_port is None and not grpc_socket_path:
        raise ValueError("at least one of rest_port, grpc_port and grpc_socket_path is needed")
    from serving.model_server.grpc_service import parse_channel_arguments
    channel_arguments = parse_channel_arguments(grpc_channel_arguments)
    if isinstance(model_config, str):
        model_config = configs.parse_text(
            model_config, configs.model_server_config_pb2.ModelServerConfig(), "model_config")
    if model_config is None and model_config_file:
        model_config = configs.read_model_server_config(model_config_file)
    if model_config is None:
        if not model_base_path or not model_name:
            raise ValueError("Both server_options.model_base_path and "
                             "server_options.model_config_file are empty!")
        if not os.path.isdir(model_base_path):
            raise FileNotFoundError(f"Could not find base path {model_base_path} for servable "
                                    f"{model_name}")
        model_config = configs.single_model_config(
            model_name, os.path.abspath(model_base_path), num_latest,
            sorted({int(v) for v in specific_versions}) if specific_versions else ())
    if monitoring is None and monitoring_config_file:
        monitoring = configs.read_monitoring_config(monitoring_config_file)
    max_bytes = max(1, int(max_request_mb * 1024 * 1024))
    models = ModelRegistry(poll_seconds=poll_seconds, max_load_retries=max_load_retries,
                           loader=loader or load_saved_model,
                           allow_version_labels_for_unavailable_models=(
                               allow_version_labels_for_unavailable_models))
    models.reload(model_config, require_available=False)
    metrics_path = configs.prometheus_path(monitoring)
    metrics = Metrics(metrics_path, models) if metrics_path else None
    from serving.model_server.batching import Batcher
    batcher = Batcher(batching) if batching is not None else None
    rest_server = grpc_server = bound_grpc = poller = None
    try:
        if grpc_port is not None or grpc_socket_path:
            address = None if grpc_port is None else (
                f"[{host}]:{grpc_port}" if ":" in host else f"{host or '0.0.0.0'}:{grpc_port}")
            grpc_server, bound_grpc = create_grpc_server(
                models, address, max_bytes, max_workers=grpc_workers, max_rows=max_batch_rows,
                max_concurrent_rpcs=grpc_max_concurrent_rpcs, batcher=batcher,
                interceptors=[MetricsInterceptor(metrics)] if metrics is not None else (),
                socket_path=grpc_socket_path, channel_arguments=channel_arguments)
        if rest_port is not None:
            rest_server = RestServer((host or "0.0.0.0", rest_port), models, max_bytes,
                                     max_rows=max_batch_rows, read_timeout_s=rest_read_timeout_s,
                                     batcher=batcher, metrics=metrics,
                                     call_timeout_s=rest_api_timeout_s)
    except BaseException:
        if rest_server is not None:
            rest_server.server_close()
        if batcher is not None:
            batcher.stop()
        models.stop()
        raise
    if model_config_file and model_config_poll_seconds and model_config_poll_seconds > 0:
        poller = ConfigFilePoller(model_config_file, models, model_config_poll_seconds).start()
    if grpc_server is not None:
        grpc_server.start()
    if rest_server is not None:
        rest_server.start()
    server = ModelServer(models, rest_server, grpc_server, bound_grpc, batcher, metrics, poller)
    log.info("serving %s: gRPC %s, REST %s%s", models.names(), bound_grpc, server.rest_port,
             f", metrics at {metrics_path}" if metrics else "")
    return server


# ------------------------------------------------------------------------------ command line
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``stars serve model`` options (TF Serving's flag spellings are accepted too)."""
    parser.add_argument("--model-base-path", "--model_base_path", dest="model_base_path",
                        default="", help="TF Serving model base path: <base>/<version>/ "
                                         "(ignored with --model_config_file)")
    parser.add_argument("--model-name", "--model_name", dest="model_name", default="stars",
                        help="the model's name (ignored with --model_config_file)")
    parser.add_argument("--model-config-file", "--model_config_file", dest="model_config_file",
                        default="", help="TF Serving's ModelServerConfig text proto: several "
                                         "models, version policies and labels")
    parser.add_argument("--model-config-file-poll-wait-seconds",
                        "--model_config_file_poll_wait_seconds", dest="config_poll_seconds",
                        type=float, default=0.0,
                        help="re-read --model_config_file this often (0: read once, as TF "
                             "Serving)")
    parser.add_argument("--allow-version-labels-for-unavailable-models",
                        "--allow_version_labels_for_unavailable_models",
                        dest="allow_unavailable_labels", type=_flag_bool, nargs="?",
                        const=True, default=False,
                        help="a new version label may point at a version not loaded yet "
                             "(TF Serving's flag; needed for labels in the config at start)")
    parser.add_argument("--monitoring-config-file", "--monitoring_config_file",
                        dest="monitoring_config_file", default="",
                        help="TF Serving's MonitoringConfig text proto: prometheus_config "
                             "{ enable: true path: ... } exposes metrics on the REST port")
    parser.add_argument("--port", dest="port", type=int, default=8500, help="gRPC port")
    parser.add_argument("--rest-api-port", "--rest_api_port", dest="rest_api_port", type=int,
                        default=8501, help="REST port (0 = no REST API, as TF Serving)")
    parser.add_argument("--grpc-socket-path", "--grpc_socket_path", dest="grpc_socket_path",
                        default="", help="also serve gRPC on this Unix domain socket")
    parser.add_argument("--grpc-channel-arguments", "--grpc_channel_arguments",
                        dest="grpc_channel_arguments", default="",
                        help="gRPC server arguments, comma separated "
                             "(e.g. grpc.max_connection_age_ms=2000)")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (ours only)")
    parser.add_argument("--file-system-poll-wait-seconds", "--file_system_poll_wait_seconds",
                        dest="poll_seconds", type=float, default=1.0,
                        help="how often to look for new versions")
    parser.add_argument("--num-latest", dest="num_latest", type=int, default=None,
                        help="serve the N highest versions (the one model's 'latest' policy; "
                             "ours only, a model config's policy otherwise)")
    parser.add_argument("--versions", dest="versions", default="",
                        help="comma-separated versions to serve (the one model's 'specific' "
                             "policy; ours only)")
    parser.add_argument("--max-request-mb", dest="max_request_mb", type=float,
                        default=DEFAULT_MAX_REQUEST_MB, help="largest request accepted (ours only)")
    parser.add_argument("--max-batch-rows", dest="max_batch_rows", type=int,
                        default=DEFAULT_MAX_BATCH_ROWS,
                        help="most rows one request may carry (400 beyond; ours only)")
    parser.add_argument("--rest-read-timeout-ms", dest="rest_read_timeout_ms", type=float,
                        default=DEFAULT_REST_READ_TIMEOUT_S * 1000,
                        help="a REST request's head and body must arrive within this "
                             "(ours only)")
    parser.add_argument("--rest-api-timeout-in-ms", "--rest_api_timeout_in_ms",
                        dest="rest_api_timeout_ms", type=int,
                        default=DEFAULT_REST_API_TIMEOUT_MS,
                        help="a REST predict/classify/regress call answers within this, else "
                             "504 DEADLINE_EXCEEDED (TF Serving's flag; <= 0: no limit)")
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
                        type=_flag_bool, nargs="?", const=True, default=False,
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


def _flag_bool(text: str) -> bool:
    """A TF Serving boolean flag's value: ``--flag``, ``--flag=true`` or ``--flag=false``."""
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _batching(args):
    if not args.enable_batching:
        if args.batching_parameters_file:
            raise ValueError("server_options.batching_parameters_file is set without setting "
                             "server_options.enable_batching to true.")
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


def model_config_text(model_name: str, model_base_path: str, num_latest: Optional[int] = 1,
                      specific_versions: Sequence[int] = ()) -> str:
    """A TF Serving ``model_config_file`` (text proto) for one model with this server's
    ``--num-latest``/``--versions`` policy."""
    from serving.model_server.model_config import config_text, single_model_config
    return config_text(single_model_config(model_name, model_base_path, num_latest,
                                           specific_versions))


def _check_policy_flags(args) -> None:
    """``--num-latest/--versions`` set the one model's policy; a config file has its own."""
    if args.model_config_file and (args.num_latest is not None or args.versions):
        raise ValueError("--num-latest/--versions set the version policy of --model_base_path's "
                         "model; with --model_config_file, set model_version_policy in the file")
    if args.num_latest is not None and args.versions:
        raise ValueError("--num-latest and --versions are two version policies: give one")
    if not args.model_config_file and not args.model_base_path:
        raise ValueError("Both server_options.model_base_path and "
                         "server_options.model_config_file are empty!")


def native_argv(binary: str, args) -> list[str]:
    """``tensorflow_model_server`` command line with the same model configuration."""
    argv = [binary, f"--port={args.port}", f"--rest_api_port={args.rest_api_port}"]
    if args.model_config_file:
        argv.append(f"--model_config_file={os.path.abspath(args.model_config_file)}")
        if args.config_poll_seconds > 0:  # whole seconds; 0 would mean "read once"
            argv.append("--model_config_file_poll_wait_seconds="
                        f"{max(1, int(round(args.config_poll_seconds)))}")
    else:
        base = os.path.abspath(args.model_base_path)
        specific = _specific(args.versions)
        if specific or (args.num_latest or 1) != 1:
            fd, path = tempfile.mkstemp(prefix="stars-model-config-", suffix=".pbtxt")
            with os.fdopen(fd, "w") as f:
                f.write(model_config_text(args.model_name, base, args.num_latest, specific))
            argv.append(f"--model_config_file={path}")
        else:
            argv += [f"--model_name={args.model_name}", f"--model_base_path={base}"]
    # TF Serving's flag is whole seconds; 0 would mean "poll once".
    poll = args.poll_seconds
    argv.append(f"--file_system_poll_wait_seconds={max(1, int(round(poll))) if poll > 0 else 0}")
    if getattr(args, "allow_unavailable_labels", False):
        argv.append("--allow_version_labels_for_unavailable_models=true")
    if getattr(args, "monitoring_config_file", ""):
        argv.append(f"--monitoring_config_file={os.path.abspath(args.monitoring_config_file)}")
    timeout_ms = getattr(args, "rest_api_timeout_ms", DEFAULT_REST_API_TIMEOUT_MS)
    if timeout_ms != DEFAULT_REST_API_TIMEOUT_MS:
        argv.append(f"--rest_api_timeout_in_ms={timeout_ms}")
    for flag, value in (("tensorflow_intra_op_parallelism", getattr(args, "intra_op", 0)),
                        ("tensorflow_inter_op_parallelism", getattr(args, "inter_op", 0))):
        if value:
            argv.append(f"--{flag}={value}")
    if getattr(args, "grpc_socket_path", ""):
        argv.append(f"--grpc_socket_path={args.grpc_socket_path}")
    if getattr(args, "grpc_channel_arguments", ""):
        argv.append(f"--grpc_channel_arguments={args.grpc_channel_arguments}")
    if getattr(args, "enable_batching", False):
        argv.append("--enable_batching=true")
        if args.batching_parameters_file:
            argv.append(f"--batching_parameters_file="
                        f"{os.path.abspath(args.batching_parameters_file)}")
    return argv


def run(args) -> int:
    """Runs ``stars serve model`` from parsed arguments (execs the native server if any)."""
    _check_policy_flags(args)
    if not args.no_native:
        binary = shutil.which(args.native_binary)
        if binary:
            argv = native_argv(binary, args)
            print(f"stars serve model: exec {' '.join(argv)}", file=sys.stderr, flush=True)
            os.execv(binary, argv)  # does not return
    if not args.model_config_file and not os.path.isdir(args.model_base_path):
        raise FileNotFoundError(f"model base path {args.model_base_path} does not exist")
    set_tensorflow_threads(args.intra_op, args.inter_op)
    server = serve(args.model_base_path, args.model_name,
                   rest_port=args.rest_api_port or None, grpc_port=args.port,
                   poll_seconds=args.poll_seconds, host=args.host,
                   max_request_mb=args.max_request_mb, num_latest=args.num_latest or 1,
                   specific_versions=_specific(args.versions) or None,
                   max_load_retries=args.max_load_retries, grpc_workers=args.grpc_workers,
                   max_batch_rows=args.max_batch_rows,
                   rest_read_timeout_s=args.rest_read_timeout_ms / 1000.0,
                   grpc_max_concurrent_rpcs=args.grpc_max_concurrent_rpcs,
                   batching=_batching(args),
                   model_config_file=args.model_config_file or None,
                   model_config_poll_seconds=args.config_poll_seconds,
                   allow_version_labels_for_unavailable_models=args.allow_unavailable_labels,
                   monitoring_config_file=args.monitoring_config_file or None,
                   rest_api_timeout_s=(args.rest_api_timeout_ms / 1000.0
                                       if args.rest_api_timeout_ms > 0 else None),
                   grpc_socket_path=args.grpc_socket_path or None,
                   grpc_channel_arguments=args.grpc_channel_arguments)
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal %d: shutting down", signum)
        stop.set()
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    models = {name: server.models.get(name).serving_versions()
              for name in server.models.names()}
    print(json.dumps({"model_name": server.model_name, "model_base_path": server.model_base_path,
                      "grpc_port": server.grpc_port, "rest_port": server.rest_port,
                      "versions": models.get(server.model_name or "", []), "models": models,
                      "metrics_path": server.metrics.path if server.metrics else None}),
          flush=True)
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
    except ServingError as e:  # a config the server refuses (labels, platforms, paths)
        print(f"stars serve model: error: {e.code.name}: {e.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
