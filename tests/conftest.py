"""Test set-up: `stars` is imported first so TensorFlow binds Keras 2."""
import stars  # noqa: F401
