"""The data contract: the tables STARS reads, their columns, and how they are checked.

A data directory holds one file per table, CSV or Parquet, named after the table
(``items.csv``, ``interactions.parquet``, ``impressions.csv.gz``, ...):

* ``interactions`` (required): one row per user event.
* ``items`` (required): the catalogue.
* ``impressions`` (optional): page id -> the items shown on that page.
* ``users`` (optional): static user features; every column other than
  ``user_id`` is a feature, numeric or categorical by its values.

List-valued cells are ``|``-separated in CSV (``us|ca``) and list columns in
Parquet.  Timestamps are unix seconds or ISO-8601 strings (UTC when no offset).

Malformed input raises :class:`ContractError`, which names the file, the data row
(1-based, header excluded) and the column.  Rows that are well formed but point
at items missing from the catalogue are not errors: the reader's caller counts
them and keeps them aside with :class:`RejectWriter`.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime
import gzip
import io
import os
from typing import IO, TYPE_CHECKING, Iterator, Optional, Sequence

import numpy as np
import pandas as pd

from stars import storage

if TYPE_CHECKING:
    import _csv

LIST_SEPARATOR = "|"
EVENT_TYPES = ("view", "add_to_cart", "purchase")
_EVENT_ALIASES = {
    "view": "view", "click": "view", "detail_view": "view",
    "add_to_cart": "add_to_cart", "add-to-cart": "add_to_cart",
    "addtocart": "add_to_cart", "cart": "add_to_cart", "atc": "add_to_cart",
    "purchase": "purchase", "buy": "purchase", "order": "purchase",
    "transaction": "purchase", "review": "purchase",
}
SUFFIXES = (".csv", ".csv.gz", ".parquet")


class ContractError(ValueError):
    """Input that breaks the data contract; says where, so it can be fixed."""

    def __init__(self, file: str, message: str, row: Optional[int] = None,
                 column: Optional[str] = None):
        self.file, self.row, self.column = str(file), row, column
        where = [f"file {self.file}"]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(f"{', '.join(where)}: {message}")


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    kind: str  # string | int | float | timestamp | event | string_list | float_list
    required: bool = False
    doc: str = ""


@dataclasses.dataclass(frozen=True)
class Table:
    name: str
    columns: tuple
    required: bool
    doc: str
    open_columns: bool = False  # users: any further column is a feature

    @property
    def required_columns(self) -> list:
        return [c.name for c in self.columns if c.required]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


INTERACTIONS = Table("interactions", (
    Column("user_id", "string", True, "who"),
    Column("item_id", "string", True, "which catalogue item"),
    Column("timestamp", "timestamp", True, "unix seconds or ISO-8601"),
    Column("event_type", "event", True, "view | add_to_cart | purchase"),
    Column("session_id", "string", False, "browsing session"),
    Column("page_id", "string", False, "impression/page the event came from"),
    Column("region", "string", False, "where the user was"),
    Column("sequence_number", "int", False,
           "order of events with equal timestamps (defaults to file order)"),
), True, "one row per user event")

ITEMS = Table("items", (
    Column("item_id", "string", True, "unique id"),
    Column("title", "string", True, "product title"),
    Column("description", "string", False, "longer product text"),
    Column("brand", "string", False, ""),
    Column("category_path", "string", False, "'Top > Sub > ...'"),
    Column("subclass", "string", False, "fine-grained class (hard negatives)"),
    Column("price", "float", False, ""),
    Column("stock", "int", False, "units in stock; empty = unknown"),
    Column("regions", "string_list", False, "where sold; empty = everywhere"),
    Column("tags", "string_list", False, "attribute tags, if already known"),
    Column("embedding", "float_list", False, "precomputed text embedding"),
), True, "the catalogue")

IMPRESSIONS = Table("impressions", (
    Column("page_id", "string", True, "page / impression id"),
    Column("item_ids", "string_list", True, "items shown, in display order"),
), False, "what each page showed")

USERS = Table("users", (
    Column("user_id", "string", True, "who"),
), False, "static user features (every other column)", open_columns=True)

TABLES = {t.name: t for t in (INTERACTIONS, ITEMS, IMPRESSIONS, USERS)}


def find_table_file(data_dir: str | os.PathLike, table: Table) -> Optional[str]:
    """The file holding ``table`` in ``data_dir`` (a local path or a URL such as
    ``gs://bucket/data``); None if an optional table is absent."""
    data_dir = os.fspath(data_dir)
    if not storage.isdir(data_dir):
        raise ContractError(data_dir, "data directory does not exist")
    names = set(storage.listdir(data_dir))
    found = [storage.join(data_dir, table.name + s) for s in SUFFIXES
             if table.name + s in names]
    if len(found) > 1:
        raise ContractError(data_dir, f"more than one file for table "
                            f"'{table.name}': {[storage.basename(p) for p in found]}")
    if not found and table.required:
        raise ContractError(data_dir, f"required table '{table.name}' is "
                            f"missing (expected {table.name}.csv or "
                            f"{table.name}.parquet)")
    return found[0] if found else None


def _raw_chunks(path: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq
        with storage.binary_reader(path) as f:
            try:
                reader = pq.ParquetFile(f)
            except Exception as e:  # pyarrow raises several types for bad files
                raise ContractError(path, f"not a readable Parquet file ({e})") from e
            for batch in reader.iter_batches(batch_size=chunk_rows):
                yield batch.to_pandas()
        return
    try:
        with storage.binary_reader(path) as f:
            reader = pd.read_csv(f, dtype=str, keep_default_na=False, chunksize=chunk_rows,
                                 na_filter=False,
                                 compression="gzip" if path.endswith(".gz") else None)
            for chunk in reader:
                yield chunk
    except pd.errors.EmptyDataError:
        raise ContractError(str(path), "file is empty (a header row is required)") from None
    except pd.errors.ParserError as e:
        raise ContractError(str(path), f"not valid CSV ({e})") from e


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _as_text(values: pd.Series) -> pd.Series:
    return values.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v))
                      else str(v)).str.strip()


