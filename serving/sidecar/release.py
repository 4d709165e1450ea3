"""The sidecar follows a release directory (``--release-dir``, see :mod:`stars.release`).

What a release switches together: the user-embedding generation read from the store
(the release names it; the store keeps the previous one), the model version that
answers every call not pinned to a stored embedding's own version (anonymous sessions,
unknown users), the catalogue snapshot the post-filter uses (the embedded backend, and
the fallback when Elasticsearch is down), and the popularity ranking of that model
version.  The model server keeps both versions loaded (``model_version_policy { latest
{ num_versions: 2 } }``), so requests in flight at the switch finish on either.

A new release is switched to only when all of it is in place: its manifest and
catalogue are readable and the model server answers for its model version (its
``popular_items`` signature, pinned to that version).  Until then the previous
release keeps answering -- nothing is degraded because a push happened.  The first
release is taken at start without waiting for the model server (nothing older exists
to keep answering).
"""
from __future__ import annotations

import logging
import threading
from typing import Optional

from serving.sidecar.filters import EmbeddedFilterBackend
from serving.sidecar.popularity import Popularity
from stars import release as releases

log = logging.getLogger(__name__)


class ReleaseFollower:
    """Keeps ``recommender`` on the live release of ``release_root``; checked every
    ``refresh_s`` on a daemon thread (``start``)."""

    def __init__(self, recommender, model, release_root: str, refresh_s: float = 1.0,
                 timeout_s: float = 5.0):
        self.recommender, self.model, self.release_root = recommender, model, release_root
        self.refresh_s, self.timeout_s = refresh_s, timeout_s
        self.served: Optional[releases.Release] = None
        self.ranked_version: Optional[str] = None  # whose popularity ranking is loaded
        self.error: Optional[str] = None
        self._stop = threading.Event()

    @staticmethod
    def catalog_of(release: releases.Release) -> EmbeddedFilterBackend:
        return EmbeddedFilterBackend.from_catalog(release.catalog_dir)

    def load_first(self) -> releases.Release:
        """The live release, taken at once (start-up); raises when there is none."""
        release = releases.current(self.release_root)
        if release is None:
            raise releases.ReleaseError(f"no release in {self.release_root} yet: run the "
                                        "pipeline (or `stars catalog refresh`) first")
        catalog = self.catalog_of(release)
        self._switch(release, catalog, Popularity(catalog, source="catalogue order"),
                     self._generation(release))
        return release

    def _ranking(self, release, catalog) -> Popularity:
        """The release model's popularity ranking; raises while that version is not
        served -- which is what holds a new release back."""
        ranked, got = self.model.popular_items(len(catalog), timeout_s=self.timeout_s,
                                               version=release.model_version)
        counts = {i: p for i, p in ranked if i in catalog}
        return Popularity(catalog, counts,
                          source=f"release {release.release_id} (model version {got})")

    def _generation(self, release) -> Optional[str]:
        """The release's user-embedding generation, checked readable in the sidecar's
        store (raises otherwise: then the release is not switched to); None without a
        store."""
        store = self.recommender.user_store
        if store is None:
            return None
        generation = str(release.manifest["user_embeddings"].get("generation") or "")
        if not generation:
            raise releases.ReleaseError(f"release {release.release_id} names no "
                                        "user-embedding generation")
        store.get_many([], generation)  # StoreError when this store does not hold it
        return generation

    def _switch(self, release, catalog, popularity, generation) -> None:
        rec = self.recommender
        rec.switch_release(catalog, popularity, generation)
        self.model.use_release(release.model_version)
        self.ranked_version = (release.model_version
                               if popularity.source.startswith("release") else None)
        previous, self.served = self.served, release
        if previous is None or previous.release_id != release.release_id:
            log.info("serving release %s (model version %s, %d catalogue items)",
                     release.release_id, release.model_version, len(catalog))

    def refresh(self) -> bool:
        """Switches to the live release when it differs and is ready; True when the
        served release is the live one with its model's ranking."""
        try:
            live = releases.current_id(self.release_root)
            if live is None:
                raise releases.ReleaseError(f"no release in {self.release_root}")
            served = self.served
            if served is not None and served.release_id == live \
                    and self.ranked_version == served.model_version:
                return True
            release = (served if served is not None and served.release_id == live
                       else releases.load(self.release_root, live))
            catalog = (self.recommender.snapshot if release is served
                       else self.catalog_of(release))
            popularity = self._ranking(release, catalog)
            generation = self._generation(release)
        except Exception as e:  # not ready yet (or unreadable): keep what is served
            message = str(e)[:200]
            if message != self.error:
                log.warning("release: keeping %s: %s",
                            self.served.release_id if self.served else "none", message)
            self.error = message
            return False
        self._switch(release, catalog, popularity, generation)
        self.error = None
        return True

    def start(self) -> "ReleaseFollower":
        def loop():
            while True:
                self.refresh()
                if self._stop.wait(self.refresh_s):
                    return
        threading.Thread(target=loop, name="release-follower", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def status(self) -> dict:
        served = self.served
        return {"release": served.release_id if served else None,
                "model_version": served.model_version if served else None,
                "live": releases.current_id(self.release_root), "error": self.error}


__all__ = ["ReleaseFollower"]
