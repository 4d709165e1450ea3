"""A release: the model version, the user embeddings it computed and the catalogue it
indexes, switched together.

STARS §6's daily cycle publishes three things that only make sense together: item
vectors (inside the pushed SavedModel's index), user embeddings computed by that same
model version, and the catalogue the post-filter checks answers against.  A *release*
names one of each; serving switches from one release to the next as a whole.

Layout of a release directory (``<pipeline root>/releases`` by default)::

    CURRENT                      the live release id (replaced atomically)
    <release id>/manifest.json   what the release is made of (below)
    <release id>/catalog/items.* the catalogue snapshot the post-filter uses

A release directory is written under a temporary name and renamed into place, and
``CURRENT`` is replaced last, so a reader sees the previous release or the new one,
never half of one.  The manifest::

    {"release", "created", "source": "pipeline" | "catalog-refresh", "previous",
     "model": {"name", "base_path", "version", "trained_model"},
     "user_embeddings": {"store", "generation", "users", "model_version"},
     "catalogue": {"items", "fingerprint", "elasticsearch": {"alias", "index"} | null},
     "index_quality": {"scann_recall_at_k", "k", "queries", "query_source", "threshold"}}

Plain files (local disk or a mounted volume); no TensorFlow.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import tempfile
from typing import Any, Dict, Optional

from stars import storage
from stars.atomic_files import fsync_dir, write_atomically

MANIFEST = "manifest.json"
CURRENT = "CURRENT"
CATALOG_DIR = "catalog"
SOURCES = ("pipeline", "catalog-refresh")


class ReleaseError(RuntimeError):
    """A release that cannot be read or published."""


def new_release_id(now: Optional[datetime.datetime] = None) -> str:
    """Sorts by creation time: ``20261206T101500123456``."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S%f")


@dataclasses.dataclass(frozen=True)
class Release:
    """One published release (its manifest) and where it lives."""
    directory: str          # <release root>/<release id>
    manifest: Dict[str, Any]

    @property
    def release_id(self) -> str:
        return str(self.manifest["release"])

    @property
    def model_version(self) -> str:
        return str(self.manifest["model"]["version"])

    @property
    def catalog_dir(self) -> str:
        return os.path.join(self.directory, CATALOG_DIR)

    @property
    def trained_model(self) -> str:
        return str(self.manifest["model"].get("trained_model") or "")


def _check(manifest: Dict[str, Any]) -> None:
    for section, fields in (("model", ("name", "version")),
                            ("user_embeddings", ("store", "model_version")),
                            ("catalogue", ("items",)), ("index_quality", ())):
        value = manifest.get(section)
        if not isinstance(value, dict):
            raise ReleaseError(f"release manifest: '{section}' missing")
        for name in fields:
            if value.get(name) in (None, ""):
                raise ReleaseError(f"release manifest: '{section}.{name}' missing")
    if not str(manifest["model"]["version"]).isdigit():
        raise ReleaseError(f"release manifest: model.version must be an integer, got "
                           f"{manifest['model']['version']!r}")
    if manifest.get("source") not in SOURCES:
        raise ReleaseError(f"release manifest: source must be one of {SOURCES}")


def load(release_root: str, release_id: str) -> Release:
    directory = os.path.join(release_root, release_id)
    try:
        with open(os.path.join(directory, MANIFEST), "rb") as f:
            manifest = json.loads(f.read())
    except (OSError, ValueError) as e:
        raise ReleaseError(f"release {release_id} in {release_root}: {e}") from e
    _check(manifest)
    return Release(directory, manifest)


def current_id(release_root: str) -> Optional[str]:
    """The live release id, None before the first release."""
    try:
        with open(os.path.join(release_root, CURRENT), encoding="utf-8") as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    return text or None


def current(release_root: str) -> Optional[Release]:
    release_id = current_id(release_root)
    return load(release_root, release_id) if release_id else None


def publish(release_root: str, manifest: Dict[str, Any], catalog_file: str,
            release_id: Optional[str] = None) -> Release:
    """Writes a release (manifest + catalogue snapshot) and makes it the live one.

    ``manifest`` holds every section but ``release``, ``created`` and ``previous``,
    which are filled in here.  The directory is staged under a hidden name, renamed into
    place, and ``CURRENT`` is replaced last."""
    os.makedirs(release_root, exist_ok=True)
    release_id = release_id or new_release_id()
    final = os.path.join(release_root, release_id)
    if os.path.exists(final):
        raise ReleaseError(f"release {release_id} already exists in {release_root}")
    manifest = dict(manifest, release=release_id, previous=current_id(release_root),
                    created=datetime.datetime.now(datetime.timezone.utc).isoformat(
                        timespec="seconds"))
    _check(manifest)
    staging = tempfile.mkdtemp(prefix=f".{release_id}.", dir=release_root)
    try:
        os.makedirs(os.path.join(staging, CATALOG_DIR))
        storage.copy(catalog_file, os.path.join(staging, CATALOG_DIR,  # it may be a URL
                                                storage.basename(catalog_file)))
        write_atomically(os.path.join(staging, MANIFEST),
                         json.dumps(manifest, indent=1, sort_keys=True).encode())
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(release_root)
    write_atomically(os.path.join(release_root, CURRENT), (release_id + "\n").encode())
    return Release(final, manifest)


__all__ = ["Release", "ReleaseError", "publish", "current", "current_id", "load",
           "new_release_id", "MANIFEST", "CURRENT", "CATALOG_DIR"]
