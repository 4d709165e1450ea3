"""Artifact types of STARS's custom components."""
from tfx.types import (
    artifact,
    standard_artifacts,  # noqa: F401  (re-exported for components)
)

# Custom property of a served model: the Trainer model directory whose weights it holds
# (set by the IndexBuilder and the CatalogRefresher; a release names it, a refresh
# starts from it).
TRAINED_MODEL = "trained_model"


class DataRejects(artifact.Artifact):
    """Rows set aside by an ExampleGen (e.g. unknown item ids), one CSV per table.

    Custom properties: ``rejected`` (total) and ``<table>_rejected``.
    """
    # "<module>.<Class>": Kubeflow Pipelines v2 / Vertex need custom type names of this
    # form and import the class by it at run time (components/__init__.py re-exports it).
    TYPE_NAME = "components.DataRejects"


class UserEmbeddings(artifact.Artifact):
    """A user-embedding store generation written by one pushed model version, not yet
    live (a release commits it).  Custom properties: ``store``, ``generation``,
    ``model_version``, ``users``; ``written`` = 0 when nothing was pushed."""
    TYPE_NAME = "components.UserEmbeddings"


class CatalogIndex(artifact.Artifact):
    """The catalogue snapshot (``items.*`` under the URI) a release filters with, and the
    staged Elasticsearch index generation (``es_index``, empty without Elasticsearch);
    ``items``, ``fingerprint``."""
    TYPE_NAME = "components.CatalogIndex"


class Release(artifact.Artifact):
    """A published release (``stars.release``): ``release``, ``release_dir``,
    ``model_version``; ``published`` = 0 when the run had nothing to publish."""
    TYPE_NAME = "components.Release"
