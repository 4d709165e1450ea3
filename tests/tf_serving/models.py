"""The SavedModels that TF Serving's tests serve, generated here (never copied).

TF Serving checks in binary SavedModels made by its generator
``tensorflow_serving/servables/tensorflow/testdata/saved_model_half_plus_two.py``.  The
functions below build models with the same graphs and signatures from that generator's
description, in TF Serving's layout ``<base>/<version>/`` (version ``00000123`` as the tests
expect).  What TF Serving's generator creates, and so what we build:

* **TF1 graph** (``saved_model_half_plus_two_cpu``, written with ``SavedModelBuilder``):
  variables ``a = 0.5``, ``b = 2``, ``c = 3`` (and ``a2 = 0.5``, ``c2 = 3`` for the x2 path);
  a ``tf_example`` placeholder of serialized ``tf.Example``s parsed with the features
  ``x`` (float, [1]) and ``x2`` (float, [1], default 0); tensors ``x``, ``y = a*x + b``,
  ``y2 = a*x + c``, ``x2``, ``y3 = a2*x2 + c2``; an asset ``foo.txt`` whose name a main op
  assigns to a variable.  Signatures (alias: tensor)::

      serving_default    predict   {x: x:0}                -> {y: y:0}
      regress_x_to_y     regress   {inputs: tf_example:0}  -> {outputs: y:0}
      regress_x_to_y2    regress   {inputs: tf_example:0}  -> {outputs: y2:0}
      regress_x2_to_y3   regress   {inputs: x2:0}          -> {outputs: y3:0}
      classify_x_to_y    classify  {inputs: tf_example:0}  -> {scores: y:0}
      classify_x2_to_y3  classify  {inputs: x2:0}          -> {scores: y3:0}

  ``classify_x2_to_y3`` is in the model the REST handler test serves (its expected metadata,
  ``saved_model_half_plus_two_2_versions_metadata.json``, lists it) but not in
  ``saved_model_half_plus_two_cpu`` (``half_plus_two_model_metadata.json`` does not): see
  ``with_classify_x2_to_y3``.  Both metadata files give ``tf_example`` an unknown rank (the
  checked-in models predate the generator's ``shape=[None]``), so ours has none either.
* **TF2** (``saved_model_half_plus_two_tf2_cpu``, ``tf.saved_model.save`` of a
  ``tf.Module``): the same six signatures as ``tf.function``s (TF2 exports them all with the
  method name ``tensorflow/serving/predict``); ``serving_default`` takes ``x`` of shape [1].
* **half_plus_three** (``saved_model_half_plus_three``): only a binary in TF Serving; its
  tests read ``0.5 * 2 + 3 = 4`` from ``serving_default``: the TF1 graph with ``b = 3``.

Models created inside ``tensorflow_model_server_test.py``'s own test methods (the
``tf.saved_model.save`` and Keras ones) are built here the same way, and so are the small
models the REST cases need (``json_tensor``: signatures that return their inputs, one per
input map of ``json_tensor_test.cc``; ``examples_classify`` / ``examples_regress``: signatures
on serialized ``tf.Example``s whose scores encode the features they received).
"""
from __future__ import annotations

import os
import subprocess
import sys

VERSION = "00000123"
OWN_VERSION = "1"  # the models that only our REST cases use

# --------------------------------------------------------------------------- half_plus_two
A, B, C = 0.5, 2.0, 3.0


