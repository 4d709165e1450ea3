"""TF_USE_LEGACY_KERAS is set in one place, before TensorFlow binds Keras."""
import os
import subprocess
import sys

import pytest

from stars import _env


def _run(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != _env.LEGACY_KERAS_VAR}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("entry", ["stars", "pipeline", "components", "models", "serving"])
def test_every_package_selects_keras_2_in_a_fresh_process(entry):
    result = _run(f"import {entry}\nimport os, tensorflow as tf\n"
                  "print(os.environ['TF_USE_LEGACY_KERAS'], tf.keras.__name__)")
    assert result.returncode == 0, result.stderr[-2000:]
    flag, keras_module = result.stdout.split()[-2:]
    assert flag == "1" and keras_module.startswith("tf_keras"), result.stdout


def test_tfrs_builds_a_model_under_keras_2_in_a_fresh_process():
    code = ("import stars, tensorflow as tf, tensorflow_recommenders as tfrs\n"
            "layer = tfrs.layers.factorized_top_k.BruteForce(k=1)\n"
            "assert isinstance(layer, tf.keras.layers.Layer)\n"
            "print(tf.keras.Model.__module__)")
    result = _run(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().startswith("tf_keras"), result.stdout


def test_child_processes_inherit_the_setting():
    result = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('TF_USE_LEGACY_KERAS'))"],
                            capture_output=True, text=True)
    assert result.stdout.strip() == "1"


def test_late_import_after_keras_3_fails_loudly():
    code = ("import os\nos.environ['TF_USE_LEGACY_KERAS'] = '0'\nimport keras\n"
            "import stars")
    result = _run(code)
    assert result.returncode != 0
    assert "TFRS needs Keras 2" in result.stderr
