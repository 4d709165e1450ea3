"""End to end on object storage: the whole pipeline with its data directory and its
pipeline root on ``gs://``, served by a Cloud Storage emulator on loopback.

Every artefact (data half, Trainer, IndexBuilder, Evaluator, Pusher, the release's
components, then a catalogue refresh's) is read and written through ``gs://``:
TensorFlow and TFX through the modular GCS filesystem, Beam through ``gcsio``. Only the
runner's local state (MLMD, the release directory, the embedded user store) is on the
local disk, as it must be.

The run happens in a child process (``python -m tests.test_pipeline_gcs_e2e``): the
GCS filesystem is chosen when TensorFlow is imported, and pytest imported it already.
The modular plugin (test only: production uses TensorFlow's built-in filesystem) now and
then dies of a segfault in its native code on a busy machine (one CI run of many, after
the Trainer); a child killed by a signal is run once more, the data half from the
pipeline's cache, with its Python stacks (faulthandler) in a warning. Any other failure
fails.
"""
import json
import os
import subprocess
import sys
import warnings

import pytest

from tests import gcs_emulator

pytestmark = pytest.mark.e2e
ROOT = f"gs://{gcs_emulator.BUCKET}/root"
DATA = f"gs://{gcs_emulator.BUCKET}/data"
TOP_K = 10


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("gcs")
    port = gcs_emulator.free_port()
    emulator = gcs_emulator.start(port, str(work / "emulator.log"))
    try:
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, **gcs_emulator.environment(port, str(work)),
                   PYTHONPATH=os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])))
        for attempt in range(2):
            child = subprocess.run([sys.executable, "-X", "faulthandler", "-m",
                                    "tests.test_pipeline_gcs_e2e", str(work)],
                                   env=env, cwd=str(work.parent.parent), capture_output=True,
                                   text=True, timeout=1200)
            if child.returncode >= 0:
                break
            # Killed by a signal: the test-only modular GCS plugin crashes in native code
            # now and then (module doc); a second run reuses the cached data half.
            warnings.warn(f"the GCS child died (signal {-child.returncode}), attempt "
                          f"{attempt + 1}: {child.stderr[-4000:]}", stacklevel=1)
    finally:
        emulator.terminate()
        emulator.wait(10)
    # Runs from a scratch directory: a local "gs:" folder would show a path taken as local.
    assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-6000:]
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert "not_blessed" not in report, report
    return report, work


def test_every_artefact_is_on_object_storage(run):
    report, _ = run
    for component in ("CatalogExampleGen", "ItemEnricher", "InteractionExampleGen",
                      "Transform", "StarsTrainer", "IndexBuilder", "StarsEvaluator", "Pusher",
                      "UserEmbeddingGen", "CatalogIndexer", "ReleasePublisher"):
        assert component in report["components_on_gcs"], component
    assert report["enrichment_cache"], "the enrichment cache is on the pipeline root"
    assert report["rejects_report"]["examples"]["train"] > 0


def test_the_model_is_pushed_to_object_storage_and_answers(run):
    report, _ = run
    assert report["pushed"].startswith(f"{ROOT}/serving/stars/"), report["pushed"]
    assert len(set(report["answer"])) == TOP_K
    assert report["warmup_requests"] > 0  # the version's assets, read from gs://


def test_the_release_is_local_and_names_the_pushed_version(run):
    report, work = run
    manifest = report["release"]
    assert manifest["model"]["base_path"] == f"{ROOT}/serving/stars"
    assert manifest["model"]["version"] == report["pushed"].rsplit("/", 1)[1]
    assert os.path.isfile(os.path.join(work, "releases", manifest["release"], "catalog",
                                       "items.csv"))


def test_a_catalogue_refresh_publishes_from_object_storage(run):
    report, _ = run
    first, refreshed = report["release"], report["refreshed"]
    assert refreshed["source"] == "catalog-refresh"
    assert refreshed["previous"] == first["release"]
    assert refreshed["catalogue"]["items"] == first["catalogue"]["items"] + 1
    assert refreshed["model"]["base_path"] == f"{ROOT}/serving/stars"
    assert int(refreshed["model"]["version"]) > int(first["model"]["version"])
    assert report["refreshed_pushed"].endswith("/" + refreshed["model"]["version"])


