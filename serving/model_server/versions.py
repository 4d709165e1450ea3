"""Model versions under a TF Serving base path: discovery, background loading, atomic swap.

``<base>/<N>/saved_model.pb`` is version ``N`` (numeric directory names only, as TF Serving's
file-system source).  A poller thread rescans the base path every ``poll_seconds`` and

* loads the versions the policy asks for (TF Serving's ``ServableVersionPolicy``: default
  ``latest 1``; also ``latest N``, ``all`` or ``specific`` versions) while the current ones
  keep serving; ``configure`` changes the policy or base path of a running model (a
  reloaded model config);
* swaps the serving set in one step under a lock (a request sees the old set or the new one);
* retires a version that leaves the set only after its in-flight requests finish: every
  request holds a reference (``handle``) and the last one out finishes the unload;
* reports every version it touched, as TF Serving's ``ServableStateMonitor`` does
  (START/LOADING/AVAILABLE/UNLOADING/END, with the load error for a version that failed).

A version directory is loaded only once it is complete and settled: ``saved_model.pb`` and
the variables index present, and every file (``assets/`` included) unchanged since the
previous look, so a push copied in place is not loaded half-written.  A serving version
whose files change later (a copy that paused longer than a poll, a version re-pushed in
place) is loaded again and swapped in like a new version.
A version that fails to load is retried on the next polls (a Pusher copying files into place
is the usual cause) up to ``max_load_retries`` times, then again only if its files change.
It never replaces a good version: the versions serving keep serving until a newer one is
AVAILABLE, and at start-up an older loadable version is served instead.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import threading
import time
from typing import Any, Callable, Iterable, Optional

from serving.model_server import errors

log = logging.getLogger(__name__)

SERVE_TAG = "serve"
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


def read_signature_defs(export_dir: str) -> dict:
    """``SignatureDef`` protos of the ``serve`` MetaGraph, read from ``saved_model.pb``."""
    from tensorflow.core.protobuf import saved_model_pb2
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise errors.ServingError(errors.Code.NOT_FOUND,
                              f"Could not find meta graph def matching supplied tags: "
                              f"{{ {SERVE_TAG} }}. To inspect available tag-sets in the "
                              f"SavedModel, please use the SavedModel CLI: `saved_model_cli`")


def load_saved_model(export_dir: str):
    """Loads a serving SavedModel with the ScaNN ops registered (``import scann``)."""
    try:
        import scann  # noqa: F401  (registers the Scann op namespace)
    except ImportError:  # pragma: no cover - scann is a dependency; brute_force exports load anyway
        log.warning("scann is not importable: models with ScaNN ops will not load")
    import tensorflow as tf

    from stars.saved_model import replay_warmup
    loaded = tf.saved_model.load(export_dir, tags=[SERVE_TAG])
    # TF Serving replays assets.extra/tf_serving_warmup_requests before serving a version.
    warmed = replay_warmup(loaded, export_dir)
    if warmed:
        log.info("%s: replayed %d warm-up requests", export_dir, warmed)
    return loaded


@dataclasses.dataclass(eq=False)
class Servable:
    """One loaded version: the TF object, its SignatureDefs and its in-flight count."""
    name: str
    version: int
    path: str
    model: Any  # the loaded SavedModel (None once released)
    signature_defs: dict
    refs: int = 0
    retiring: bool = False
    fingerprint: tuple = ()  # the files it was loaded from (reloaded when they change)
    replaced: bool = False   # retired because the same version was reloaded

    def signature(self, key: str):
        """The callable signature ``key`` (``None`` if the SavedModel has no such one)."""
        model = self.model
        return None if model is None else model.signatures.get(key)


@dataclasses.dataclass
class VersionState:
    version: int
    state: str
    error_code: object = errors.Code.OK      # grpc.StatusCode
    error_message: str = ""


@dataclasses.dataclass
class _Failure:
    fingerprint: tuple
    attempts: int


SETTLE_S = 0.2  # at start-up, the pause between the two looks that tell a directory settled


def _fingerprint(path: str) -> tuple:
    """Every file of a version directory (``assets/`` and ``assets.extra/`` included) with
    its size and modification time: equal twice in a row = settled; different from what a
    servable was loaded from = changed."""
    parts: list[tuple] = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            try:
                st = os.stat(full)
                parts.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns))
            except OSError:
                parts.append((os.path.relpath(full, path), None, None))
    return tuple(parts)


def _complete(path: str) -> bool:
    """A SavedModel's required files are there (variables only when it has a directory)."""
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        return False
    variables = os.path.join(path, "variables")
    return (not os.path.isdir(variables)
            or os.path.exists(os.path.join(variables, "variables.index")))


