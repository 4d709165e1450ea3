"""Elasticsearch filter backend: item mapping, catalogue indexing with an alias swap, and
the candidate post-filter query.  Uses the official ``elasticsearch`` client (8.x).

The post-filter is one search per round of candidates, in filter context only (no
scoring, cacheable bit sets)::

    {"query": {"bool": {"filter": [
        {"ids": {"values": [...candidate ids...]}},
        {"terms": {"regions": ["<region>", "*"]}},          # region given
        {"terms": {"categories": ["Grocery > Tea", ...]}},  # categories given
        {"terms": {"subclass": [...]}},                     # subclasses given
        {"range": {"price": {"gte": lo, "lte": hi}}},       # price given
        {"term": {"in_stock": true}}]}},                    # in_stock: true
     "_source": false, "size": <number of ids>}

Excluded ids are removed before the query (they never reach Elasticsearch), so the
query only ever narrows the candidates.  Hits come back in index order with score
0; the answer is re-ordered to the candidates' order here.  Items sold everywhere
(empty ``regions``) are indexed with ``regions: ["*"]`` (see ``filters.py``).

Indexing (``stars index items``) writes a fresh index ``<alias>-<UTC time, µs>-<hex>``
with refresh off, bulk-loads the catalogue, restores refresh, checks the count,
then moves the alias in one atomic ``_aliases`` call and deletes older generations
(keeping ``keep_previous`` for rollback).  Readers never see a half-built index.
"""
from __future__ import annotations

import datetime
import logging
import re
import secrets
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, cast

from serving.sidecar.filters import EVERYWHERE, Filters, FilterUnavailable, unique_in_order

log = logging.getLogger(__name__)

DEFAULT_ALIAS = "stars-items"
MAX_RESULT_WINDOW = 10_000  # Elasticsearch's default index.max_result_window

ITEM_MAPPING = {
    "dynamic": "strict",
    "properties": {
        "item_id": {"type": "keyword"},
        "categories": {"type": "keyword"},
        "subclass": {"type": "keyword"},
        "brand": {"type": "keyword"},
        "regions": {"type": "keyword"},
        "price": {"type": "float"},
        "stock": {"type": "integer"},
        "in_stock": {"type": "boolean"},
    },
}


def index_settings(replicas: Optional[int] = None) -> dict:
    settings = {"number_of_shards": 1, "refresh_interval": "-1"}
    if replicas is not None:
        settings["number_of_replicas"] = int(replicas)
    return settings


def filter_clauses(filters: Filters) -> list:
    """The attribute clauses of ``filters`` (without the ids clause), in a fixed order."""
    clauses: List[Dict[str, Any]] = []
    if filters.region is not None:
        clauses.append({"terms": {"regions": [filters.region, EVERYWHERE]}})
    if filters.categories:
        clauses.append({"terms": {"categories": list(filters.categories)}})
    if filters.subclasses:
        clauses.append({"terms": {"subclass": list(filters.subclasses)}})
    if filters.price_min is not None or filters.price_max is not None:
        bounds = {}
        if filters.price_min is not None:
            bounds["gte"] = filters.price_min
        if filters.price_max is not None:
            bounds["lte"] = filters.price_max
        clauses.append({"range": {"price": bounds}})
    if filters.in_stock:
        clauses.append({"term": {"in_stock": True}})
    return clauses


def build_query(ids: Sequence[str], filters: Filters) -> dict:
    """The search body for one round of (already de-duplicated, exclusion-free) ids."""
    return {"query": {"bool": {"filter": [{"ids": {"values": list(ids)}},
                                          *filter_clauses(filters)]}},
            "_source": False, "size": len(ids)}


def _client_errors():
    import elastic_transport
    import elasticsearch
    return (elasticsearch.ApiError, elastic_transport.TransportError, KeyError, TypeError,
            ValueError)


class ElasticsearchFilterBackend:
    """FilterBackend over an Elasticsearch alias (see the module docstring)."""

    name = "elasticsearch"

    def __init__(self, client, alias: str = DEFAULT_ALIAS, timeout_s: float = 0.05):
        self.client, self.alias, self.timeout_s = client, alias, timeout_s
        self._errors = _client_errors()

    @classmethod
    def connect(cls, hosts, alias: str = DEFAULT_ALIAS, timeout_s: float = 0.05,
                **client_kwargs) -> "ElasticsearchFilterBackend":
        return cls(make_client(hosts, **client_kwargs), alias, timeout_s)

    def filter(self, candidate_ids: Sequence[str], filters: Filters,
               timeout_s: Optional[float] = None) -> List[str]:
        ids = unique_in_order(candidate_ids, filters.exclude_ids)
        if not ids:
            return []
        timeout = self.timeout_s if timeout_s is None else timeout_s
        if timeout <= 0:
            raise FilterUnavailable("no time left for the filter query")
        allowed: set = set()
        client = self.client.options(request_timeout=timeout)
        for start in range(0, len(ids), MAX_RESULT_WINDOW):
            body = build_query(ids[start:start + MAX_RESULT_WINDOW], filters)
            try:
                response = client.search(index=self.alias, query=body["query"],
                                         source=body["_source"], size=body["size"])
                allowed.update(hit["_id"] for hit in response["hits"]["hits"])
            except self._errors as e:
                raise FilterUnavailable(f"elasticsearch: {type(e).__name__}: {e}") from e
        return [i for i in ids if i in allowed]

    def ready(self) -> bool:
        try:
            return bool(self.client.options(request_timeout=max(self.timeout_s, 0.5))
                        .indices.exists_alias(name=self.alias))
        except self._errors:
            return False


