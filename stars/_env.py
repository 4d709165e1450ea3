"""The one place that selects Keras 2 for TensorFlow.

TFRS 0.7 is written against Keras 2; TensorFlow 2.16 binds Keras 3 unless
``TF_USE_LEGACY_KERAS=1`` is set *before* TensorFlow is first imported.  Every
entry point of the project (the ``stars`` CLI, the packages that TFX and Beam
workers import -- ``pipeline``, ``components``, ``models``, ``serving`` -- the
servers and the tests) imports :mod:`stars` first, and ``stars/__init__`` calls
:func:`use_legacy_keras`.  Child processes inherit the variable.
"""
import os
import sys
import warnings

LEGACY_KERAS_VAR = "TF_USE_LEGACY_KERAS"


def quiet_python_version_notices() -> None:
    """google-api-core (pulled in by TFX) warns about Python 3.11's end of life once per
    Google package on import: dozens of lines that are not actionable here."""
    warnings.filterwarnings("ignore", category=FutureWarning,
                            message=r"You are using a Python version .* which Google will stop")


def use_legacy_keras() -> None:
    """Sets TF_USE_LEGACY_KERAS=1, or fails loudly when it is already too late.

    TensorFlow resolves ``tf.keras`` lazily, on first use, so setting the
    variable after ``import tensorflow`` still works as long as nothing has
    touched ``tf.keras`` yet; once Keras 3 is bound it cannot be undone.
    """
    os.environ[LEGACY_KERAS_VAR] = "1"
    keras = sys.modules.get("keras")
    if keras is None or "tf_keras" in sys.modules:
        return
    version = str(getattr(keras, "__version__", "3"))
    if not version.startswith("2"):
        raise ImportError(
            f"Keras {version} was loaded before `stars`; TFRS needs Keras 2. "
            f"Import `stars` before tensorflow, or set {LEGACY_KERAS_VAR}=1 "
            "in the environment.")
