"""Process set-up, done once by each entry point — never as an import side effect.

TFRS 0.7 is written against Keras 2; TensorFlow 2.16 binds Keras 3 unless
``TF_USE_LEGACY_KERAS=1`` is set before ``tf.keras`` is first touched.  The entry
points call :func:`configure` before they import anything that builds a model:

* the ``stars`` command (``cli.main.main``);
* the test configuration (``tests/conftest.py``, ``pytest_configure``);
* the benchmarks' ``main`` functions;
* the pipeline image (``Dockerfile``: ``ENV TF_USE_LEGACY_KERAS=1``), where TFX's
  container entry point, not ours, imports the components' executors.

Child processes (Beam workers, servers started by tests) inherit the variables.
The ``models`` package, the one that needs Keras 2, only *checks*
(:func:`require_keras_2`): importing it unconfigured fails with a message that says
what to do, instead of TFRS failing later with an unrelated Keras 3 error.
"""
from __future__ import annotations

import os
import sys
import warnings

LEGACY_KERAS_VAR = "TF_USE_LEGACY_KERAS"


TF_LOG_LEVEL_VAR = "TF_CPP_MIN_LOG_LEVEL"


def configure(verbose: bool = False) -> None:
    """Keras 2 for TensorFlow, TensorFlow's C++ log quiet unless ``verbose`` (it prints
    CUDA-factory errors and op notices on every CPU start; an explicit
    ``TF_CPP_MIN_LOG_LEVEL`` wins), no non-actionable Python warnings; idempotent."""
    use_legacy_keras()
    os.environ.setdefault(TF_LOG_LEVEL_VAR, "0" if verbose else "3")
    quiet_python_version_notices()


def quiet_python_version_notices() -> None:
    """google-api-core (pulled in by TFX) warns about Python 3.11's end of life once per
    Google package on import: dozens of lines that are not actionable here."""
    warnings.filterwarnings("ignore", category=FutureWarning,
                            message=r"You are using a Python version .* which Google will stop")


def _bound_keras_version() -> str | None:
    """The Keras major version ``tf.keras`` is already bound to, or None when unbound."""
    keras = sys.modules.get("keras")
    if keras is None or "tf_keras" in sys.modules:
        return None
    version = str(getattr(keras, "__version__", "3"))
    return None if version.startswith("2") else version


def use_legacy_keras() -> None:
    """Sets TF_USE_LEGACY_KERAS=1, or fails loudly when it is already too late.

    TensorFlow resolves ``tf.keras`` lazily, on first use, so setting the
    variable after ``import tensorflow`` still works as long as nothing has
    touched ``tf.keras`` yet; once Keras 3 is bound it cannot be undone.
    """
    os.environ[LEGACY_KERAS_VAR] = "1"
    version = _bound_keras_version()
    if version is not None:
        raise ImportError(
            f"Keras {version} was loaded before stars.environment.configure(); TFRS needs "
            f"Keras 2. Configure first, or set {LEGACY_KERAS_VAR}=1 in the environment.")


def require_keras_2() -> None:
    """The check the Keras-using package runs on import: no set-up, only a clear error."""
    if os.environ.get(LEGACY_KERAS_VAR) != "1" or _bound_keras_version() is not None:
        raise ImportError(
            "TFRS needs Keras 2: call stars.environment.configure() before importing the "
            f"models (the stars command and the tests do), or set {LEGACY_KERAS_VAR}=1 in "
            "the environment.")
