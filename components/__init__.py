"""components package of STARS."""

# KFP v2 / Vertex import custom artifact types by TYPE_NAME ("components.<Class>").
from components.artifacts import (  # noqa: F401
    CatalogIndex,
    DataRejects,
    Release,
    UserEmbeddings,
)
