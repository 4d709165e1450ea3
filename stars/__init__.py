"""STARS: semantic-token sequential retrieval on the TensorFlow ecosystem."""
from stars._env import use_legacy_keras

use_legacy_keras()

__version__ = "0.1.0"
