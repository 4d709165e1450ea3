"""The item attributes t_i: tagger tags + category-path nodes + brand."""
import tensorflow as tf

from models.catalog_preprocessing import item_attributes


def _sparse(rows):
    return tf.ragged.constant(rows, dtype=tf.string).to_sparse()


def _rows(sparse):
    dense = tf.sparse.to_dense(sparse, default_value=b"").numpy()
    return [sorted(v for v in row if v) for row in dense]


def test_item_attributes_merge_tags_taxonomy_nodes_and_brand():
    inputs = {
        "attribute_tags": _sparse([["vegan"], [], ["organic", "gift"]]),
        "category_path": _sparse([["Beauty > Skin Care > Face"], [""], ["attr_4 > attr_9"]]),
        "brand": _sparse([["Acme"], [""], []]),
    }
    assert _rows(item_attributes(inputs)) == [
        [b"brand:Acme", b"taxonomy:Beauty", b"taxonomy:Face", b"taxonomy:Skin Care", b"vegan"],
        [],
        [b"gift", b"organic", b"taxonomy:attr_4", b"taxonomy:attr_9"],
    ]


def test_item_attributes_accept_dense_features():
    inputs = {
        "attribute_tags": tf.constant([[b"vegan"], [b"gift"]]),
        "category_path": tf.constant([[b"A>B"], [b" > C >"]]),
        "brand": tf.constant([[b" "], [b"Z"]]),
    }
    assert _rows(item_attributes(inputs)) == [
        [b"taxonomy:A", b"taxonomy:B", b"vegan"], [b"brand:Z", b"gift", b"taxonomy:C"]]
