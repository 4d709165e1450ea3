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

import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import standard_artifacts
from tfx.utils import io_utils, path_utils


def next_version(base_directory: str, now: float) -> int:
    existing = [int(v) for v in (tf.io.gfile.listdir(base_directory)
                                 if tf.io.gfile.isdir(base_directory) else [])
                if v.rstrip("/").isdigit()]
    return max([int(now)] + [v + 1 for v in existing])


def prune_unreleased(base_directory: str, release_dir: str) -> list:
    """Removes versions newer than the live release's that no release names: pushes of runs
    that failed before publishing.  Left in place, they would count towards the model
    server's ``latest N`` and could push the live release's version out of it."""
    from stars import release as releases
    live = releases.current(release_dir) if release_dir else None
    if live is None or not tf.io.gfile.isdir(base_directory):
        return []
    removed = []
    for name in tf.io.gfile.listdir(base_directory):
        name = name.rstrip("/")
        if name.isdigit() and int(name) > int(live.model_version):
            tf.io.gfile.rmtree(os.path.join(base_directory, name))
            removed.append(int(name))
    return sorted(removed)


def push(model_dir: str, base_directory: str) -> str:
    """Copies the SavedModel at ``model_dir`` to a new version; returns its directory."""
    tf.io.gfile.makedirs(base_directory)
    version = next_version(base_directory, time.time())
    staging = os.path.join(base_directory, f".incoming-{version}-{secrets.token_hex(4)}")
    final = os.path.join(base_directory, str(version))
    try:
        io_utils.copy_dir(model_dir, staging)
        tf.io.gfile.rename(staging, final)
    except BaseException:
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)
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
