"""The item catalogue, read from the contract into per-item feature dicts.

Every catalogue item gets a record, whether or not anyone interacted with it:
cold-start items must be retrievable from their text and tags.
"""
from __future__ import annotations

import math
import os
from typing import Iterator

from stars.data import contract

UNKNOWN_CATEGORY = "unknown"
CATEGORY_SEPARATOR = ">"


def category_levels(category_path: str) -> list:
    return [p.strip() for p in category_path.split(CATEGORY_SEPARATOR) if p.strip()]


def item_features(row) -> dict:
    """One catalogue row -> the catalogue Example's features.

    ``category`` is the top level of the path; ``subclass`` falls back to the
    full path (the finest class given) so hard negatives always have a class.
    """
    levels = category_levels(row["category_path"])
    category = levels[0] if levels else UNKNOWN_CATEGORY
    subclass = row["subclass"] or (" > ".join(levels) if levels else UNKNOWN_CATEGORY)
    features = {
        "item_id": [row["item_id"]],
        "title": [row["title"]],
        "description": [row["description"]],
        "brand": [row["brand"]],
        "category_path": [row["category_path"]],
        "category": [category],
        "subclass": [subclass],
        "price": [] if math.isnan(row["price"]) else [row["price"]],
        "stock": [] if math.isnan(row["stock"]) else [int(row["stock"])],
        "regions": list(row["regions"]),
        "tags": list(row["tags"]),
    }
    if row["embedding"]:
        features["embedding"] = list(row["embedding"])
    return features


def read_catalog(data_dir: str | os.PathLike) -> Iterator[dict]:
    """Validated catalogue items as feature dicts; duplicate ids are an error."""
    path = contract.find_table_file(data_dir, contract.ITEMS)
    assert path is not None  # a required table: find_table_file raised if it is missing
    seen: set = set()
    dims: set = set()
    for chunk in contract.read_table(path, contract.ITEMS):
        for row in chunk.to_dict("records"):
            if row["item_id"] in seen:
                raise contract.ContractError(str(path), f"duplicate id {row['item_id']!r}",
                                             int(row["_row"]), "item_id")
            seen.add(row["item_id"])
            if row["embedding"]:
                dims.add(len(row["embedding"]))
                if len(dims) > 1:
                    raise contract.ContractError(
                        str(path), f"embedding has {len(row['embedding'])} values, other "
                        f"rows have {min(dims - {len(row['embedding'])})}", int(row["_row"]),
                        "embedding")
            yield item_features(row)
    if not seen:
        raise contract.ContractError(str(path), "the catalogue has no items")