def half_plus_two_tf1(export_dir: str, b: float = B, with_classify_x2_to_y3: bool = False,
                      asset_dir: str | None = None) -> str:
    """The TF1-graph half_plus_two (``y = 0.5 x + b``) with the signatures listed above."""
    import tensorflow as tf
    v1 = tf.compat.v1
    sig = v1.saved_model.signature_def_utils
    info = v1.saved_model.utils.build_tensor_info
    asset_dir = asset_dir or os.path.join(os.path.dirname(export_dir), "original_assets")
    os.makedirs(asset_dir, exist_ok=True)
    asset_path = os.path.join(asset_dir, "foo.txt")
    with open(asset_path, "w") as f:
        f.write("asset-file-contents")

    def signature(inputs, outputs, method):
        return sig.build_signature_def({k: info(t) for k, t in inputs.items()},
                                       {k: info(t) for k, t in outputs.items()}, method)

    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        a = v1.Variable(A, name="a")
        b_var = v1.Variable(b, name="b")
        c = v1.Variable(C, name="c")
        serialized = v1.placeholder(tf.string, shape=None, name="tf_example")
        features = v1.parse_example(serialized, {
            "x": v1.FixedLenFeature([1], tf.float32),
            "x2": v1.FixedLenFeature([1], tf.float32, default_value=[0.0])})
        for name in ("x", "x2"):  # what parse_example infers from a vector of examples
            features[name].set_shape([None, 1])
        x = tf.identity(features["x"], name="x")
        y = tf.identity(a * x + b_var, name="y")
        y2 = tf.identity(a * x + c, name="y2")
        x2 = tf.identity(features["x2"], name="x2")
        a2 = v1.Variable(A, name="a2")  # the x2 path has its own variables, as TF Serving's
        c2 = v1.Variable(C, name="c2")
        y3 = tf.identity(a2 * x2 + c2, name="y3")

        asset_tensor = tf.constant(asset_path)
        v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, asset_tensor)
        filename = v1.Variable("foo.txt", name="filename_tensor", trainable=False,
                               collections=[])
        assign_filename = filename.assign("foo.txt")

        predict = v1.saved_model.signature_constants.PREDICT_METHOD_NAME
        regress = v1.saved_model.signature_constants.REGRESS_METHOD_NAME
        classify = v1.saved_model.signature_constants.CLASSIFY_METHOD_NAME
        signatures = {
            "serving_default": signature({"x": x}, {"y": y}, predict),
            "regress_x_to_y": signature({"inputs": serialized}, {"outputs": y}, regress),
            "regress_x_to_y2": signature({"inputs": serialized}, {"outputs": y2}, regress),
            "regress_x2_to_y3": signature({"inputs": x2}, {"outputs": y3}, regress),
            "classify_x_to_y": signature({"inputs": serialized}, {"scores": y}, classify),
        }
        if with_classify_x2_to_y3:
            signatures["classify_x2_to_y3"] = signature({"inputs": x2}, {"scores": y3},
                                                        classify)
        session.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(export_dir)
        builder.add_meta_graph_and_variables(
            session, [v1.saved_model.tag_constants.SERVING], signature_def_map=signatures,
            assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS),
            main_op=tf.group(assign_filename))
        builder.save()
    return export_dir


def half_plus_two_tf2(export_dir: str) -> str:
    """The native TF2 half_plus_two: a ``tf.Module`` with the six signatures."""
    import tensorflow as tf

    features = {"x": tf.io.FixedLenFeature([1], tf.float32),
                "x2": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])}
    examples = tf.TensorSpec([None], tf.string, name="inputs")
    floats = tf.TensorSpec([1], tf.float32, name="inputs")
    asset_path = os.path.join(os.path.dirname(export_dir), "original_assets_tf2", "foo.txt")
    os.makedirs(os.path.dirname(asset_path), exist_ok=True)
    with open(asset_path, "w") as f:
        f.write("asset-file-contents")

    class HalfPlusTwo(tf.Module):
        def __init__(self):
            super().__init__()
            self.a = tf.Variable(A, name="a")
            self.b = tf.Variable(B, name="b")
            self.c = tf.Variable(C, name="c")
            self.asset = tf.saved_model.Asset(asset_path)

        def half_plus(self, x, offset):
            return self.a * x + offset

        def parsed_x(self, serialized):
            return tf.io.parse_example(serialized, features)["x"]

        @tf.function(input_signature=[tf.TensorSpec([1], tf.float32)])
        def predict(self, x):
            return {"y": self.half_plus(x, self.b)}

        @tf.function(input_signature=[examples])
        def regress_x_to_y(self, inputs):
            return {"outputs": self.half_plus(self.parsed_x(inputs), self.b)}

        @tf.function(input_signature=[examples])
        def regress_x_to_y2(self, inputs):
            return {"outputs": self.half_plus(self.parsed_x(inputs), self.c)}

        @tf.function(input_signature=[floats])
        def regress_x2_to_y3(self, inputs):
            return {"outputs": self.half_plus(inputs, self.c)}

        @tf.function(input_signature=[examples])
        def classify_x_to_y(self, inputs):
            return {"scores": self.half_plus(self.parsed_x(inputs), self.b)}

        @tf.function(input_signature=[floats])
        def classify_x2_to_y3(self, inputs):
            return {"scores": self.half_plus(inputs, self.c)}

    module = HalfPlusTwo()
    tf.saved_model.save(module, export_dir, signatures={
        "serving_default": module.predict, "regress_x_to_y": module.regress_x_to_y,
        "regress_x_to_y2": module.regress_x_to_y2,
        "regress_x2_to_y3": module.regress_x2_to_y3,
        "classify_x_to_y": module.classify_x_to_y,
        "classify_x2_to_y3": module.classify_x2_to_y3})
    return export_dir


