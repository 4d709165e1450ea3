"""Pusher (safe): a blessed model into ``<base>/<version>/``, written under a temporary
name and renamed, so a model server polling the base path never sees half a version.

TFX's Pusher copies straight into the numbered directory (``saved_model.pb`` last):
TF Serving can start loading it while ``variables/`` or ``assets/`` are still being
written.  Here the copy goes to a hidden ``.incoming-<version>-<random>`` directory
that no server treats as a version, and one rename publishes it.  On a local or
mounted file system the rename is atomic; on object stores (gs://) a directory rename
is a copy, which is why TF Serving there should read a versions policy that only
names released versions (see deploy/README.md).

Versions a failed run pushed but never released are removed first: with the model
server's ``latest 2`` they would push the live release's version out.

The output is TFX's ``PushedModel`` with the same custom properties as its Pusher
(``pushed``, ``pushed_destination``, ``pushed_version``), so resolvers and TFMA read
it unchanged.  Versions are Unix seconds, one above the highest existing version
when two pushes fall in the same second.
"""
import logging
import os
import secrets
import time

from tfx import v1 as tfx
from tfx.types import standard_artifacts
from tfx.utils import io_utils, path_utils

from stars import storage


def _versions(base_directory: str) -> list:
    """The numbered version directories (object stores list them with a trailing ``/``,
    which ``storage.listdir`` drops)."""
    if not storage.isdir(base_directory):
        return []
    return [int(name) for name in storage.listdir(base_directory) if name.isdigit()]


def next_version(base_directory: str, now: float) -> int:
    return max([int(now)] + [v + 1 for v in _versions(base_directory)])


def prune_unreleased(base_directory: str, release_dir: str) -> list:
    """Removes versions newer than the live release's that no release names: pushes of runs
    that failed before publishing.  Left in place, they would count towards the model
    server's ``latest N`` and could push the live release's version out of it."""
    from stars import release as releases
    live = releases.current(release_dir) if release_dir else None
    if live is None:
        return []
    removed = sorted(v for v in _versions(base_directory) if v > int(live.model_version))
    for version in removed:
        storage.rmtree(storage.join(base_directory, str(version)))
    return removed


def push(model_dir: str, base_directory: str) -> str:
    """Copies the SavedModel at ``model_dir`` to a new version; returns its directory."""
    storage.makedirs(base_directory)
    version = next_version(base_directory, time.time())
    staging = storage.join(base_directory, f".incoming-{version}-{secrets.token_hex(4)}")
    final = storage.join(base_directory, str(version))
    try:
        io_utils.copy_dir(model_dir, staging)
        storage.rename(staging, final)
    except BaseException:
        if storage.exists(staging):
            storage.rmtree(staging)
        raise
    return final


def is_blessed(blessing) -> bool:
    return bool(blessing.get_int_custom_property("blessed"))


@tfx.dsl.components.component
def ModelPusher(
    model: tfx.dsl.components.InputArtifact[standard_artifacts.Model],
    model_blessing: tfx.dsl.components.InputArtifact[standard_artifacts.ModelBlessing],
    pushed_model: tfx.dsl.components.OutputArtifact[standard_artifacts.PushedModel],
    base_directory: tfx.dsl.components.Parameter[str],
    release_dir: tfx.dsl.components.Parameter[str] = "",
):
    """Pushes the model when it is blessed (``pushed`` = 0 otherwise), after removing
    versions that were pushed but never released (``prune_unreleased``)."""
    if not is_blessed(model_blessing):
        pushed_model.set_int_custom_property("pushed", 0)
        return
    removed = prune_unreleased(base_directory, release_dir)
    if removed:
        logging.warning("removed versions %s under %s: pushed, never released", removed,
                        base_directory)
    final = push(path_utils.serving_model_path(model.uri), base_directory)
    pushed_model.set_int_custom_property("pushed", 1)
    pushed_model.set_string_custom_property("pushed_destination", final)
    pushed_model.set_string_custom_property("pushed_version", os.path.basename(final))
