"""First pass over the event tables: validate, set rejects aside, stage for Beam.

The pass streams each table chunk by chunk (bounded memory), raises
:class:`~stars.data.contract.ContractError` on malformed input, writes rows that
reference items missing from the catalogue to ``<rejects_dir>/<table>.csv``
(never silently dropped), and stages the accepted rows as Parquet shards that
the Beam job (grouping by user, joining pages and user features) reads.
"""
from __future__ import annotations

import dataclasses
import io
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stars import storage
from stars.data import contract


@dataclasses.dataclass
class StagingReport:
    interactions_read: int = 0
    interactions_accepted: int = 0
    impressions_read: int = 0
    impressions_accepted: int = 0
    users_read: int = 0
    rejects: dict = dataclasses.field(default_factory=dict)  # table -> {reason: count}
    user_feature_kinds: dict = dataclasses.field(default_factory=dict)
    timestamps: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def rejected(self) -> int:
        return sum(sum(r.values()) for r in self.rejects.values())


def _write_shard(frame, columns, directory: str, index: int) -> None:
    """One Parquet shard of a staged table, through ``storage`` (the staging directory
    is under the pipeline root, where the Beam workers read it)."""
    table = pa.Table.from_pandas(frame[columns].reset_index(drop=True), preserve_index=False)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    storage.makedirs(directory)
    storage.write_bytes(storage.join(directory, f"part-{index:05d}.parquet"), buffer.getvalue())


def _stage_interactions(path, known_items, staging: str, rejects_dir: str,
                        report: StagingReport) -> None:
    table = contract.INTERACTIONS
    columns = [c.name for c in table.columns]
    timestamps = []
    with contract.RejectWriter(storage.join(rejects_dir, "interactions.csv"), columns) as rejects:
        for index, chunk in enumerate(contract.read_table(path, table)):
            report.interactions_read += len(chunk)
            known = chunk["item_id"].isin(known_items).to_numpy()
            for row in chunk[~known].to_dict("records"):
                rejects.add(row["_row"], "unknown item_id", [row[c] for c in columns])
            accepted = chunk[known].copy()
            # Ties in time keep file order unless the file says otherwise.
            order = accepted["sequence_number"].to_numpy()
            accepted["sequence_number"] = np.where(np.isnan(order), accepted["_row"],
                                                   order).astype(np.int64)
            report.interactions_accepted += len(accepted)
            timestamps.append(accepted["timestamp"].to_numpy(np.int64))
            if len(accepted):
                _write_shard(accepted, columns, storage.join(staging, "interactions"), index)
        if rejects.count:
            report.rejects["interactions"] = dict(rejects.reasons)
    report.timestamps = np.concatenate(timestamps) if timestamps else np.zeros(0, np.int64)


def _stage_impressions(path, known_items, staging: str, rejects_dir: str,
                       report: StagingReport) -> None:
    table = contract.IMPRESSIONS
    columns = [c.name for c in table.columns]
    with contract.RejectWriter(storage.join(rejects_dir, "impressions.csv"), columns) as rejects:
        for index, chunk in enumerate(contract.read_table(path, table)):
            report.impressions_read += len(chunk)
            known = chunk["item_ids"].map(lambda ids: all(i in known_items for i in ids))
            for row in chunk[~known].to_dict("records"):
                unknown = [i for i in row["item_ids"] if i not in known_items]
                rejects.add(row["_row"], f"unknown item_id {unknown[0]}",
                            [row[c] for c in columns])
            accepted = chunk[known.to_numpy()]
            report.impressions_accepted += len(accepted)
            if len(accepted):
                _write_shard(accepted, columns, storage.join(staging, "impressions"), index)
        if rejects.count:
            report.rejects["impressions"] = dict(rejects.reasons)


def _stage_users(path, staging: str, report: StagingReport) -> None:
    users = contract.read_whole_table(path, contract.USERS)
    contract.check_unique(users, "user_id", path)
    report.users_read = len(users)
    report.user_feature_kinds = contract.user_feature_kinds(users)
    frame = users[["user_id"]].copy()
    for name, kind in report.user_feature_kinds.items():
        text = users[name].astype(str).str.strip()
        if kind == "numeric":
            frame[name] = [float(v) if v not in ("", "nan", "None") else float("nan") for v in text]
        else:
            frame[name] = text.where(~text.isin(["nan", "None"]), "")
    _write_shard(frame, list(frame.columns), storage.join(staging, "users"), 0)


def stage(data_dir: str | os.PathLike, known_items: set, staging_dir: str | os.PathLike,
          rejects_dir: str | os.PathLike) -> StagingReport:
    """Validates interactions, impressions and users; stages accepted rows."""
    staging, rejects_dir = os.fspath(staging_dir), os.fspath(rejects_dir)
    report = StagingReport()
    _stage_interactions(contract.find_table_file(data_dir, contract.INTERACTIONS),
                        known_items, staging, rejects_dir, report)
    if report.interactions_accepted == 0:
        raise contract.ContractError(str(data_dir), "no interaction references a catalogue "
                                     f"item (see rejects in {rejects_dir})")
    impressions = contract.find_table_file(data_dir, contract.IMPRESSIONS)
    if impressions is not None:
        _stage_impressions(impressions, known_items, staging, rejects_dir, report)
    users = contract.find_table_file(data_dir, contract.USERS)
    if users is not None:
        _stage_users(users, staging, report)
    return report