class ModelVersions:
    """The versions of one model under ``base_path`` (see the module docstring)."""

    def __init__(self, base_path: str, name: str, poll_seconds: float = 1.0,
                 num_latest: int = 1, specific_versions: Optional[Iterable[int]] = None,
                 max_load_retries: int = 3,
                 loader: Callable[[str], object] = load_saved_model,
                 all_versions: bool = False):
        self.name = name
        self.poll_seconds = poll_seconds
        self._set_policy(base_path, num_latest, specific_versions, all_versions)
        self.max_load_retries = max_load_retries
        self.loader = loader
        self._lock = threading.Condition()       # guards _serving, refs, _states
        self._poll_lock = threading.Lock()       # one scan at a time
        self._serving: dict[int, Servable] = {}  # replaced wholesale (atomic swap)
        self._states: dict[int, VersionState] = {}
        self._failures: dict[int, _Failure] = {}
        self._seen: dict[int, tuple] = {}        # each version's files at the previous look
        self._settled: set[int] = set()          # versions whose files did not change since
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._collect = False
        self._stopped = False

    def _set_policy(self, base_path: str, num_latest: int,
                    specific_versions: Optional[Iterable[int]], all_versions: bool) -> None:
        if num_latest < 1:
            raise ValueError("num_latest must be >= 1")
        self.base_path = os.path.abspath(base_path)
        self.num_latest = num_latest
        self.specific_versions = (sorted({int(v) for v in specific_versions})
                                  if specific_versions is not None else None)
        self.all_versions = bool(all_versions) and self.specific_versions is None

    def policy(self) -> tuple:
        """``(base_path, num_latest, specific_versions, all_versions)``: what ``configure``
        takes, to tell whether a reloaded config changes this model."""
        specific = tuple(self.specific_versions) if self.specific_versions is not None else None
        return self.base_path, self.num_latest, specific, self.all_versions

    def configure(self, base_path: str, num_latest: int = 1,
                  specific_versions: Optional[Iterable[int]] = None,
                  all_versions: bool = False) -> None:
        """A new version policy (or base path) for a running model, applied by one
        immediate scan: versions the new policy wants are loaded before the ones it drops
        are retired, as on any poll.  A version already loaded stays loaded under the same
        number even when the base path moves (TF Serving identifies a servable by name and
        version)."""
        with self._poll_lock:
            self._set_policy(base_path, num_latest, specific_versions, all_versions)
        self._poll_settled()

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> "ModelVersions":
        """Loads the initial versions (synchronously, as TF Serving does), then polls."""
        if not os.path.isdir(self.base_path):
            raise FileNotFoundError(f"Could not find base path {self.base_path} for servable "
                                    f"{self.name}")
        self._poll_settled()
        if self.poll_seconds and self.poll_seconds > 0:
            self._thread = threading.Thread(target=self._run, name=f"versions-{self.name}",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stops polling; unloads every version once its in-flight requests finish."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        with self._poll_lock, self._lock:
            self._stopped = True
            old, self._serving = self._serving, {}
            for servable in old.values():
                self._begin_retire(servable)
            deadline = time.monotonic() + timeout
            while any(s.refs for s in old.values()) and time.monotonic() < deadline:
                self._lock.wait(0.05)
            for servable in old.values():
                if servable.model is not None:
                    self._finish_retire(servable)
            self._lock.notify_all()
        gc.collect()

    def _poll_settled(self) -> None:
        """A scan now, and a second one ``SETTLE_S`` later when the first saw directories
        for the first time (a directory is loaded once two looks agree)."""
        self.poll()
        if any(v not in self._serving and v not in self._settled for v in self._seen):
            time.sleep(SETTLE_S)
            self.poll()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the poller must survive anything
                log.exception("polling %s failed", self.base_path)

    # ---------------------------------------------------------------- discovery
    def discover(self) -> dict[int, str]:
        """``{version: path}`` of the numeric version directories holding a complete
        SavedModel whose files did not change since the previous look (settled), and of the
        versions serving whose directory is still there (being re-pushed, maybe: they keep
        serving until their new files settle).  ``self._settled``: the settled ones."""
        found: dict[int, str] = {}
        self._settled = set()
        try:
            entries = list(os.scandir(self.base_path))
        except OSError as e:
            log.warning("cannot list %s: %s", self.base_path, e)
            return found
        seen: dict[int, tuple] = {}
        for entry in entries:
            if not entry.name.isdigit() or not entry.is_dir():
                continue
            version = int(entry.name)
            if version in self._serving:
                found[version] = entry.path
            if not _complete(entry.path):
                continue  # still being written (or not a SavedModel): look again next poll
            seen[version] = _fingerprint(entry.path)
            if self._seen.get(version) == seen[version]:
                found[version] = entry.path
                self._settled.add(version)
        self._seen = seen
        return found

    def _may_try(self, version: int, path: str) -> bool:
        failure = self._failures.get(version)
        if failure is None:
            return True
        if failure.fingerprint != _fingerprint(path):
            del self._failures[version]
            return True
        return failure.attempts <= self.max_load_retries

    def _given_up(self, version: int, path: str) -> bool:
        failure = self._failures.get(version)
        return (failure is not None and failure.attempts > self.max_load_retries
                and failure.fingerprint == _fingerprint(path))

    # ---------------------------------------------------------------- loading
    def _set_state(self, version: int, state: str, code=errors.Code.OK, message: str = ""):
        with self._lock:
            self._states[version] = VersionState(version, state, code, message)
            self._lock.notify_all()

    def _load(self, version: int, path: str, reload: bool = False) -> Optional[Servable]:
        """``reload``: the version serves meanwhile, so its state stays AVAILABLE."""
        fingerprint = self._seen.get(version, ())
        if not reload:
            self._set_state(version, LOADING)
        log.info("loading servable version {name: %s version: %d} from %s",
                 self.name, version, path)
        start = time.monotonic()
        try:
            signature_defs = read_signature_defs(path)
            model = self.loader(path)
        except Exception as e:  # noqa: BLE001 - any load failure is reported, not raised
            error = errors.from_exception(e)
            if error.code == errors.Code.INTERNAL and not isinstance(e, errors.ServingError):
                error = errors.ServingError(errors.Code.UNKNOWN, error.message)
            failure = self._failures.get(version)
            fp = _fingerprint(path)
            attempts = failure.attempts + 1 if failure and failure.fingerprint == fp else 1
            self._failures[version] = _Failure(fp, attempts)
            if not reload:
                self._set_state(version, END, error.code, error.message)
            log.warning("failed to load version %d of %s (attempt %d): %s", version, self.name,
                        attempts, error.message)
            return None
        self._failures.pop(version, None)
        log.info("loaded version %d of %s in %.1fs", version, self.name,
                 time.monotonic() - start)
        return Servable(self.name, version, path, model, signature_defs,
                        fingerprint=fingerprint)

    def poll(self) -> None:
        """One scan: load what the policy wants, swap, retire what left the serving set."""
        with self._poll_lock:
            if self._stopped:
                return
            on_disk = self.discover()
            serving = dict(self._serving)
            if self.specific_versions is not None:
                wanted = [v for v in self.specific_versions if v in on_disk]
            else:
                candidates = sorted((v for v in on_disk if not self._given_up(v, on_disk[v])),
                                    reverse=True)
                wanted = candidates if self.all_versions else candidates[:self.num_latest]
            loaded = {}
            for version in wanted:
                current = serving.get(version)
                if (current is not None and version in self._settled
                        and current.fingerprint != self._seen.get(version)):
                    # re-pushed in place: the new files, swapped in; the old ones if they fail
                    reloaded = self._load(version, on_disk[version], reload=True)
                    loaded[version] = reloaded or current
                elif current is not None:
                    loaded[version] = current
                elif version in self._settled and self._may_try(version, on_disk[version]):
                    servable = self._load(version, on_disk[version])
                    if servable is not None:
                        loaded[version] = servable
            keep = dict(loaded)
            if self.specific_versions is None and len(keep) < len(wanted):
                # A wanted version failed (or awaits a retry): never lose a good version for it.
                shortfall = len(wanted) - len(keep)
                older = sorted((v for v in serving if v not in keep), reverse=True)
                for version in older[:shortfall]:
                    keep[version] = serving[version]
                if not keep:  # nothing serving at all (start-up): fall back to older versions
                    for version in sorted(on_disk, reverse=True):
                        if version in wanted or self._given_up(version, on_disk[version]):
                            continue
                        if not self._may_try(version, on_disk[version]):
                            continue
                        servable = self._load(version, on_disk[version])
                        if servable is not None:
                            keep[version] = servable
                            break
            if not on_disk and serving:
                log.warning("no versions of %s found under %s: keeping the ones serving",
                            self.name, self.base_path)
                keep = serving
            self._swap(keep)

    def _swap(self, keep: dict) -> None:
        with self._lock:
            if self._stopped:  # stop() raced with this poll: drop what was just loaded
                for servable in keep.values():
                    if servable.model is not None and servable.version not in self._serving:
                        servable.model = None
                return
            old, self._serving = self._serving, dict(keep)
            for version in keep:
                if self._states.get(version, VersionState(version, START)).state != AVAILABLE:
                    self._states[version] = VersionState(version, AVAILABLE)
            for version, servable in old.items():
                if version not in keep:
                    self._begin_retire(servable)
                elif keep[version] is not servable:  # reloaded: the old copy goes quietly
                    servable.replaced = True
                    self._begin_retire(servable)
            self._lock.notify_all()
        if self._collect:
            self._collect = False
            gc.collect()

    def _begin_retire(self, servable: Servable) -> None:  # holds self._lock
        servable.retiring = True
        if not servable.replaced:
            self._states[servable.version] = VersionState(servable.version, UNLOADING)
        log.info("unloading version %d of %s (%d in flight)", servable.version, self.name,
                 servable.refs)
        if servable.refs == 0:
            self._finish_retire(servable)

    def _finish_retire(self, servable: Servable) -> None:  # holds self._lock
        servable.model = None
        if not servable.replaced:
            self._states[servable.version] = VersionState(servable.version, END)
        self._collect = True
        self._lock.notify_all()

    # ---------------------------------------------------------------- requests
    @contextlib.contextmanager
    def handle(self, version: Optional[int] = None, label: Optional[str] = None):
        """A loaded version for one request (the latest when ``version`` is None); the
        version cannot be unloaded until the ``with`` block ends."""
        if label:
            raise errors.invalid_argument(f"Unrecognized servable version label: {label}")
        with self._lock:
            if self._stopped:
                raise errors.ServingError(errors.Code.UNAVAILABLE, "Server is shutting down")
            serving = self._serving
            if version is None:
                servable = serving[max(serving)] if serving else None
            else:
                servable = serving.get(int(version))
            if servable is None:
                raise errors.servable_not_found(self.name, version)
            servable.refs += 1
        try:
            yield servable
        finally:
            with self._lock:
                servable.refs -= 1
                if servable.retiring and servable.refs == 0 and servable.model is not None:
                    self._finish_retire(servable)
                self._lock.notify_all()

    # ---------------------------------------------------------------- status
    def status(self, version: Optional[int] = None) -> list[VersionState]:
        """TF Serving's ``GetModelStatus``: every version it knows, or the one asked for."""
        with self._lock:
            if version is not None:
                state = self._states.get(int(version))
                if state is None:
                    raise errors.not_found(f"Could not find version {version} of model "
                                           f"{self.name}")
                return [dataclasses.replace(state)]
            if not self._states:
                raise errors.not_found(f"Could not find any versions of model {self.name}")
            return [dataclasses.replace(self._states[v]) for v in sorted(self._states)]

    def states(self) -> dict[int, str]:
        """``{version: state}`` of every version this model has touched (empty before the
        first scan); version labels may only point at an AVAILABLE one."""
        with self._lock:
            return {v: s.state for v, s in self._states.items()}

    def serving_versions(self) -> list[int]:
        with self._lock:
            return sorted(self._serving)

    def in_flight(self) -> int:
        with self._lock:
            return sum(s.refs for s in self._serving.values())

    def wait_until(self, predicate: Callable[["ModelVersions"], bool],
                   timeout: float = 30.0) -> bool:
        """Blocks until ``predicate(self)`` holds (re-checked on every state change)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                if predicate(self):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.2))

    def _state_of(self, version: int) -> Optional[str]:
        state = self._states.get(version)
        return state.state if state else None

    def wait_for_version(self, version: int, state: str = AVAILABLE,
                         timeout: float = 30.0) -> bool:
        return self.wait_until(lambda s: s._state_of(version) == state, timeout)


__all__ = ["ModelVersions", "Servable", "VersionState", "load_saved_model",
           "read_signature_defs", "START", "LOADING", "AVAILABLE", "UNLOADING", "END"]
