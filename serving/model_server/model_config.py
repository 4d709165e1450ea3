"""TF Serving's configuration files: ``ModelServerConfig`` and ``MonitoringConfig`` text protos.

``--model_config_file`` is read with the official ``model_server_config_pb2`` and protobuf's
own text-format parser, so a file that TF Serving accepts is accepted here and the other way
round.  A file that does not parse fails the way TF Serving's ``ParseProtoTextFile`` does:
the parser's "Error parsing text-format tensorflow.serving.ModelServerConfig: L:C: ..." and
"Invalid protobuf file: '<path>'" (``ConfigError``, a ``ValueError``).

``validate`` applies ServerCore's rules to a model list (server_core.cc): unique names,
absolute base paths, a ``model_platform`` that this server runs ("tensorflow").
``MonitoringConfig`` (``monitoring_config.proto``) is not shipped in the
``tensorflow-serving-api`` wheel: its two messages are built here from the same definition,
as ``batching.py`` does for ``BatchingParameters``.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Optional, Sequence

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.model_server import errors

TENSORFLOW_PLATFORM = "tensorflow"
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath
_LOCATION = re.compile(r"^(\d+):(\d+) : ")


class ConfigError(ValueError):
    """A configuration file that cannot be read or parsed (the server does not start)."""


def parse_text(text: str, message, source: str):
    """``text`` into ``message`` (a proto instance); ``ConfigError`` with TF Serving's two
    messages when it does not parse."""
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        detail = _LOCATION.sub(r"\1:\2: ", str(e))
        raise ConfigError(f"Error parsing text-format {message.DESCRIPTOR.full_name}: {detail}\n"
                          f"Invalid protobuf file: '{source}'") from None
    return message


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror or e}") from None


def read_model_server_config(path: str):
    """The ``ModelServerConfig`` of a ``--model_config_file``."""
    return parse_text(_read(path), model_server_config_pb2.ModelServerConfig(), path)


def single_model_config(name: str, base_path: str, num_latest: Optional[int] = None,
                        specific_versions: Sequence[int] = (), all_versions: bool = False):
    """TF Serving's ``BuildSingleModelConfig`` for ``--model_name/--model_base_path``, with
    this server's ``--num-latest/--versions`` as the model's version policy."""
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add(name=name, base_path=base_path,
                                                model_platform=TENSORFLOW_PLATFORM)
    policy = model.model_version_policy
    if specific_versions:
        policy.specific.versions.extend(int(v) for v in specific_versions)
    elif all_versions:
        policy.all.SetInParent()
    elif num_latest is not None and num_latest != 1:
        policy.latest.num_versions = num_latest
    return config


def config_text(config) -> str:
    """A config as the text a ``--model_config_file`` holds."""
    return text_format.MessageToString(config)


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """One model's ``ServableVersionPolicy`` (file_system_storage_path_source.proto)."""
    num_latest: int = 1
    specific_versions: Optional[tuple] = None
    all_versions: bool = False

    @classmethod
    def of(cls, model_config) -> "VersionPolicy":
        policy = model_config.model_version_policy
        choice = policy.WhichOneof("policy_choice")
        if choice == "specific":
            return cls(specific_versions=tuple(sorted({int(v) for v in
                                                       policy.specific.versions})))
        if choice == "all":
            return cls(all_versions=True)
        # Unset, or latest: TF Serving serves at least one (max(num_versions, 1)).
        return cls(num_latest=max(int(policy.latest.num_versions), 1) if choice else 1)


def _is_relative(uri: str) -> bool:
    """TF Serving's ``UriIsRelativePath``: no scheme, no host, not an absolute path."""
    return "://" not in uri and not os.path.isabs(uri)


def validate(config) -> None:
    """ServerCore's checks of a ``model_config_list`` (INVALID_ARGUMENT, its messages)."""
    names: set[str] = set()
    for model in config.model_config_list.config:
        if model.name in names:
            raise errors.invalid_argument(
                f"Illegal to list model {model.name} multiple times in config list")
        names.add(model.name)
    for model in config.model_config_list.config:
        if _is_relative(model.base_path):
            raise errors.invalid_argument(
                f"Expected model {model.name} to have an absolute path or URI; got "
                f"base_path()={model.base_path}")
    for model in config.model_config_list.config:
        platform = model.model_platform
        if model.model_type:  # the deprecated enum: 1 = TENSORFLOW
            if platform:
                raise errors.invalid_argument(
                    "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                    f"ModelServerConfig::model_platform, model name is {model.name}")
            if model.model_type != 1:
                raise errors.invalid_argument(
                    f"ModelServerConfig::model_type choice {model.model_type} not supported.")
            platform = TENSORFLOW_PLATFORM
        if not platform:
            raise errors.invalid_argument(
                "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                f"ModelServerConfig::model_platform, model name is {model.name}")
        if platform != TENSORFLOW_PLATFORM:
            raise errors.invalid_argument(
                f"Model {model.name} requests unsupported platform {platform}")
        if "://" in model.base_path:
            raise errors.invalid_argument(
                f"Model {model.name}: base path {model.base_path} is a URI; this server "
                "reads local directories only (mount the bucket, or run TF Serving)")


# ------------------------------------------------------------------------------ monitoring
_monitoring_class = None


def monitoring_config_class():
    """The ``tensorflow.serving.MonitoringConfig`` message class (monitoring_config.proto:
    ``prometheus_config { bool enable = 1; string path = 2; }``)."""
    global _monitoring_class
    if _monitoring_class is None:
        from google.protobuf import descriptor_pb2

        from serving.model_server.protos import message_class
        F = descriptor_pb2.FieldDescriptorProto
        file = descriptor_pb2.FileDescriptorProto(
            name="stars/tensorflow_serving_monitoring_config.proto",
            package="tensorflow.serving", syntax="proto3")
        prometheus = file.message_type.add(name="PrometheusConfig")
        prometheus.field.add(name="enable", number=1, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
        prometheus.field.add(name="path", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
        monitoring = file.message_type.add(name="MonitoringConfig")
        monitoring.field.add(name="prometheus_config", number=1, type=F.TYPE_MESSAGE,
                             type_name=".tensorflow.serving.PrometheusConfig",
                             label=F.LABEL_OPTIONAL)
        _monitoring_class = message_class(file, "tensorflow.serving.MonitoringConfig")
    return _monitoring_class


def read_monitoring_config(path: str):
    """The ``MonitoringConfig`` of a ``--monitoring_config_file``."""
    return parse_text(_read(path), monitoring_config_class()(), path)


def prometheus_path(monitoring) -> Optional[str]:
    """The path the metrics are served on, or None when Prometheus export is off."""
    if monitoring is None or not monitoring.prometheus_config.enable:
        return None
    return monitoring.prometheus_config.path or DEFAULT_PROMETHEUS_PATH


__all__ = ["ConfigError", "VersionPolicy", "config_text", "monitoring_config_class",
           "parse_text", "prometheus_path", "read_model_server_config",
           "read_monitoring_config", "single_model_config", "validate",
           "DEFAULT_PROMETHEUS_PATH", "TENSORFLOW_PLATFORM"]