# ------------------------------------------------- models built in the integration test itself
def tf_saved_model_save(export_dir: str) -> str:
    """``test_tf_saved_model_save``: ``y = v1 * v2 * x`` (3 * 2) on an input of any shape."""
    import tensorflow as tf
    root = tf.train.Checkpoint()
    root.v1 = tf.Variable(3.0)
    root.v2 = tf.Variable(2.0)
    root.f = tf.function(lambda x: {"y": root.v1 * root.v2 * x})
    tf.saved_model.save(root, export_dir,
                        signatures=root.f.get_concrete_function(tf.TensorSpec(None, tf.float32)))
    return export_dir


def tf_saved_model_save_multiple_signatures(export_dir: str) -> str:
    """``test_tf_saved_model_save_multiple_signatures``: serving_default answers ``y = 1``,
    ``custom_signature_key`` answers ``y = 2``."""
    import tensorflow as tf
    root = tf.train.Checkpoint()
    spec = [tf.TensorSpec(None, tf.float32)]
    root.f = tf.function(lambda x: {"y": 1.0}, input_signature=spec)
    root.g = tf.function(lambda x: {"y": 2.0}, input_signature=spec)
    tf.saved_model.save(root, export_dir, signatures={"serving_default": root.f,
                                                      "custom_signature_key": root.g})
    return export_dir


def keras_sequential(export_dir: str) -> str:
    """``test_sequential_keras_saved_model_save``: Input ``x`` (float, (1,)) -> Lambda
    identity named ``y``."""
    import tensorflow as tf
    model = tf.keras.models.Sequential()
    model.add(tf.keras.layers.Input(dtype="float32", shape=(1,), name="x"))
    model.add(tf.keras.layers.Lambda(lambda x: x, name="y"))
    tf.saved_model.save(model, export_dir)
    return export_dir


def _keras_sequential_distributed_here(export_dir: str) -> str:
    """Runs in a fresh interpreter: two virtual CPUs must be set before TF starts."""
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    strategy = tf.distribute.MirroredStrategy(devices=("/cpu:0", "/cpu:1"))
    with strategy.scope():
        model = tf.keras.models.Sequential()
        model.add(tf.keras.layers.Input(dtype="float32", shape=(1,), name="x"))
        model.add(tf.keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="zeros"))
        model.add(tf.keras.layers.Lambda(lambda x: x, name="y"))
    tf.saved_model.save(model, export_dir)
    return export_dir


