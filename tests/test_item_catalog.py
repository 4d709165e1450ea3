"""Reading the transformed catalogue artefact (models/item_catalog.py) through TensorFlow's
file API, so a pipeline root on object storage reads the same files."""
import pytest
import tensorflow as tf

from models.item_catalog import _transformed_catalog_records


def test_transformed_catalogue_records_are_found_through_gfile(tmp_path):
    split = tmp_path / "Split-catalog"
    split.mkdir()
    example = tf.train.Example(features=tf.train.Features(feature={
        "item_index": tf.train.Feature(int64_list=tf.train.Int64List(value=[3]))}))
    with tf.io.TFRecordWriter(str(split / "data-00000-of-00001.gz"),
                              options="GZIP") as writer:
        writer.write(example.SerializeToString())
    [feature] = list(_transformed_catalog_records(str(tmp_path)))
    assert feature["item_index"].int64_list.value[0] == 3


def test_a_missing_transformed_catalogue_is_an_error_not_an_empty_catalogue(tmp_path):
    with pytest.raises(FileNotFoundError, match="Split-catalog"):
        list(_transformed_catalog_records(str(tmp_path)))
