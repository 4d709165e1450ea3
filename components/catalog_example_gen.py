"""CatalogExampleGen: the item catalogue (contract ``items`` table) -> Examples.

One split, ``catalog``: the catalogue is not training data, and every item --
interacted with or not -- must reach the ItemEnricher and the index.

``data_fingerprint`` (``stars.data.fingerprint`` over :data:`READS`) is in the exec
properties only so that TFX's cache key changes when the catalogue file does; it is
checked again after reading and recorded on the artifact.
"""
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from components.examples_artifact import mark_examples
from stars.data import catalog, contract, fingerprint, tf_example

CATALOG_SPLIT = "catalog"
READS = (contract.ITEMS,)  # the tables this component reads from data_dir


def write_catalog_examples(data_dir: str, examples_uri: str) -> int:
    """Validates the catalogue and writes it as tf.Examples; returns the item count."""
    return tf_example.write_split(
        examples_uri, CATALOG_SPLIT,
        (tf_example.to_example(f) for f in catalog.read_catalog(data_dir)))


@tfx.dsl.components.component
def CatalogExampleGen(
    examples: tfx.dsl.components.OutputArtifact[standard_artifacts.Examples],
    data_dir: tfx.dsl.components.Parameter[str],
    data_fingerprint: tfx.dsl.components.Parameter[str] = "",
):
    """Reads ``<data_dir>/items.{csv,parquet}`` into the ``catalog`` split."""
    count = write_catalog_examples(data_dir, examples.uri)
    if data_fingerprint:
        fingerprint.check_unchanged(data_dir, READS, data_fingerprint)
        examples.set_string_custom_property("data_fingerprint", data_fingerprint)
    mark_examples(examples, [CATALOG_SPLIT])
    examples.set_int_custom_property("num_items", count)