def keras_sequential_distributed(export_dir: str) -> subprocess.Popen:
    """``test_distrat_sequential_keras_saved_model_save``: a Keras Sequential model (Dense
    with weights 1, bias 0, then identity ``y``) built under a two-CPU MirroredStrategy.
    Started in a child process (returned; wait for it): virtual devices cannot be set in
    a process whose TensorFlow is already initialised."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return subprocess.Popen([sys.executable, "-m", "tests.tf_serving.models",
                             "keras_sequential_distributed", export_dir], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


# --------------------------------------------------------------- json_tensor_test.cc models
# One signature per input map ("TensorInfoMap") of json_tensor_test.cc: every input of any
# shape, returned unchanged under its own name, so the JSON -> tensor -> JSON round trip is
# what the REST answer shows.
ECHO_SIGNATURES: dict[str, dict[str, str]] = {
    "serving_default": {"default": "int32"},
    "predict_images": {"default": "int32"},
    "float": {"default": "float32"},
    "double": {"default": "float64"},
    "string": {"default": "string"},
    "multi": {"int_tensor": "int32", "str_tensor": "string", "float_tensor": "float32",
              "dbl_tensor": "float64"},
    "int_tensor": {"int_tensor": "int32"},
    "columnar": {"int_tensor": "int32", "str_tensor": "string", "bin_tensor": "string"},
    "int_str": {"int_tensor": "int32", "str_tensor": "string"},
    "str_tensor": {"str_tensor": "string"},
    "str_tensor_bytes": {"str_tensor_bytes": "string"},
    "float_tensor": {"float_tensor": "float32"},
    "multi_out": {"int_tensor": "int32", "str_tensor": "string", "float_tensor": "float32",
                  "double_scalar_tensor": "float64", "str_tensor_bytes": "string"},
}


def json_tensor_models(export_dir: str) -> str:
    """The ``json_tensor`` model: ``ECHO_SIGNATURES`` plus signatures whose outputs are the
    tensors of the MakeJsonFromTensors error / zero-batch cases."""
    import tensorflow as tf
    module = tf.Module()
    signatures = {}
    for key, inputs in ECHO_SIGNATURES.items():
        names = list(inputs)
        specs = [tf.TensorSpec(None, tf.as_dtype(dtype), name=name)
                 for name, dtype in inputs.items()]
        signatures[key] = tf.function(
            lambda *args, names=names: {n: tf.identity(a) for n, a in zip(names, args)},
            input_signature=specs)
    # One int32 input ``x`` (any shape) the outputs do not depend on: the output tensors of
    # MakeJsonFromTensors' cases, which the C++ test builds directly.
    x = [tf.TensorSpec(None, tf.int32, name="x")]
    fixed = {
        # a complex64 output (FromJsonSingleTensorErrors: "tensor type: complex64")
        "complex": lambda x: {"tensor": tf.complex(tf.constant([1.0, 2.0]),
                                                   tf.constant([0.0, 0.0]))},
        # a scalar output: no batch dimension (FromJsonSingleTensorErrors)
        "scalar": lambda x: {"tensor": tf.constant(1, tf.int32)},
        # batch 2 and batch 1 (FromJsonMultipleNamedTensorsErrors)
        "inconsistent_batch": lambda x: {
            "int_tensor": tf.constant([[1, 2, 3], [4, 5, 6]], tf.int32),
            "str_tensor": tf.constant([["foo", "bar", "baz"]])},
        # FromJsonSingleZeroBatchTensor
        "zero_batch": lambda x: {"int_tensor": tf.zeros([0, 2], tf.int32)},
        # FromJsonMultipleZeroBatchTensors
        "zero_batch_multi": lambda x: {"str_tensor": tf.fill([0, 1, 2], ""),
                                       "float_tensor": tf.zeros([0, 3, 4], tf.float32)},
        # FromJsonMultipleZeroBatchTensorsErrors
        "zero_batch_mismatch": lambda x: {"int_tensor": tf.zeros([0, 2], tf.int32),
                                          "str_tensor": tf.constant([["foo", "bar"]])},
    }
    for key, outputs in fixed.items():
        signatures[key] = tf.function(outputs, input_signature=x)
    for key, function in signatures.items():
        setattr(module, f"sig_{key}", function)
    tf.saved_model.save(module, export_dir, signatures=signatures)
    return export_dir


# ------------------------------------------------ Classify / Regress request and result models
# Features of ClassifyRegressRequestTest's examples (json_tensor_test.cc), all optional.
EXAMPLE_FEATURES = {"names": "string", "ratings": "float32", "age": "int64",
                    "intboolmix": "int64", "query": "string", "location": "string"}


def example_score_formula(example: dict) -> float:
    """What the ``examples_*`` models answer for one tf.Example (given as
    ``{feature: [values]}``, context features merged in): the feature counts and sums,
    each in its own decimal place, so that the answer shows what the server parsed."""
    return float(sum(example.get("age", [])) + 10 * len(example.get("location", []))
                 + 100 * len(example.get("ratings", [])) + 1000 * len(example.get("names", []))
                 + 10000 * sum(example.get("intboolmix", [])))


def _examples_model(export_dir: str, method: str) -> str:
    """``serving_default`` and ``custom_signture`` (the test's spelling) score examples with
    ``example_score_formula``; ``echo_result`` returns the features ``value`` (regress) or
    ``label`` + ``score`` (classify) of each example: the results of
    JsonFromRegressionResult / JsonFromClassificationResult."""
    import tensorflow as tf
    spec = [tf.TensorSpec([None], tf.string, name="inputs")]
    parse = {name: tf.io.VarLenFeature(tf.as_dtype(dtype))
             for name, dtype in EXAMPLE_FEATURES.items()}

    def score(inputs):
        features = tf.io.parse_example(inputs, parse)

        def count(name):
            return _sparse_count(features[name], inputs)

        def total(name):
            return _sparse_sum(features[name], inputs)
        value = (total("age") + 10 * count("location") + 100 * count("ratings")
                 + 1000 * count("names") + 10000 * total("intboolmix"))
        return tf.reshape(value, [-1, 1])

    def echo(inputs):
        if method == "regress":
            value = tf.io.parse_example(inputs, {"value": tf.io.FixedLenFeature([1],
                                                                                tf.float32)})
            return {"outputs": value["value"]}
        parsed = tf.io.parse_example(inputs, {"label": tf.io.VarLenFeature(tf.string),
                                              "score": tf.io.VarLenFeature(tf.float32)})
        return {"classes": tf.sparse.to_dense(parsed["label"]),
                "scores": tf.sparse.to_dense(parsed["score"])}

    output = "outputs" if method == "regress" else "scores"
    module = tf.Module()
    module.score = tf.function(lambda inputs: {output: score(inputs)}, input_signature=spec)
    module.custom = tf.function(lambda inputs: {output: score(inputs)}, input_signature=spec)
    module.echo = tf.function(echo, input_signature=spec)
    tf.saved_model.save(module, export_dir, signatures={
        "serving_default": module.score, "custom_signture": module.custom,
        "echo_result": module.echo})
    return export_dir


def _sparse_count(sparse, inputs):
    """Values per example of a parsed VarLenFeature (0 where absent)."""
    import tensorflow as tf
    rows = sparse.indices[:, 0]
    return tf.math.unsorted_segment_sum(tf.ones_like(rows, tf.float32), rows, tf.size(inputs))


def _sparse_sum(sparse, inputs):
    import tensorflow as tf
    rows = sparse.indices[:, 0]
    return tf.math.unsorted_segment_sum(tf.cast(sparse.values, tf.float32), rows,
                                        tf.size(inputs))


def examples_regress(export_dir: str) -> str:
    return _examples_model(export_dir, "regress")


def examples_classify(export_dir: str) -> str:
    return _examples_model(export_dir, "classify")


# --------------------------------------------------------------------------- all of them
def build_all(root: str) -> dict[str, str]:
    """Builds every model under ``root``; returns ``{model set: base path}`` (each base path
    holds one version directory)."""
    root = os.path.abspath(root)
    bases = {
        "half_plus_two": os.path.join(root, "saved_model_half_plus_two_cpu"),
        "half_plus_two_tf2": os.path.join(root, "saved_model_half_plus_two_tf2_cpu"),
        "half_plus_three": os.path.join(root, "saved_model_half_plus_three"),
        # tensorflow/cc/saved_model/testdata/half_plus_two: the REST handler test's model
        "half_plus_two_handler": os.path.join(root, "half_plus_two"),
        "tf_saved_model_save": os.path.join(root, "tf_saved_model_save"),
        "tf_saved_model_save_multiple_signatures":
            os.path.join(root, "tf_saved_model_save_multiple_signatures"),
        "keras_sequential": os.path.join(root, "keras_sequential_saved_model_save"),
        "keras_sequential_distributed":
            os.path.join(root, "distrat_keras_sequential_saved_model_save"),
        "json_tensor": os.path.join(root, "json_tensor"),
        "examples_regress": os.path.join(root, "examples_regress"),
        "examples_classify": os.path.join(root, "examples_classify"),
    }
    distributed = keras_sequential_distributed(
        os.path.join(bases["keras_sequential_distributed"], VERSION))
    try:
        half_plus_two_tf1(os.path.join(bases["half_plus_two"], VERSION))
        half_plus_two_tf2(os.path.join(bases["half_plus_two_tf2"], VERSION))
        half_plus_two_tf1(os.path.join(bases["half_plus_three"], VERSION), b=3.0)
        half_plus_two_tf1(os.path.join(bases["half_plus_two_handler"], VERSION),
                          with_classify_x2_to_y3=True)
        tf_saved_model_save(os.path.join(bases["tf_saved_model_save"], VERSION))
        tf_saved_model_save_multiple_signatures(
            os.path.join(bases["tf_saved_model_save_multiple_signatures"], VERSION))
        keras_sequential(os.path.join(bases["keras_sequential"], VERSION))
        json_tensor_models(os.path.join(bases["json_tensor"], OWN_VERSION))
        examples_regress(os.path.join(bases["examples_regress"], OWN_VERSION))
        examples_classify(os.path.join(bases["examples_classify"], OWN_VERSION))
    finally:
        output, _ = distributed.communicate(timeout=600)
    if distributed.returncode != 0:
        raise RuntimeError(f"building the distributed Keras model failed:\n{output[-3000:]}")
    return bases


if __name__ == "__main__":
    if sys.argv[1:2] == ["keras_sequential_distributed"]:
        _keras_sequential_distributed_here(sys.argv[2])
    else:
        raise SystemExit(f"usage: python -m tests.tf_serving.models "
                         f"keras_sequential_distributed DIR (not {sys.argv[1:]})")
