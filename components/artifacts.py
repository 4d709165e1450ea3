"""Artifact types of STARS's custom components."""
from tfx.types import (
    artifact,
    standard_artifacts,  # noqa: F401  (re-exported for components)
)


class DataRejects(artifact.Artifact):
    """Rows set aside by an ExampleGen (e.g. unknown item ids), one CSV per table.

    Custom properties: ``rejected`` (total) and ``<table>_rejected``.
    """
    # "<module>.<Class>": Kubeflow Pipelines v2 / Vertex need custom type names of this
    # form and import the class by it at run time (components/__init__.py re-exports it).
    TYPE_NAME = "components.DataRejects"