def test_nothing_took_a_url_for_a_local_path(run):
    _, work = run
    for directory in (work, work.parent.parent):
        assert not os.path.exists(os.path.join(directory, "gs:")), directory


def _latest(output: str) -> str:
    """The newest artefact of a component output: TFX names them by execution id. (The
    GCS plugin's glob does not match directories, hence the listing.)"""
    from stars import storage
    return f"{output}/{max(storage.listdir(output), key=int)}"


def _run_on_gcs(work: str) -> dict:
    """In the child: synthetic data uploaded to gs://, the pipeline run, its results read
    back from gs://."""
    from pipeline.configs import PipelineConfig
    from pipeline.runners import local
    from serving.batch.job import resolve_model_dir
    from stars import release, storage
    from stars.data import synth
    from stars.saved_model import load_serving_model, replay_warmup

    gcs_emulator.patch_directory_rename()
    synth.generate(os.path.join(work, "data"), "tiny", seed=3)
    for name in os.listdir(os.path.join(work, "data")):
        storage.copy(os.path.join(work, "data", name), f"{DATA}/{name}")
    config = PipelineConfig(
        data_dir=DATA, pipeline_root=ROOT, metadata_path=os.path.join(work, "mlmd.sqlite"),
        release_dir=os.path.join(work, "releases"),
        user_store=f"embedded:{os.path.join(work, 'user_store')}",
        encoder="hashing:32", model_preset="tiny", top_k=TOP_K,
        model_overrides=json.dumps({"epochs": 1}), min_recall_vs_popularity=0.0,
        max_regression=1.0, min_index_recall=0.0)  # the gates are not under test here
    local.run(config, out=sys.stderr)
    blessing = _latest(f"{ROOT}/StarsEvaluator/blessing")
    if not storage.exists(f"{blessing}/BLESSED"):
        return {"not_blessed": storage.read_text(f"{blessing}/NOT_BLESSED")}
    import tensorflow as tf
    pushed = resolve_model_dir(config.serving_base + "/stars")
    model = load_serving_model(pushed)
    answer = model.signatures["serving_default"](
        history_item_ids=tf.constant([["p000001", "p000002"]]),
        history_event_types=tf.constant([["view", "purchase"]]),
        history_timestamps=tf.constant([[1700000000, 1700000300]], tf.int64),
        request_timestamp=tf.constant([1700000600], tf.int64))["ni_ids"].numpy()[0]
    report = {
        "components_on_gcs": storage.listdir(ROOT),
        "enrichment_cache": storage.listdir(config.cache_dir),
        "rejects_report": storage.read_json(
            f"{_latest(f'{ROOT}/InteractionExampleGen/rejects')}/report.json"),
        "pushed": pushed,
        "answer": [i.decode() for i in answer],
        "warmup_requests": replay_warmup(model, pushed),
        "release": release.current(config.releases).manifest,
    }
    # The catalogue refresh, on gs:// too: one new product in the catalogue file.
    items = os.path.join(work, "data", "items.csv")
    with open(items) as f:
        rows = f.read().splitlines()
    with open(items, "a") as f:
        f.write("p999999" + rows[1][rows[1].index(","):] + "\n")
    storage.copy(items, f"{DATA}/items.csv")
    local.run_refresh(config, out=sys.stderr)
    report["refreshed"] = release.current(config.releases).manifest
    report["refreshed_pushed"] = resolve_model_dir(config.serving_base + "/stars")
    return report


if __name__ == "__main__":
    from stars.environment import configure
    configure()  # an entry point: Keras 2 before anything imports TensorFlow's Keras
    print(json.dumps(_run_on_gcs(sys.argv[1])), flush=True)
    os._exit(0)  # the modular GCS plugin segfaults in its teardown at interpreter exit
