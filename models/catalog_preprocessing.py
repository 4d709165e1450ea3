"""Transform ``preprocessing_fn`` for the enriched catalogue.

Runs over the WHOLE catalogue (the ItemEnricher's output), so its item
vocabulary is the item index of the model and the serving index, and
cold-start items have an index and features like any other.  Produces the item
index, subclass / category / brand / tag vocabularies, the frozen text
embedding e_i (passed through), tag ids for the multi-hot t_i (the tagger's tags,
the category-path nodes and the brand: ``item_attributes``), price
normalisation and buckets, and an in-stock flag.
"""
import tensorflow as tf
import tensorflow_transform as tft

from models import features as F
from stars.data.catalog import CATEGORY_SEPARATOR

TAXONOMY_PREFIX = "taxonomy:"
BRAND_PREFIX = "brand:"


def _as_ragged(x):
    if isinstance(x, tf.SparseTensor):
        return tf.RaggedTensor.from_sparse(x)
    if isinstance(x, tf.RaggedTensor):
        return x
    return tf.RaggedTensor.from_tensor(x)


def item_attributes(inputs):
    """t_i as a SparseTensor of names: the tagger's attribute tags, every node of the
    merchant's category path (``taxonomy:<node>``) and the brand (``brand:<name>``).

    The merchant's own taxonomy and brand are attributes of the same kind as the
    tags an LLM extracts from the text (the paper's tags are brand, category,
    material, ...), and often the more reliable ones; nodes are kept separately
    (not as path prefixes) so items share a node wherever it sits in their paths.
    """
    nodes = tf.strings.strip(tf.strings.split(
        F.first(inputs["category_path"], default=b""), CATEGORY_SEPARATOR))
    nodes = tf.ragged.boolean_mask(nodes, tf.strings.length(nodes) > 0)
    brand = tf.strings.strip(F.first(inputs["brand"], default=b""))[:, None]
    brand = tf.ragged.boolean_mask(brand, tf.strings.length(brand) > 0)
    parts = [_as_ragged(inputs["attribute_tags"]), TAXONOMY_PREFIX + nodes,
             BRAND_PREFIX + brand]
    return tf.concat([p.with_flat_values(tf.cast(p.flat_values, tf.string)) if
                      p.flat_values.dtype != tf.string else p for p in parts],
                     axis=1).to_sparse()


def preprocessing_fn(inputs):
    item_id = F.first(inputs["item_id"], default=b"")
    outputs = {
        "item_id": item_id,
        "item_index": tft.compute_and_apply_vocabulary(item_id, vocab_filename=F.ITEM_VOCAB),
        "subclass_index": tft.compute_and_apply_vocabulary(
            F.first(inputs["subclass"], default=b""), vocab_filename=F.SUBCLASS_VOCAB),
        "category_index": tft.compute_and_apply_vocabulary(
            F.first(inputs["category"], default=b""), vocab_filename=F.CATEGORY_VOCAB),
        "brand_index": tft.compute_and_apply_vocabulary(
            F.first(inputs["brand"], default=b""), top_k=F.BRAND_TOP_K, num_oov_buckets=1,
            vocab_filename=F.BRAND_VOCAB),
        "text_embedding": inputs["text_embedding"],
    }
    tags = item_attributes(inputs)
    tag_vocab = tft.vocabulary(F.values(tags), vocab_filename=F.TAG_VOCAB)
    outputs["tag_ids"] = F.map_values(tags, lambda v: tft.apply_vocabulary(v, tag_vocab))

    price, price_missing = F.dense_with_missing(inputs["price"])
    log_price = tf.math.log1p(tf.maximum(price, 0.0))
    present_mean = tft.mean(tf.boolean_mask(log_price, tf.logical_not(price_missing)))
    log_price = tf.where(price_missing, tf.fill(tf.shape(log_price), present_mean), log_price)
    outputs["price_z"] = tft.scale_to_z_score(log_price)
    outputs["price_bucket"] = tft.bucketize(log_price, F.NUMERIC_BUCKETS)

    stock, stock_missing = F.dense_with_missing(
        F.map_values(inputs["stock"], lambda v: tf.cast(v, tf.float32)))
    outputs["in_stock"] = tf.cast(tf.logical_or(stock_missing, stock > 0), tf.int64)
    return outputs
