"""Process set-up happens in the entry points, not on import (stars.environment)."""
import os
import subprocess
import sys

import pytest

from stars import environment


def _run(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter whose environment does not select Keras 2."""
    env = {k: v for k, v in os.environ.items() if k != environment.LEGACY_KERAS_VAR}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("package", ["stars", "pipeline", "components", "serving",
                                     "serving.sidecar.api", "serving.model_server"])
def test_importing_a_package_sets_nothing_up(package):
    result = _run(f"import os, {package}\n"
                  f"print(os.environ.get('{environment.LEGACY_KERAS_VAR}', 'unset'))")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "unset"


def test_configure_selects_keras_2_for_tfrs():
    code = ("from stars.environment import configure\nconfigure()\n"
            "import tensorflow as tf, tensorflow_recommenders as tfrs, models.stars_model\n"
            "layer = tfrs.layers.factorized_top_k.BruteForce(k=1)\n"
            "assert isinstance(layer, tf.keras.layers.Layer)\n"
            "print(tf.keras.Model.__module__)")
    result = _run(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().startswith("tf_keras"), result.stdout


def test_models_unconfigured_fail_with_what_to_do():
    result = _run("import models.stars_model")
    assert result.returncode != 0
    assert "stars.environment.configure()" in result.stderr


def test_configure_after_keras_3_was_bound_fails_loudly():
    result = _run("import keras\nfrom stars.environment import configure\nconfigure()")
    assert result.returncode != 0
    assert "TFRS needs Keras 2" in result.stderr


def test_the_stars_command_configures_itself():
    result = _run("import sys\nfrom cli.main import main\n"
                  "sys.argv = ['stars', 'eval', '--help']\nmain()")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--data-dir" in result.stdout


def test_child_processes_inherit_the_setting():
    """pytest_configure ran configure(); what this process starts inherits it."""
    result = subprocess.run([sys.executable, "-c",
                             "import os; print(os.environ.get('TF_USE_LEGACY_KERAS'))"],
                            capture_output=True, text=True)
    assert result.stdout.strip() == "1"
