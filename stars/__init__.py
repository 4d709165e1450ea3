"""STARS: semantic-token sequential retrieval on the TensorFlow ecosystem.

Importing a package sets nothing up: entry points call
:func:`stars.environment.configure` first (see that module)."""

__version__ = "0.1.0"
