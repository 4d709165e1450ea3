"""Request filters, the filter-backend protocol, and the embedded (in-memory) backend.

Semantics, shared by every backend (the Elasticsearch backend builds a query with
exactly these meanings; tests check both on the same catalogue):

* ``region``: the item is sold in that region, or everywhere.  An item whose
  ``regions`` is empty (the contract's "everywhere") is indexed with the marker
  ``"*"``, so the Elasticsearch filter is ``terms regions: [region, "*"]``.
* ``categories``: the item's category path starts with one of the given paths,
  level by level (``"Grocery"`` and ``"Grocery > Tea"`` both match an item in
  ``"Grocery > Tea > Green"``).  Paths are compared after normalising the
  separator to ``" > "``; case matters (keyword fields).
* ``subclasses``: the item's subclass (the catalogue's, or its full category
  path when the catalogue has none) is one of these.
* ``price``: ``min <= price <= max`` (either bound optional); items without a
  price never match a price filter.  Compared in float32, as Elasticsearch's
  ``float`` field does.
* ``in_stock``: when true, items with ``stock > 0`` or unknown stock (empty
  cell = not tracked) match; when false (the default) stock is not looked at.
* ``exclude_ids``: never returned.

``FilterBackend.filter(candidate_ids, filters)`` returns the allowed ids in input
order, each once; ids unknown to the catalogue are dropped.
"""
from __future__ import annotations

import dataclasses
import math
import os
import struct
from typing import Iterable, List, Mapping, NamedTuple, Optional, Protocol, Sequence

from serving.sidecar.validation import RequestError, check

EVERYWHERE = "*"
CATEGORY_SEPARATOR = ">"


class FilterUnavailable(RuntimeError):
    """The filter backend could not answer (down, timed out, refused the query)."""


def normalise_category(path: str) -> str:
    """``"Grocery>Tea "`` -> ``"Grocery > Tea"``."""
    return " > ".join(p.strip() for p in path.split(CATEGORY_SEPARATOR) if p.strip())


def category_prefixes(path: str) -> List[str]:
    """Every ancestor path of a category path, itself included (top level first)."""
    levels = [p.strip() for p in path.split(CATEGORY_SEPARATOR) if p.strip()]
    return [" > ".join(levels[:i]) for i in range(1, len(levels) + 1)]


def as_float32(value: float) -> float:
    """The float32 value Elasticsearch stores for a ``float`` field (and parses bounds to)."""
    return struct.unpack("f", struct.pack("f", value))[0]


@dataclasses.dataclass(frozen=True)
class Filters:
    region: Optional[str] = None
    categories: tuple = ()
    subclasses: tuple = ()
    exclude_ids: frozenset = frozenset()
    price_min: Optional[float] = None
    price_max: Optional[float] = None
    in_stock: bool = False

    @property
    def has_catalog_constraints(self) -> bool:
        """True when a backend must look at item attributes (exclusions need no catalogue)."""
        return bool(self.region is not None or self.categories or self.subclasses
                    or self.price_min is not None or self.price_max is not None
                    or self.in_stock)

    def to_json(self) -> dict:
        out: dict = {}
        if self.region is not None:
            out["region"] = self.region
        if self.categories:
            out["categories"] = list(self.categories)
        if self.subclasses:
            out["subclasses"] = list(self.subclasses)
        if self.exclude_ids:
            out["exclude_ids"] = sorted(self.exclude_ids)
        if self.price_min is not None or self.price_max is not None:
            out["price"] = {k: v for k, v in (("min", self.price_min), ("max", self.price_max))
                            if v is not None}
        if self.in_stock:
            out["in_stock"] = True
        return out


def parse_filters(value, field: str = "filters") -> Filters:
    """The request's ``filters`` object -> :class:`Filters` (RequestError when invalid):
    checked against openapi.yaml's ``Filters`` schema, then converted."""
    if value is not None:
        check("Filters", value, field=field)
    return filters_from_checked(value, field)


def filters_from_checked(value: Optional[Mapping], field: str = "filters") -> Filters:
    """Converts a ``filters`` object the schema has accepted, with the two rules a schema
    cannot state: a category path needs a level, and ``price.min <= price.max``."""
    if value is None:
        return Filters()
    categories = tuple(normalise_category(c) for c in value.get("categories") or ())
    for i, c in enumerate(categories):
        if not c:
            raise RequestError(f"'{field}.categories[{i}]' has no category level",
                               f"{field}.categories[{i}]")
    price = value.get("price") or {}
    price_min, price_max = price.get("min"), price.get("max")
    if price_min is not None and price_max is not None and price_min > price_max:
        raise RequestError(f"'{field}.price.min' ({price_min:g}) is greater than "
                           f"'{field}.price.max' ({price_max:g})", f"{field}.price")
    return Filters(region=value.get("region"), categories=tuple(dict.fromkeys(categories)),
                   subclasses=tuple(dict.fromkeys(value.get("subclasses") or ())),
                   exclude_ids=frozenset(value.get("exclude_ids") or ()),
                   price_min=None if price_min is None else float(price_min),
                   price_max=None if price_max is None else float(price_max),
                   in_stock=bool(value.get("in_stock", False)))


