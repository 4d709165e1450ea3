"""STARS: semantic-token sequential retrieval on the TensorFlow ecosystem."""
from stars._env import quiet_python_version_notices, use_legacy_keras

use_legacy_keras()
quiet_python_version_notices()

__version__ = "0.1.0"