def make_client(hosts, max_retries: int = 0, connections_per_node: int = 32, **kwargs):
    """An ``elasticsearch.Elasticsearch`` client tuned for a latency-bound sidecar:
    no retries (the caller has a deadline and a fallback), a pool per worker thread."""
    import elasticsearch
    if isinstance(hosts, str):
        hosts = [h.strip() for h in hosts.split(",") if h.strip()]
    return elasticsearch.Elasticsearch(hosts, max_retries=max_retries, retry_on_timeout=False,
                                       connections_per_node=connections_per_node, **kwargs)


def _generation_pattern(alias: str):
    return re.compile(rf"^{re.escape(alias)}-\d{{20}}-[0-9a-f]{{6}}$")


def index_catalog(client, documents: Iterable[Mapping], alias: str = DEFAULT_ALIAS,
                  chunk_size: int = 2000, keep_previous: int = 1,
                  replicas: Optional[int] = None, request_timeout_s: float = 120.0) -> dict:
    """Bulk-indexes filter documents into a new index generation and swaps ``alias`` to it.

    ``documents``: ``filters.item_document`` dicts (e.g. ``filters.catalog_documents``).
    Returns a report: the new index, item count, previous and deleted generations.
    """
    staged = stage_index(client, documents, alias, chunk_size, replicas, request_timeout_s)
    return {**staged, **swap_alias(client, alias, staged["index"], keep_previous,
                                   request_timeout_s)}


def stage_index(client, documents: Iterable[Mapping], alias: str = DEFAULT_ALIAS,
                chunk_size: int = 2000, replicas: Optional[int] = None,
                request_timeout_s: float = 120.0) -> dict:
    """A new, complete index generation of ``alias`` that nothing reads yet (a release
    swaps the alias to it when it is published: ``swap_alias``)."""
    from elasticsearch import NotFoundError, helpers
    es = client.options(request_timeout=request_timeout_s)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d%H%M%S%f")
    name = f"{alias}-{stamp}-{secrets.token_hex(3)}"
    try:
        es.indices.get_alias(name=alias)
    except NotFoundError:
        if es.indices.exists(index=alias):
            raise ValueError(f"'{alias}' is a concrete index, not an alias; delete or rename it "
                             "(or choose another --alias) before indexing") from None
    es.indices.create(index=name, mappings=ITEM_MAPPING, settings=index_settings(replicas))
    count = 0

    def actions():
        nonlocal count
        for doc in documents:
            count += 1
            yield {"_index": name, "_id": doc["item_id"], "_source": dict(doc)}

    try:
        _, result = helpers.bulk(es, actions(), chunk_size=chunk_size, raise_on_error=False,
                                 stats_only=False)
        # typed "int | list": the count is what stats_only=True answers
        errors = cast(List[Dict[str, Any]], result)
        if errors:
            raise ValueError(f"{len(errors)} catalogue documents were rejected by "
                             f"Elasticsearch, first: {errors[0]}")
        es.indices.put_settings(index=name, settings={"index": {"refresh_interval": None}})
        es.indices.refresh(index=name)
        indexed = int(es.count(index=name)["count"])
        if indexed != count:
            raise ValueError(f"index {name} holds {indexed} documents, {count} were sent "
                             "(duplicate item ids?)")
    except BaseException:
        es.indices.delete(index=name, ignore_unavailable=True)
        raise
    return {"index": name, "alias": alias, "items": count}


def swap_alias(client, alias: str, index: str, keep_previous: int = 1,
               request_timeout_s: float = 120.0) -> dict:
    """Points ``alias`` at ``index`` in one ``_aliases`` call and deletes generations
    beyond the newest ``keep_previous`` older ones (kept for rollback)."""
    from elasticsearch import NotFoundError
    es = client.options(request_timeout=request_timeout_s)
    pattern = _generation_pattern(alias)
    try:
        current = sorted(es.indices.get_alias(name=alias).body)
    except NotFoundError:
        current = []
    if not es.indices.exists(index=index):
        raise ValueError(f"index {index} does not exist; nothing to point {alias} at")
    actions_ = [{"remove": {"index": old, "alias": alias}} for old in current if old != index]
    actions_.append({"add": {"index": index, "alias": alias}})
    es.indices.update_aliases(actions=actions_)
    older = sorted((n for n in es.indices.get(index=f"{alias}-*").body
                    if pattern.match(n) and n != index and n not in current), reverse=True)
    generations = sorted(c for c in current if pattern.match(c) and c != index)[::-1] + older
    # staged generations newer than the one swapped in belong to releases in progress
    deleted = [g for g in generations[max(0, keep_previous):] if g < index]
    for old in deleted:
        es.indices.delete(index=old, ignore_unavailable=True)
    log.info("alias %s -> %s; deleted %s", alias, index, deleted)
    return {"index": index, "alias": alias, "previous": current, "deleted": deleted}


__all__ = ["ElasticsearchFilterBackend", "ITEM_MAPPING", "build_query", "filter_clauses",
           "stage_index", "swap_alias",
           "index_catalog", "index_settings", "make_client", "DEFAULT_ALIAS"]
