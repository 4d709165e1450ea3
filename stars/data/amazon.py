"""Import the public Amazon review benchmark (SeqRecBenchmark layout) into the contract.

Source files (see ``shared/data/README.md``):

* ``interactions.csv``: ``user_id, reviewerID, s3rec_user_id, item_id, asin,
  s3rec_item_id, timestamp, pos`` -- one review per row, treated as a purchase;
  ``pos`` orders a user's reviews (timestamps are day-granular, ties common).
* ``items.csv``: ``item_id, asin, s3rec_item_id, title, s3rec_attr_ids`` -- the
  title is the only text; the attribute ids are anonymous brand/sub-category ids.

Mapping choices (also in BUILD_NOTES.md): an item with an empty title keeps its
reviews and gets the title ``untitled item <asin>`` (its ``item_id`` without an asin):
the contract needs a title, and dropping the item would cut its reviews out of every
user's sequence; its learned residual carries its identity.  The reviews' ``pos`` becomes
``sequence_number`` so that ties keep the benchmark's order; each user is one
session; the attribute ids become the category path, broadest first (the most
frequent attribute is the ``category``), and the least frequent one -- the most
specific -- is the ``subclass`` used for hard negatives.  Items that nobody
reviewed are kept (they are the catalogue); reviews of items missing from
``items.csv`` are written to ``rejects/interactions.csv``.  Without ``pos`` the file's
row order breaks the same-day ties; without ``s3rec_attr_ids`` items have no category path
(their category is ``unknown``) and no subclass.
"""
from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import pandas as pd

from stars.data import contract

REQUIRED_INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp")
REQUIRED_ITEM_COLUMNS = ("item_id", "title")
UNTITLED = "untitled item"


def _read_source(path: Path, required, may_be_empty=()) -> pd.DataFrame:
    if not path.is_file():
        raise contract.ContractError(str(path), "source file is missing")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in required:
        if column not in frame.columns:
            raise contract.ContractError(str(path), f"required column is missing "
                                         f"(have {list(frame.columns)})", column=column)
        empty = (frame[column].str.strip() == "").to_numpy()
        if empty.any() and column not in may_be_empty:
            raise contract.ContractError(str(path), "must not be empty",
                                         int(empty.nonzero()[0][0]) + 1, column)
    return frame


def _attributes(cell: str) -> list:
    return [a for a in cell.replace(",", " ").replace("|", " ").split() if a]


def _review_order(reviews: pd.DataFrame, path: Path):
    """``pos`` (the benchmark's order within a user's sequence) when the source has it, else
    the file's row order; a ``pos`` that is not an integer would misplace its review among
    the same day's, so it is an error naming the row."""
    if "pos" not in reviews:
        return range(len(reviews))
    order = pd.to_numeric(reviews["pos"], errors="coerce")
    bad = (order.isna() | (order != order.round())).to_numpy()
    if bad.any():
        row = int(bad.nonzero()[0][0])
        raise contract.ContractError(str(path),
                                     f"must be an integer, got {reviews['pos'].iloc[row]!r}",
                                     row + 1, "pos")
    return order.astype("int64")


def import_amazon(source_dir: str | os.PathLike, out_dir: str | os.PathLike) -> dict:
    """Writes ``items.csv`` and ``interactions.csv`` in the contract; returns counts."""
    source, out = Path(source_dir), Path(out_dir)
    items = _read_source(source / "items.csv", REQUIRED_ITEM_COLUMNS, may_be_empty=("title",))
    reviews = _read_source(source / "interactions.csv", REQUIRED_INTERACTION_COLUMNS)
    order = _review_order(reviews, source / "interactions.csv")  # checked before any write
    out.mkdir(parents=True, exist_ok=True)

    attrs = items["s3rec_attr_ids"].map(_attributes) if "s3rec_attr_ids" in items else \
        pd.Series([[]] * len(items))
    frequency = Counter(a for row in attrs for a in row)
    by_breadth = attrs.map(lambda row: sorted(set(row), key=lambda a: (-frequency[a], a)))
    titles = items["title"].str.strip()
    untitled = (titles == "").to_numpy()
    names = items["item_id"].str.strip()
    if "asin" in items:
        names = items["asin"].str.strip().where(items["asin"].str.strip() != "", names)
    titles = titles.where(~untitled, UNTITLED + " " + names)
    catalogue = pd.DataFrame({
        "item_id": items["item_id"].str.strip(),
        "title": titles,
        "category_path": by_breadth.map(lambda row: " > ".join(f"attr_{a}" for a in row)),
        "subclass": by_breadth.map(lambda row: f"attr_{row[-1]}" if row else ""),
    })
    contract.check_unique(catalogue.assign(_row=range(1, len(catalogue) + 1)), "item_id",
                          source / "items.csv")
    catalogue.to_csv(out / "items.csv", index=False)

    events = pd.DataFrame({
        "user_id": reviews["user_id"].str.strip(),
        "item_id": reviews["item_id"].str.strip(),
        "timestamp": reviews["timestamp"].str.strip(),
        "event_type": "purchase",
        "session_id": reviews["user_id"].str.strip(),
        "sequence_number": order,
    })
    known = events["item_id"].isin(set(catalogue["item_id"])).to_numpy()
    if (~known).any():
        rejects_dir = out / "rejects"
        rejects_dir.mkdir(exist_ok=True)
        with open(rejects_dir / "interactions.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["source_row", "reject_reason", *events.columns])
            for row_number, row in zip((~known).nonzero()[0] + 1,
                                       events[~known].itertuples(index=False)):
                writer.writerow([row_number, "unknown item_id", *row])
    events[known].to_csv(out / "interactions.csv", index=False)
    return {"items": len(catalogue), "untitled_items": int(untitled.sum()),
            "interactions": int(known.sum()),
            "rejected_interactions": int((~known).sum()),
            "users": int(events.loc[known, "user_id"].nunique())}
