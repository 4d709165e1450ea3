"""Test doubles shared by the sidecar tests (this module holds no tests).

ModelClientTestDouble stands in for the served model (no model runs); RecordingFilterBackend
wraps a real backend to record what it is asked, or to fail.
"""

import time

import numpy as np

from serving.sidecar.filters import EmbeddedFilterBackend, FilterUnavailable
from serving.sidecar.model_client import (
    Candidates,
    ModelTimeout,
    ModelUnavailable,
    ModelVersionNotFound,
)

N_ITEMS, DIM, T = 200, 4, 1_700_000_000


class ModelClientTestDouble:
    """TestDouble of a ModelClient (no model): GI ranks items it0, it1, ...; NI ranks
    it1, it3, it5, ... then the even ones, so the two lists overlap.  Records every call;
    ``fail``/``delay_s``/``fail_after`` inject failures; ``served_k`` caps answers;
    ``fixed_k`` answers that many rows whatever is asked, as a served index with a fixed
    top K does; ``versions`` are the versions it serves."""

    def __init__(self, served_k=None, versions=("7",), fixed_k=None):
        ids = [f"it{i}" for i in range(N_ITEMS)]
        self.rankings = {"gi": ids, "ni": ids[1::2] + ids[0::2]}
        self.served_k, self.fixed_k, self.versions = served_k, fixed_k, set(versions)
        self.calls, self.fail, self.delay_s, self.fail_after = [], None, 0.0, None
        self.release_version = None  # what use_release pinned unpinned calls to

    def _enter(self, name, timeout_s, **details):
        self.calls.append((name, details))
        if self.fail_after is not None and len(self.calls) > self.fail_after:
            raise ModelUnavailable("injected failure after some calls")
        if self.fail:
            raise self.fail
        if self.delay_s:
            if timeout_s is not None and self.delay_s > timeout_s:
                time.sleep(timeout_s)
                raise ModelTimeout("test double: deadline exceeded")
            time.sleep(self.delay_s)

    def _answer(self, variants, k, version):
        n = k if self.served_k is None else min(k, self.served_k)
        n = n if self.fixed_k is None else self.fixed_k
        ids = {v: self.rankings[v][:n] for v in variants}
        return Candidates(ids, {v: [100.0 - i for i in range(len(ids[v]))] for v in variants},
                          version, k)

    def search(self, queries, k, timeout_s=None, version=None, latest_items=()):
        self._enter("search", timeout_s, k=k, version=version,
                    queries={v: np.asarray(q).tolist() for v, q in queries.items()},
                    latest_items=tuple(latest_items))
        if version is not None and version not in self.versions:
            raise ModelVersionNotFound(f"NOT_FOUND: version {version} is not served")
        return self._answer(list(queries), k, version or max(self.versions))

    def use_release(self, version):
        self.release_version = version

    def _served(self, version):
        """The version a call is answered by (its pin, else the release's, else the newest);
        NOT_FOUND when it is not served."""
        version = version if version is not None else self.release_version
        if version is not None and version not in self.versions:
            raise ModelVersionNotFound(f"NOT_FOUND: version {version} is not served")
        return version or max(self.versions)

    def recommend(self, events, context, k, timeout_s=None):
        self._enter("recommend", timeout_s, k=k, events=tuple(events), context=context)
        return self._answer(["gi", "ni"], k, self._served(None))

    def context_offset(self, timestamp, signals, timeout_s=None, version=None):
        self._enter("context_offset", timeout_s, timestamp=timestamp, version=version)
        if version is not None and version not in self.versions:
            raise ModelVersionNotFound(f"NOT_FOUND: version {version} is not served")
        return np.full(DIM, 0.5, np.float32), version or max(self.versions)

    def model_version(self, timeout_s=None):
        if self.fail:
            raise self.fail
        return max(self.versions)

    def popular_items(self, limit, timeout_s=None, version=None):
        """Version v ranks every v-th item first (so versions differ), then the rest."""
        self._enter("popular_items", timeout_s, limit=limit, version=version)
        version = self._served(version)
        step = int(version)
        ids = self.rankings["gi"]
        ranked = ids[::step] + [i for n, i in enumerate(ids) if n % step]
        return [(i, float(len(ranked) - n)) for n, i in enumerate(ranked[:limit])], version

    def names(self):
        return [c[0] for c in self.calls]


class RecordingFilterBackend:
    """Test double wrapping the embedded backend: records every batch it is asked about."""
    name = "recording"

    def __init__(self, inner, down=False):
        self.inner, self.down, self.batches = inner, down, []

    def filter(self, candidate_ids, filters, timeout_s=None):
        self.batches.append(list(candidate_ids))
        if self.down:
            raise FilterUnavailable("test double: backend down")
        return self.inner.filter(candidate_ids, filters)

    def ready(self):
        return not self.down


def catalog_backend():
    docs = []
    for i in range(N_ITEMS):
        docs.append({"item_id": f"it{i}", "categories": ["A"] if i % 4 == 0 else ["B"],
                     "subclass": "s", "regions": ["us"] if i % 2 else ["*"],
                     "in_stock": i % 10 != 3, "price": float(i)})
    return EmbeddedFilterBackend(docs)


