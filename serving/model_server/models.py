"""The models a server serves, from a ``ModelServerConfig``: ServerCore's part of TF Serving.

``ModelRegistry`` holds one ``ModelVersions`` per configured model and the version labels,
and applies a new config (``reload``: the config file's poll or gRPC
``ModelService.HandleReloadConfigRequest``) with ServerCore's rules (server_core.cc):

* only a ``model_config_list`` is served; an empty config changes nothing;
* the list is validated first (unique names, absolute base paths, the "tensorflow"
  platform) and a base path that does not exist refuses the whole config, so a refused
  config changes nothing;
* labels are checked before any model changes: a label may only point at a version that
  is AVAILABLE now (FAILED_PRECONDITION "Request to assign label to version V of model M,
  which is not currently available for inference"), unless
  ``--allow_version_labels_for_unavailable_models``, which lets a *new* label (or one kept
  on the same version) point anywhere.  Hence TF Serving's two-step canary: first a config
  that loads the version, then one that moves the label to it;
* models added are loaded before ``reload`` returns (UNKNOWN "N model(s) did not become
  available" otherwise, the model staying configured); models whose policy or base path
  changed are rescanned at once; models removed stop answering at once and unload after
  their in-flight requests, their version states staying visible to GetModelStatus (END).

Requests resolve ``(name, version | label)`` here: an unknown label is INVALID_ARGUMENT
"Unrecognized servable version label: L" (also for an unknown model, as TF Serving looks
the label up first); a label whose version is not loaded is NOT_FOUND "Servable not found
for request: Specific(M, V)".  Model status ignores labels, as TF Serving's does.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Callable, Iterator, Optional

from serving.model_server import errors
from serving.model_server.model_config import VersionPolicy, validate
from serving.model_server.versions import AVAILABLE, ModelVersions, VersionState, load_saved_model

log = logging.getLogger(__name__)


class ModelRegistry:
    """The served models and their labels; ``reload`` applies a new ``ModelServerConfig``."""

    def __init__(self, poll_seconds: float = 1.0, max_load_retries: int = 3,
                 loader: Callable[[str], object] = load_saved_model,
                 allow_version_labels_for_unavailable_models: bool = False):
        self.poll_seconds = poll_seconds
        self.max_load_retries = max_load_retries
        self.loader = loader
        self.allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self._reload_lock = threading.Lock()   # one config change at a time (config_mu_)
        self._models: dict[str, ModelVersions] = {}    # replaced wholesale
        self._retired: dict[str, ModelVersions] = {}   # removed models: status only
        self._labels: dict[str, dict[str, int]] = {}   # replaced wholesale
        self._config = None
        self._stopped = False

    @classmethod
    def of(cls, versions: ModelVersions) -> "ModelRegistry":
        """A registry around one already started ``ModelVersions`` (no config, no labels)."""
        registry = cls(versions.poll_seconds, versions.max_load_retries, versions.loader)
        registry._models = {versions.name: versions}
        return registry

    # ---------------------------------------------------------------- config
    @property
    def config(self):
        """The ``ModelServerConfig`` last applied (None before the first)."""
        return self._config

    def reload(self, config, require_available: bool = True) -> None:
        """Applies ``config`` (see the module docstring); raises ``ServingError`` and
        changes nothing when the config is refused.  ``require_available=False`` (start-up):
        an added model without a loadable version is logged, not an error; it serves once
        one loads."""
        with self._reload_lock:
            if self._stopped:
                raise errors.ServingError(errors.Code.UNAVAILABLE, "Server is shutting down")
            kind = config.WhichOneof("config")
            if kind is None:
                log.info("Taking no action for empty config.")
                return
            if kind != "model_config_list" and self._config is None:
                raise errors.invalid_argument("ModelServer does not yet support custom model "
                                              "config.")
            if kind != "model_config_list":
                raise errors.ServingError(
                    errors.Code.FAILED_PRECONDITION,
                    "Cannot transition to requested config. It is only legal to transition "
                    "from one ModelConfigList to another.")
            validate(config)
            if self._config is not None and config == self._config:
                return
            wanted = {m.name: m for m in config.model_config_list.config}
            for model in wanted.values():
                current = self._models.get(model.name)
                if (current is None or current.base_path != os.path.abspath(model.base_path)) \
                        and not os.path.isdir(model.base_path):
                    raise errors.invalid_argument(f"Could not find base path {model.base_path} "
                                                  f"for servable {model.name}")
            labels = self._label_map(wanted.values())
            self._apply(config, wanted, labels, require_available)

    def _label_map(self, models) -> dict[str, dict[str, int]]:
        """ServerCore::UpdateModelVersionLabelMap against the versions' states now."""
        labels: dict[str, dict[str, int]] = {}
        for model in models:
            current = self._models.get(model.name)
            states = current.states() if current is not None else {}
            for label, version in sorted(model.version_labels.items()):
                allowed = False
                if self.allow_unavailable_labels:
                    existing = self._labels.get(model.name, {}).get(label)
                    allowed = existing is None or existing == version
                if not allowed and states.get(version) != AVAILABLE:
                    raise errors.ServingError(
                        errors.Code.FAILED_PRECONDITION,
                        f"Request to assign label to version {version} of model {model.name}, "
                        "which is not currently available for inference")
                labels.setdefault(model.name, {})[label] = int(version)
        return labels

    def _new_versions(self, model, policy: VersionPolicy) -> ModelVersions:
        return ModelVersions(model.base_path, model.name, poll_seconds=self.poll_seconds,
                             num_latest=policy.num_latest,
                             specific_versions=policy.specific_versions,
                             all_versions=policy.all_versions,
                             max_load_retries=self.max_load_retries, loader=self.loader)

    def _apply(self, config, wanted: dict, labels: dict, require_available: bool) -> None:
        """Loads the added models first (a failure there leaves everything as it was),
        rescans the changed ones, swaps models and labels, then retires the removed."""
        models = dict(self._models)
        added: list[ModelVersions] = []
        try:
            for name, model in wanted.items():
                if name not in models:
                    versions = self._new_versions(model, VersionPolicy.of(model))
                    versions.start()
                    added.append(versions)
        except FileNotFoundError as e:
            for versions in added:
                versions.stop()
            raise errors.invalid_argument(str(e)) from None
        for versions in added:
            models[versions.name] = versions
            self._retired.pop(versions.name, None)
        for name, model in wanted.items():
            policy = VersionPolicy.of(model)
            current = models[name]
            if current not in added and current.policy() != (
                    os.path.abspath(model.base_path), policy.num_latest,
                    policy.specific_versions, policy.all_versions):
                log.info("model %s: new base path or version policy", name)
                current.configure(model.base_path, policy.num_latest, policy.specific_versions,
                                  policy.all_versions)
        removed = [models.pop(name) for name in [n for n in models if n not in wanted]]
        self._labels, self._models, self._config = labels, models, config
        for versions in removed:
            self._retired[versions.name] = versions
            log.info("model %s removed from the config: unloading", versions.name)
            threading.Thread(target=versions.stop, name=f"unload-{versions.name}",
                             daemon=True).start()
        unavailable = [v for v in added if not v.serving_versions()]
        if unavailable:
            details = ", ".join(_unavailable_detail(v) for v in unavailable)
            message = f"{len(unavailable)} model(s) did not become available: {{{details}, }}"
            if require_available:
                raise errors.ServingError(errors.Code.UNKNOWN, message)
            log.warning("%s", message)

    # ---------------------------------------------------------------- requests
    def names(self) -> list[str]:
        return sorted(self._models)

    def get(self, name: str) -> Optional[ModelVersions]:
        """The ``ModelVersions`` serving ``name`` (None when it is not configured)."""
        return self._models.get(name)

    def labels(self, name: str) -> dict[str, int]:
        return dict(self._labels.get(name, {}))

    def resolve(self, name: str, version: Optional[int], label: Optional[str]) -> Optional[int]:
        """The version a ``(version | label)`` request asks for (None: the latest)."""
        if label:
            resolved = self._labels.get(name, {}).get(label)
            if resolved is None:
                raise errors.invalid_argument(f"Unrecognized servable version label: {label}")
            return resolved
        return version

    @contextlib.contextmanager
    def servable(self, name: str, version: Optional[int] = None,
                 label: Optional[str] = None) -> Iterator:
        """The loaded version a request asks for, held until the ``with`` block ends."""
        if not name:
            raise errors.invalid_argument("ModelSpec has no name specified.")
        version = self.resolve(name, version, label)
        model = self._models.get(name)
        if model is None:
            raise errors.servable_not_found(name, version)
        with model.handle(version) as servable:
            yield servable

    def status(self, name: str, version: Optional[int] = None) -> list[VersionState]:
        """TF Serving's ``GetModelStatus`` states (NOT_FOUND for a model never served)."""
        model = self._models.get(name) or self._retired.get(name)
        if model is None:
            if version is not None:
                raise errors.not_found(f"Could not find version {version} of model {name}")
            raise errors.not_found(f"Could not find any versions of model {name}")
        return model.status(version)

    # ---------------------------------------------------------------- lifecycle
    def stop(self, grace: float = 5.0) -> None:
        with self._reload_lock:
            self._stopped = True
            models, self._models = self._models, {}
        for versions in models.values():
            versions.stop(grace)


def as_registry(models) -> ModelRegistry:
    """``models`` itself, or a registry around a bare ``ModelVersions`` (one model)."""
    return models if isinstance(models, ModelRegistry) else ModelRegistry.of(models)


def _unavailable_detail(versions: ModelVersions) -> str:
    states = versions.states()
    failed = [s for s in (versions.status() if states else []) if s.error_message]
    if failed:
        return "; ".join(f"{{name: {versions.name} version: {s.version}}} due to error: "
                         f"{s.error_message}" for s in failed)
    return f"{{name: {versions.name}}} no version found under {versions.base_path}"


__all__ = ["ModelRegistry", "as_registry"]
