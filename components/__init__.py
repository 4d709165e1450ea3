"""components package of STARS."""
import stars  # noqa: F401  (selects Keras 2 before TensorFlow loads)

from components.artifacts import DataRejects  # noqa: E402,F401  (KFP v2 imports it by TYPE_NAME)