def _parse_timestamps(text: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Unix seconds (int) or ISO-8601 -> int64 seconds; returns (values, bad mask)."""
    numeric = pd.to_numeric(text, errors="coerce")
    out = np.zeros(len(text), dtype=np.int64)
    is_num = numeric.notna().to_numpy()
    out[is_num] = numeric[is_num].astype(np.int64)
    rest = ~is_num & (text != "").to_numpy()
    for i in np.flatnonzero(rest):
        try:
            moment = datetime.datetime.fromisoformat(text.iloc[i])
        except ValueError:
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        out[i] = int(moment.timestamp())
        rest[i] = False
    bad = rest | (text == "").to_numpy()
    return out, bad


def _split_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v).strip() for v in value if str(v).strip()]
    text = str(value).strip()
    return [p.strip() for p in text.split(LIST_SEPARATOR) if p.strip()] if text else []


def _normalise_chunk(chunk: pd.DataFrame, table: Table, path: str,
                     first_row: int) -> pd.DataFrame:
    out = pd.DataFrame(index=chunk.index)
    out["_row"] = np.arange(first_row, first_row + len(chunk))
    rows = out["_row"].to_numpy()
    for col in table.columns:
        if col.name not in chunk.columns:
            if col.required:
                raise ContractError(str(path), f"required column is missing "
                                    f"(have {list(chunk.columns)})", column=col.name)
            raw = pd.Series([""] * len(chunk), index=chunk.index)
        else:
            raw = chunk[col.name]
        if col.kind in ("string_list", "float_list"):
            lists = raw.map(_split_list)
            if col.kind == "float_list":
                try:
                    lists = lists.map(lambda xs: [float(x) for x in xs])
                except ValueError:
                    for i, xs in enumerate(raw.map(_split_list)):
                        try:
                            [float(x) for x in xs]
                        except ValueError:
                            raise ContractError(str(path), "expected numbers "
                                                f"separated by '{LIST_SEPARATOR}'",
                                                int(rows[i]), col.name) from None
            if col.required:
                empty = (lists.map(len) == 0).to_numpy()
                if empty.any():
                    raise ContractError(str(path), "must not be empty",
                                        int(rows[_first_bad(empty)]), col.name)
            out[col.name] = lists
            continue
        text = _as_text(raw)
        if col.required:
            empty = (text == "").to_numpy()
            if empty.any():
                raise ContractError(str(path), "must not be empty",
                                    int(rows[_first_bad(empty)]), col.name)
        if col.kind == "string":
            out[col.name] = text
        elif col.kind in ("int", "float"):
            nums = pd.to_numeric(text.where(text != "", None), errors="coerce")
            bad = (nums.isna() & (text != "")).to_numpy()
            if col.kind == "int":
                bad |= (nums.notna() & (nums != nums.round())).to_numpy()
            if bad.any():
                i = _first_bad(bad)
                expected = "an integer" if col.kind == "int" else "a number"
                raise ContractError(str(path), f"expected {expected}, "
                                    f"got {text.iloc[i]!r}", int(rows[i]), col.name)
            out[col.name] = nums.astype("float64")  # NaN marks "not given"
        elif col.kind == "timestamp":
            values, bad = _parse_timestamps(text)
            if bad.any():
                i = _first_bad(bad)
                raise ContractError(str(path), "expected unix seconds or an ISO-8601 "
                                    f"time, got {text.iloc[i]!r}", int(rows[i]), col.name)
            out[col.name] = values
        elif col.kind == "event":
            canon = text.str.lower().map(_EVENT_ALIASES)
            bad = canon.isna().to_numpy()
            if bad.any():
                i = _first_bad(bad)
                raise ContractError(str(path), f"unknown event type {text.iloc[i]!r} "
                                    f"(expected one of {', '.join(EVENT_TYPES)})",
                                    int(rows[i]), col.name)
            out[col.name] = canon
    if table.open_columns:
        for name in chunk.columns:
            if name not in out.columns:
                out[name] = chunk[name]
    return out


def read_table(path: str | os.PathLike, table: Table,
               chunk_rows: int = 100_000) -> Iterator[pd.DataFrame]:
    """Validated, normalised chunks of ``table`` from ``path``.

    Each chunk carries ``_row``: the 1-based data-row number in the file, which
    error messages and reject files use.  Memory is bounded by ``chunk_rows``.
    """
    path = os.fspath(path)
    first_row = 1
    for chunk in _raw_chunks(path, chunk_rows):
        chunk.columns = [str(c).strip() for c in chunk.columns]
        yield _normalise_chunk(chunk, table, path, first_row)
        first_row += len(chunk)


def read_whole_table(path, table: Table) -> pd.DataFrame:
    """A whole (small) table in memory, e.g. the catalogue or user features."""
    chunks = list(read_table(path, table))
    if not chunks:
        return _normalise_chunk(pd.DataFrame(columns=[c.name for c in table.columns]),
                                table, os.fspath(path), 1)
    return pd.concat(chunks, ignore_index=True)


def check_unique(frame: pd.DataFrame, column: str, path) -> None:
    dup = frame[column].duplicated().to_numpy()
    if dup.any():
        i = _first_bad(dup)
        raise ContractError(str(path), f"duplicate id {frame[column].iloc[i]!r}",
                            int(frame["_row"].iloc[i]), column)


def user_feature_kinds(users: pd.DataFrame) -> dict:
    """Splits the users table's open columns into 'numeric' and 'categorical'.

    A column is numeric when every non-empty value parses as a number.
    """
    kinds = {}
    for name in users.columns:
        if name in ("user_id", "_row"):
            continue
        text = _as_text(users[name])
        given = text[text != ""]
        numeric = pd.to_numeric(given, errors="coerce")
        kinds[name] = "numeric" if len(given) and numeric.notna().all() else "categorical"
    return kinds


def _cell(value):
    """A value as it reads in a CSV cell: lists '|'-joined, missing numbers empty."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return LIST_SEPARATOR.join(map(str, value))
    if isinstance(value, float) and np.isnan(value):
        return ""
    return value


class RejectWriter:
    """Keeps rejected rows aside: the original columns, the row number and why."""

    def __init__(self, path: str | os.PathLike, columns: Sequence[str]):
        self.path = os.fspath(path)
        self.columns = list(columns)
        self.count = 0
        self.reasons: dict = {}
        self._file: Optional[IO[str]] = None
        self._writer: Optional[_csv.Writer] = None

    def add(self, source_row: int, reason: str, values: Sequence) -> None:
        if self._writer is None:
            storage.makedirs(os.path.dirname(self.path))
            self._file = storage.open(self.path, "w")
            self._writer = csv.writer(self._file)
            self._writer.writerow(["source_row", "reject_reason", *self.columns])
        self._writer.writerow([source_row, reason, *map(_cell, values)])
        self.count += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_table(rows_or_frame, path: str | os.PathLike, table: Table) -> None:
    """Writes a frame in the contract's format (lists '|'-joined in CSV)."""
    path = os.fspath(path)
    frame = pd.DataFrame(rows_or_frame)
    if path.endswith(".parquet"):
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        storage.write_bytes(path, buffer.getvalue())
        return
    for col in table.columns:
        if col.kind in ("string_list", "float_list") and col.name in frame.columns:
            frame[col.name] = frame[col.name].map(
                lambda xs: (LIST_SEPARATOR.join(map(str, xs))
                            if isinstance(xs, (list, tuple, np.ndarray)) else xs))
    text = frame.to_csv(index=False).encode()
    storage.write_bytes(path, gzip.compress(text) if path.endswith(".gz") else text)
