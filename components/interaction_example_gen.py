"""InteractionExampleGen: event logs -> per-user sequence Examples with a time split.

TFX's file-based ExampleGens split by hash; a recommender must split by time
(nothing from after the cut may reach training), per user.  The catalogue comes
in as an input artifact so that events on unknown items are set aside in the
``rejects`` output instead of reaching the model.

``data_fingerprint`` (``stars.data.fingerprint`` over :data:`READS`) is in the exec
properties only so that TFX's cache key changes when an event log does; the catalogue
needs no entry, it is an input artifact and so already in the key.  It is checked
again after reading and recorded on the artifact.
"""
import apache_beam as beam
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from components.artifacts import DataRejects
from components.catalog_example_gen import CATALOG_SPLIT
from components.examples_artifact import mark_examples
from stars import storage
from stars.data import contract, fingerprint, sequence_job, sequences, staging, tf_example

READS = (contract.INTERACTIONS, contract.IMPRESSIONS, contract.USERS)  # what staging reads
STAGING_DIR = ".staging"  # under the examples artefact while the sequence job runs


def catalog_item_ids(catalog_uri: str) -> set:
    return {tf_example.from_example(e)["item_id"][0].decode()
            for e in tf_example.read_split(catalog_uri, CATALOG_SPLIT)}


def generate(data_dir: str, catalog_uri: str, examples_uri: str, rejects_uri: str,
             config: sequences.SplitConfig, beam_pipeline: beam.Pipeline) -> dict:
    """Stages and validates the logs, then runs the sequence job; returns a report.

    The staged shards go under the examples artefact (removed once the job has run), so
    they are wherever the pipeline root is: every Beam worker can read them."""
    work = storage.join(examples_uri, STAGING_DIR)
    try:
        report = staging.stage(data_dir, catalog_item_ids(catalog_uri), work, rejects_uri)
        cut = sequences.cut_time(report.timestamps, config) if config.mode == "time" else None
        with beam_pipeline as pipeline:
            sequence_job.build_sequences(pipeline, work, examples_uri, config, cut,
                                         report.user_feature_kinds)
    finally:
        storage.rmtree(work)
    counts = {split: tf_example.count_split(examples_uri, split)
              for split in config.split_names}
    empty = [split for split, n in counts.items() if n == 0]
    if empty:
        raise ValueError(f"split(s) {empty} received no examples from {data_dir} "
                         f"(counts {counts}); with mode={config.mode!r} every split needs "
                         "users with enough events -- check the data or the split config")
    return {"examples": counts, "cut_timestamp": cut,
            "interactions_read": report.interactions_read,
            "interactions_accepted": report.interactions_accepted,
            "impressions_read": report.impressions_read,
            "impressions_accepted": report.impressions_accepted,
            "users_read": report.users_read, "rejects": report.rejects,
            "user_feature_kinds": report.user_feature_kinds}


@tfx.dsl.components.component(use_beam=True)
def InteractionExampleGen(
    catalog: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    examples: tfx.dsl.components.OutputArtifact[standard_artifacts.Examples],
    rejects: tfx.dsl.components.OutputArtifact[DataRejects],
    data_dir: tfx.dsl.components.Parameter[str],
    split_mode: tfx.dsl.components.Parameter[str] = "time",
    eval_fraction: tfx.dsl.components.Parameter[float] = 0.1,
    max_history: tfx.dsl.components.Parameter[int] = 200,
    data_fingerprint: tfx.dsl.components.Parameter[str] = "",
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
):
    """Reads ``interactions`` (+ ``impressions``, ``users``) from ``data_dir``."""
    config = sequences.SplitConfig(mode=split_mode, eval_fraction=eval_fraction,
                                   max_history=max_history)
    report = generate(data_dir, catalog.uri, examples.uri, rejects.uri, config,
                      beam_pipeline)
    if data_fingerprint:
        fingerprint.check_unchanged(data_dir, READS, data_fingerprint)
        examples.set_string_custom_property("data_fingerprint", data_fingerprint)
    mark_examples(examples, config.split_names)
    for split, count in report["examples"].items():
        examples.set_int_custom_property(f"{split}_examples", count)
    if report["cut_timestamp"] is not None:
        examples.set_int_custom_property("cut_timestamp", report["cut_timestamp"])
    total = sum(sum(r.values()) for r in report["rejects"].values())
    rejects.set_int_custom_property("rejected", total)
    for table, reasons in report["rejects"].items():
        rejects.set_int_custom_property(f"{table}_rejected", sum(reasons.values()))
    storage.write_json(storage.join(rejects.uri, "report.json"), report)
