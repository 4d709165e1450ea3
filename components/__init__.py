"""components package of STARS."""

from components.artifacts import DataRejects  # noqa: F401  (KFP v2 imports it by TYPE_NAME)
