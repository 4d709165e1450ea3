"""pipeline package of STARS."""
import stars  # noqa: F401  (selects Keras 2 before TensorFlow loads)