def _first(values, default=None):
    if isinstance(values, (list, tuple)):
        return values[0] if values else default
    return default if values is None else values


def item_document(features: Mapping) -> dict:
    """A catalogue item (``stars.data.catalog.read_catalog`` features) -> its filter document.

    The same document is indexed in Elasticsearch and held by the embedded backend.
    """
    price = _first(features.get("price"))
    stock = _first(features.get("stock"))
    if isinstance(price, float) and math.isnan(price):
        price = None
    if isinstance(stock, float) and math.isnan(stock):
        stock = None
    regions = [r for r in (features.get("regions") or []) if r]
    doc = {
        "item_id": str(_first(features["item_id"])),
        "categories": category_prefixes(str(_first(features.get("category_path"), "") or "")),
        "subclass": str(_first(features.get("subclass"), "") or ""),
        "brand": str(_first(features.get("brand"), "") or ""),
        "regions": regions or [EVERYWHERE],
        "in_stock": stock is None or int(stock) > 0,
    }
    if price is not None:
        doc["price"] = float(price)
    if stock is not None:
        doc["stock"] = int(stock)
    return doc


def catalog_documents(data_dir: str | os.PathLike) -> Iterable[dict]:
    """Filter documents of every catalogue item, in catalogue order."""
    from stars.data.catalog import read_catalog
    for features in read_catalog(data_dir):
        yield item_document(features)


class FilterBackend(Protocol):
    name: str

    def filter(self, candidate_ids: Sequence[str], filters: Filters,
               timeout_s: Optional[float] = None) -> List[str]:
        """Allowed ids, in input order, each once.  Raises FilterUnavailable."""

    def ready(self) -> bool:
        """Whether the backend can answer now."""


class _Record(NamedTuple):
    regions: frozenset
    everywhere: bool
    categories: frozenset
    subclass: str
    price: float  # float32-rounded; NaN = no price
    in_stock: bool


def matches(record: _Record, filters: Filters) -> bool:
    """Whether one item passes the catalogue constraints of ``filters`` (not exclusions)."""
    if filters.region is not None and not (record.everywhere
                                           or filters.region in record.regions):
        return False
    if filters.categories and record.categories.isdisjoint(filters.categories):
        return False
    if filters.subclasses and record.subclass not in filters.subclasses:
        return False
    if filters.price_min is not None or filters.price_max is not None:
        if math.isnan(record.price):
            return False
        if filters.price_min is not None and record.price < as_float32(filters.price_min):
            return False
        if filters.price_max is not None and record.price > as_float32(filters.price_max):
            return False
    if filters.in_stock and not record.in_stock:
        return False
    return True


class EmbeddedFilterBackend:
    """The catalogue in memory, for one-machine use and as the fallbacks' filter.

    Same semantics as the Elasticsearch backend (see the module docstring).
    """

    name = "embedded"

    def __init__(self, documents: Iterable[Mapping]):
        self._records: dict = {}
        self.ids: List[str] = []  # catalogue order
        for doc in documents:
            regions = frozenset(doc.get("regions") or (EVERYWHERE,))
            price = doc.get("price")
            self._records[doc["item_id"]] = _Record(
                regions=regions, everywhere=EVERYWHERE in regions,
                categories=frozenset(doc.get("categories") or ()),
                subclass=doc.get("subclass", ""),
                price=math.nan if price is None else as_float32(float(price)),
                in_stock=bool(doc.get("in_stock", True)))
            self.ids.append(doc["item_id"])

    @classmethod
    def from_catalog(cls, data_dir: str | os.PathLike) -> "EmbeddedFilterBackend":
        return cls(catalog_documents(data_dir))

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._records

    def regions(self) -> frozenset:
        """Every region some item names (without the everywhere marker)."""
        return frozenset(r for rec in self._records.values() for r in rec.regions) - {EVERYWHERE}

    def sold_in(self, item_id: str, region: str) -> bool:
        record = self._records.get(item_id)
        return record is not None and (record.everywhere or region in record.regions)

    def filter(self, candidate_ids: Sequence[str], filters: Filters,
               timeout_s: Optional[float] = None) -> List[str]:
        out, seen = [], set()
        excluded = filters.exclude_ids
        records = self._records
        check = filters.has_catalog_constraints
        for item_id in candidate_ids:
            if item_id in seen or item_id in excluded:
                continue
            seen.add(item_id)
            record = records.get(item_id)
            if record is None or (check and not matches(record, filters)):
                continue
            out.append(item_id)
        return out

    def ready(self) -> bool:
        return True


def unique_in_order(ids: Iterable[str], exclude: frozenset = frozenset()) -> List[str]:
    """Ids once each, in first-seen order, without ``exclude``."""
    seen, out = set(exclude), []
    for item_id in ids:
        if item_id not in seen:
            seen.add(item_id)
            out.append(item_id)
    return out


__all__ = ["Filters", "parse_filters", "filters_from_checked", "FilterBackend", "FilterUnavailable",
           "EmbeddedFilterBackend", "item_document", "catalog_documents", "matches",
           "normalise_category", "category_prefixes", "unique_in_order", "EVERYWHERE"]
