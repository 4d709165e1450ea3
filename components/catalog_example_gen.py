"""CatalogExampleGen: the item catalogue (contract ``items`` table) -> Examples.

One split, ``catalog``: the catalogue is not training data, and every item --
interacted with or not -- must reach the ItemEnricher and the index.
"""
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from components.examples_artifact import mark_examples
from stars.data import catalog, tf_example

CATALOG_SPLIT = "catalog"


def write_catalog_examples(data_dir: str, examples_uri: str) -> int:
    """Validates the catalogue and writes it as tf.Examples; returns the item count."""
    return tf_example.write_split(
        examples_uri, CATALOG_SPLIT,
        (tf_example.to_example(f) for f in catalog.read_catalog(data_dir)))


@tfx.dsl.components.component
def CatalogExampleGen(
    examples: tfx.dsl.components.OutputArtifact[standard_artifacts.Examples],
    data_dir: tfx.dsl.components.Parameter[str],
):
    """Reads ``<data_dir>/items.{csv,parquet}`` into the ``catalog`` split."""
    count = write_catalog_examples(data_dir, examples.uri)
    mark_examples(examples, [CATALOG_SPLIT])
    examples.set_int_custom_property("num_items", count)
