"""The sidecar's recommendation flow against a ModelClient test double: stored vs encoded
embeddings, cold start, over-fetch and re-fetch, round-robin merging, and the degraded
paths (model down or slow, filter backend down, stale stored embeddings)."""

import dataclasses
import time

import numpy as np
import pytest

from serving.sidecar.filters import Filters
from serving.sidecar.model_client import Event, ModelUnavailable
from serving.sidecar.popularity import ModelPopularity, Popularity
from serving.sidecar.recommender import (
    RecommendationRequest,
    Recommender,
    RecommenderConfig,
)
from serving.sidecar.user_store import InMemoryUserEmbeddingStore
from tests.test_sidecar_doubles import (
    N_ITEMS,
    ModelClientTestDouble,
    RecordingFilterBackend,
    T,
    catalog_backend,
)


@pytest.fixture()
def parts():
    catalog = catalog_backend()
    counts = {f"it{i}": float(i) for i in range(N_ITEMS)}  # it199 most popular
    store = InMemoryUserEmbeddingStore()
    store.put("known", [1, 0, 0, 0], [0, 1, 0, 0], "7")
    store.put("stale", [1, 1, 0, 0], [0, 1, 1, 0], "3")
    store.put("generation", [1, 0, 0, 0], [0, 1, 0, 0], "20261123T073618123456-a1b2c3")
    return catalog, Popularity(catalog, counts), store


def make(parts, model=None, backend=None, **config):
    catalog, popularity, store = parts
    model = model or ModelClientTestDouble()
    backend = backend or RecordingFilterBackend(catalog)
    config = {"overfetch": 2.0, **config}
    return Recommender(model, backend, popularity, store, RecommenderConfig(**config)), model, \
        backend


EVENTS = (Event("it5", "view", T - 60), Event("it9", "purchase", T - 30))


def test_stored_path_adds_the_context_offset_and_pins_the_version(parts):
    rec, model, backend = make(parts)
    result = rec.recommend(RecommendationRequest(k=4, user_id="known", timestamp=T,
                                                 signals=(1.0, 0, 0, 0)))
    assert result.user_embedding == "stored" and not result.cold_start and not result.degraded
    assert result.model_version == "7" and result.filter_status == "skipped"
    assert model.names() == ["context_offset", "search"]
    search = model.calls[1][1]
    assert search["version"] == "7" and search["k"] == 8  # ceil(4 * 2.0)
    assert search["queries"] == {"gi": [1.5, 0.5, 0.5, 0.5], "ni": [0.5, 1.5, 0.5, 0.5]}
    assert search["latest_items"] == ()    # none stored for this user
    assert [(i.item_id, i.source) for i in result.items] == [
        ("it0", "gi"), ("it1", "ni"), ("it2", "gi"), ("it3", "ni")]
    assert backend.batches == []  # no attribute filters: no filter hop
    assert {"user_store", "context_offset", "model", "total"} <= set(result.latency_ms)
    # same hour and signals: the offset comes from the cache; another hour asks again
    rec.recommend(RecommendationRequest(k=4, user_id="known", timestamp=T + 60,
                                        signals=(1.0, 0, 0, 0)))
    assert model.names() == ["context_offset", "search", "search"]
    rec.recommend(RecommendationRequest(k=4, user_id="known", timestamp=T + 3600,
                                        signals=(1.0, 0, 0, 0)))
    assert model.names()[-2:] == ["context_offset", "search"]


def test_stored_latest_items_reach_the_search(parts):
    """A store entry with the user's latest items (the batch job keeps them) passes them to
    the model client's search, which merges NI's successor source where the model can."""
    rec, model, _ = make(parts)
    parts[2].put("with_items", [1, 0, 0, 0], [0, 1, 0, 0], "7", ("it3", "it8"))
    result = rec.recommend(RecommendationRequest(k=4, user_id="with_items", timestamp=T,
                                                 mode="next"))
    assert result.user_embedding == "stored" and not result.degraded
    search = model.calls[-1][1]
    assert search["latest_items"] == ("it3", "it8") and list(search["queries"]) == ["ni"]
    # A malformed entry (five values) is unusable, not a crash.
    parts[2]._rows["odd"] = ([1, 0, 0, 0], [0, 1, 0, 0], "7", (), "extra")
    odd = rec.recommend(RecommendationRequest(k=4, user_id="odd", timestamp=T))
    assert "stored_embedding_unusable" in odd.degraded_reasons


def test_encode_path_for_unknown_user_with_events(parts):
    rec, model, _ = make(parts)
    request = RecommendationRequest(k=3, user_id="nobody", events=EVENTS, timestamp=T,
                                    signals=(0, 0, 1.0, 0), filters=Filters(region="us"),
                                    user_features={"age": 30.0})
    result = rec.recommend(request)
    assert result.user_embedding == "encoded" and result.cold_start and not result.degraded
    (name, call), = model.calls
    assert name == "recommend" and call["events"] == EVENTS
    assert call["context"].region == "us" and call["context"].signals == (0, 0, 1.0, 0)
    assert call["context"].user_features == {"age": 30.0} and call["context"].timestamp == T
    assert result.filter_status == "ok" and len(result.items) == 3


def test_cold_user_without_events_gets_regional_popularity(parts):
    rec, model, _ = make(parts)
    result = rec.recommend(RecommendationRequest(k=3, user_id="nobody", timestamp=T,
                                                 filters=Filters(region="eu")))
    assert model.calls == [] and not result.degraded and result.cold_start
    assert result.user_embedding == "none" and result.model_version is None
    assert [(i.item_id, i.source) for i in result.items] == [
        ("it198", "popularity"), ("it196", "popularity"), ("it194", "popularity")]
    assert result.filter_status == "local"


@pytest.mark.parametrize("mode, variants, source", [("next", ["ni"], "ni"),
                                                    ("general", ["gi"], "gi")])
def test_single_variant_modes(parts, mode, variants, source):
    rec, model, _ = make(parts)
    result = rec.recommend(RecommendationRequest(k=5, user_id="known", timestamp=T, mode=mode))
    assert list(model.calls[-1][1]["queries"]) == variants
    assert {i.source for i in result.items} == {source} and len(result.items) == 5
    want = model.rankings[variants[0]][:5]
    assert [i.item_id for i in result.items] == want


def test_refetch_grows_until_enough_survive(parts):
    rec, model, backend = make(parts, overfetch=2.0, growth=2.0, max_fetch=1000)
    # only category A (every 4th item) and in stock: few survive each round
    request = RecommendationRequest(k=12, user_id="known", timestamp=T,
                                    filters=Filters(categories=("A",), in_stock=True))
    result = rec.recommend(request)
    ks = [c[1]["k"] for c in model.calls if c[0] == "search"]
    assert ks == [24, 48] and result.fetch_rounds == 2 and len(result.items) == 12
    ids = [i.item_id for i in result.items]
    assert len(set(ids)) == 12 and all(int(i[2:]) % 4 == 0 for i in ids)
    # each round sends only candidates not checked before
    first, second = backend.batches
    assert not set(first) & set(second)
    assert result.candidates_checked == len(first) + len(second)


def test_refetch_stops_at_the_cap_and_when_the_index_is_exhausted(parts):
    rec, model, _ = make(parts, max_fetch=30)
    result = rec.recommend(RecommendationRequest(k=10, user_id="known", timestamp=T,
                                                 filters=Filters(subclasses=("none",))))
    assert [c[1]["k"] for c in model.calls if c[0] == "search"] == [20, 30]
    assert result.items == [] and not result.degraded
    rec, model, _ = make(parts, model=ModelClientTestDouble(served_k=25))
    result = rec.recommend(RecommendationRequest(k=10, user_id="known", timestamp=T,
                                                 filters=Filters(subclasses=("none",))))
    assert [c[1]["k"] for c in model.calls if c[0] == "search"] == [20, 40]  # 25 < 40: stop


def test_a_fixed_top_k_index_is_asked_once(parts):
    """A served index answers its whole top K whatever is asked: the first answer holds
    every candidate there is, so strict filters lead to a backfill, not to calls that
    return the same rows again (each one a full model call)."""
    rec, model, backend = make(parts, model=ModelClientTestDouble(fixed_k=40))
    result = rec.recommend(RecommendationRequest(k=12, user_id="known", timestamp=T,
                                                 filters=Filters(categories=("A",),
                                                                 in_stock=True)))
    assert model.names() == ["context_offset", "search"] and result.fetch_rounds == 1
    assert result.candidates_checked == 60 and len(backend.batches) == 1  # GI ∪ NI
    assert len(result.items) == 12 and result.backfilled > 0 and not result.degraded


def test_excluded_ids_count_towards_the_first_fetch_and_never_come_back(parts):
    rec, model, backend = make(parts)
    exclude = frozenset({"it0", "it1", "it2"})
    result = rec.recommend(RecommendationRequest(k=4, user_id="known", timestamp=T,
                                                 filters=Filters(exclude_ids=exclude)))
    assert model.calls[-1][1]["k"] == 11
    assert not exclude & {i.item_id for i in result.items} and len(result.items) == 4
    assert backend.batches == []  # exclusions need no backend


def test_rr_in_the_flow_interleaves_gi_first_without_duplicates(parts):
    rec, _, _ = make(parts)
    result = rec.recommend(RecommendationRequest(k=20, user_id="known", timestamp=T))
    ids = [i.item_id for i in result.items]
    assert len(ids) == len(set(ids)) == 20
    assert [i.source for i in result.items[:4]] == ["gi", "ni", "gi", "ni"]


def test_model_down_gives_degraded_popularity(parts):
    model = ModelClientTestDouble()
    model.fail = ModelUnavailable("UNAVAILABLE: connection refused")
    rec, _, _ = make(parts, model=model)
    for request in (RecommendationRequest(k=3, user_id="known", timestamp=T),
                    RecommendationRequest(k=3, user_id="x", events=EVENTS, timestamp=T,
                                          filters=Filters(region="us"))):
        result = rec.recommend(request)
        assert result.degraded and result.model_version is None
        assert all(i.source == "popularity" for i in result.items) and len(result.items) == 3
    assert result.degraded_reasons == ["model_unavailable"]
    assert [i.item_id for i in result.items] == ["it199", "it198", "it197"]


def test_model_slow_times_out_within_the_budget(parts):
    model = ModelClientTestDouble()
    model.delay_s = 1.0
    rec, _, _ = make(parts, model=model, model_timeout_s=0.03, budget_s=0.2)
    started = time.perf_counter()
    result = rec.recommend(RecommendationRequest(k=3, user_id="x", events=EVENTS, timestamp=T))
    assert time.perf_counter() - started < 0.2
    assert result.degraded and result.degraded_reasons == ["model_timeout"]
    assert [i.source for i in result.items] == ["popularity"] * 3
    # a slow context offset on the stored path: no second (encode) attempt
    model.calls.clear()
    result = rec.recommend(RecommendationRequest(k=3, user_id="known", events=EVENTS,
                                                 timestamp=T))
    assert model.names() == ["context_offset"] and result.degraded_reasons == ["model_timeout"]


def test_refetch_failure_keeps_the_first_round(parts):
    model = ModelClientTestDouble()
    model.fail_after = 2  # context_offset, first search; the re-fetch fails
    rec, _, _ = make(parts, model=model)
    result = rec.recommend(RecommendationRequest(k=10, user_id="known", timestamp=T,
                                                 filters=Filters(categories=("A",))))
    assert result.degraded_reasons == ["refetch_failed"] and result.fetch_rounds == 1
    sources = [i.source for i in result.items]  # the first round, then popular items
    assert len(sources) == 10 and 0 < result.backfilled < 10
    assert sources == ["gi"] * (10 - result.backfilled) + ["popularity"] * result.backfilled


@pytest.mark.parametrize("failure", ["snapshot", "open", "closed"])
def test_filter_backend_down(parts, failure):
    backend = RecordingFilterBackend(parts[0], down=True)
    rec, model, _ = make(parts, backend=backend, filter_failure=failure)
    request = RecommendationRequest(k=5, user_id="known", timestamp=T,
                                    filters=Filters(region="eu", exclude_ids=frozenset({"it0"})))
    result = rec.recommend(request)
    assert len(backend.batches) == 1 and result.fetch_rounds == 1
    if failure == "snapshot":  # the same rules, applied to the catalogue the sidecar holds
        healthy, _, _ = make(parts)
        want = healthy.recommend(request)
        assert result.filter_status == "snapshot" and not result.degraded
        assert [i.item_id for i in result.items] == [i.item_id for i in want.items]
        assert all(parts[0].sold_in(i.item_id, "eu") for i in result.items)
        return
    assert result.degraded and result.degraded_reasons == ["filter_unavailable"]
    assert result.filter_status == f"fail_{failure}"
    if failure == "open":  # unfiltered (odd items are not sold in 'eu'); exclusions hold
        assert [i.item_id for i in result.items] == ["it1", "it3", "it2", "it5", "it4"]
    else:
        assert result.items == [] and result.short_answer


def test_snapshot_is_the_default_and_needs_a_catalogue(parts):
    assert RecommenderConfig().filter_failure == "snapshot"
    with pytest.raises(ValueError, match="snapshot"):
        Recommender(ModelClientTestDouble(), RecordingFilterBackend(parts[0]), None, None)
    Recommender(ModelClientTestDouble(), RecordingFilterBackend(parts[0]), None, None,
                snapshot=parts[0])  # an explicit snapshot without popularity is enough


def test_failed_filter_backend_rests_then_is_probed_again(parts):
    """The circuit breaker: one failure, then no calls for the cool-down (the snapshot
    answers at once), then one probe; a healthy probe closes it."""
    backend = RecordingFilterBackend(parts[0], down=True)
    rec, _, _ = make(parts, backend=backend, backend_cooldown_s=0.2)
    request = RecommendationRequest(k=5, user_id="known", timestamp=T,
                                    filters=Filters(region="eu"))
    assert rec.recommend(request).filter_status == "snapshot"
    for _ in range(3):
        assert rec.recommend(request).filter_status == "snapshot"
    assert len(backend.batches) == 1  # resting: not asked
    backend.down = False
    time.sleep(0.25)
    assert rec.recommend(request).filter_status == "ok"
    assert len(backend.batches) == 2


def test_failed_user_store_rests_after_one_failure(parts):
    class BrokenStore:
        calls = 0

        def get(self, user_id):
            BrokenStore.calls += 1
            raise OSError("store down")
    catalog, popularity, _ = parts
    rec = Recommender(ModelClientTestDouble(), catalog, popularity, BrokenStore(),
                      RecommenderConfig(backend_cooldown_s=30))
    for _ in range(3):
        result = rec.recommend(RecommendationRequest(k=3, user_id="known", events=EVENTS,
                                                     timestamp=T))
        assert result.user_embedding == "encoded" and len(result.items) == 3
        assert result.degraded_reasons == ["user_store_unavailable"]
    assert BrokenStore.calls == 1


def test_backfill_to_k_when_the_index_is_used_up(parts):
    """A served index returns a fixed top K; strict filters can leave fewer than k of
    them.  Popular items passing the same filters fill the answer; ``short_answer`` only
    when the catalogue itself has fewer than k such items."""
    catalog, popularity, _ = parts
    model = ModelClientTestDouble(served_k=12)
    rec, _, _ = make(parts, model=model)
    filters = Filters(categories=("A",), in_stock=True)  # every 4th item
    result = rec.recommend(RecommendationRequest(k=8, user_id="known", timestamp=T,
                                                 filters=filters))
    from_index = [i for i in result.items if i.source != "popularity"]
    assert len(result.items) == 8 and not result.short_answer and not result.degraded
    assert result.backfilled == 8 - len(from_index) > 0
    ids = [i.item_id for i in result.items]
    assert len(set(ids)) == 8 and catalog.filter(ids, filters) == ids
    assert ids[len(from_index):] == [i for i, _ in popularity.top(result.backfilled, Filters(
        categories=("A",), in_stock=True, exclude_ids=frozenset(ids[:len(from_index)])))]
    # 10 items in the whole catalogue pass: all 10, flagged short
    narrow = Filters(categories=("A",), price_max=39.0)
    result = rec.recommend(RecommendationRequest(k=20, user_id="known", timestamp=T,
                                                 filters=narrow))
    assert sorted(i.item_id for i in result.items) == sorted(f"it{i}" for i in range(0, 40, 4))
    assert result.short_answer and result.to_json()["short_answer"] is True


def test_non_finite_scores_are_a_model_failure(parts):
    class NanModel(ModelClientTestDouble):
        def _answer(self, variants, k, version):
            answer = super()._answer(variants, k, version)
            answer.scores = {v: [float("nan")] * len(s) for v, s in answer.scores.items()}
            return answer
    rec, _, _ = make(parts, model=NanModel())
    result = rec.recommend(RecommendationRequest(k=3, user_id="known", timestamp=T))
    assert result.degraded_reasons == ["model_unavailable"]
    assert [i.source for i in result.items] == ["popularity"] * 3


def test_stale_stored_embedding(parts):
    rec, model, _ = make(parts)
    result = rec.recommend(RecommendationRequest(k=3, user_id="stale", events=EVENTS,
                                                 timestamp=T))
    assert model.names() == ["context_offset", "recommend"]  # version 3 is gone: encode
    assert result.user_embedding == "encoded" and not result.degraded and not result.cold_start
    result = rec.recommend(RecommendationRequest(k=3, user_id="stale", timestamp=T))
    assert result.degraded and result.degraded_reasons == ["stored_embedding_unusable"]
    assert [i.source for i in result.items] == ["popularity"] * 3


def test_store_generation_ids_are_not_pinned(parts):
    rec, model, _ = make(parts)
    result = rec.recommend(RecommendationRequest(k=3, user_id="generation", timestamp=T))
    assert [c[1]["version"] for c in model.calls] == [None, None]
    assert result.user_embedding == "stored" and result.model_version == "7"
    assert not result.degraded
    # the offset is cached under the version the server reported; a new version misses
    rec.recommend(RecommendationRequest(k=3, user_id="generation", timestamp=T))
    assert model.names() == ["context_offset", "search", "search"]
    model.versions = {"8"}
    rec.recommend(RecommendationRequest(k=3, user_id="generation", timestamp=T))  # learns 8
    rec.recommend(RecommendationRequest(k=3, user_id="generation", timestamp=T))
    assert model.names()[3:] == ["search", "context_offset", "search"]


def test_malformed_or_other_dimension_stored_embeddings_are_unusable(parts):
    rec, model, _ = make(parts)
    store = parts[2]
    store._rows["short"] = (np.zeros(3), np.zeros(3), "7")  # the model's offset has 4 dims
    store._rows["broken"] = ("nope",)
    for user in ("short", "broken"):
        result = rec.recommend(RecommendationRequest(k=3, user_id=user, events=EVENTS,
                                                     timestamp=T))
        assert result.user_embedding == "encoded" and len(result.items) == 3
        result = rec.recommend(RecommendationRequest(k=3, user_id=user, timestamp=T))
        assert result.degraded_reasons == ["stored_embedding_unusable"]


def test_user_store_failure_is_a_marked_miss(parts):
    class BrokenStore:
        def get(self, user_id):
            raise OSError("store down")
    catalog, popularity, _ = parts
    model = ModelClientTestDouble()
    rec = Recommender(model, catalog, popularity, BrokenStore(), RecommenderConfig())
    result = rec.recommend(RecommendationRequest(k=3, user_id="known", events=EVENTS,
                                                 timestamp=T))
    assert result.user_embedding == "encoded" and len(result.items) == 3
    assert result.degraded_reasons == ["user_store_unavailable"]
    result = rec.recommend(RecommendationRequest(k=3, user_id="known", timestamp=T))
    assert result.degraded and [i.source for i in result.items] == ["popularity"] * 3


def test_budget_spent_before_the_model_gives_popularity(parts):
    class SlowStore:
        def get(self, user_id):
            time.sleep(0.06)
            return None
    catalog, popularity, _ = parts
    model = ModelClientTestDouble()
    rec = Recommender(model, catalog, popularity, SlowStore(), RecommenderConfig(budget_s=0.05))
    result = rec.recommend(RecommendationRequest(k=3, user_id="u", events=EVENTS, timestamp=T))
    assert model.calls == [] and result.degraded_reasons == ["budget_exhausted"]
    assert [i.source for i in result.items] == ["popularity"] * 3


def test_no_popularity_means_empty_degraded_answer(parts):
    model = ModelClientTestDouble()
    model.fail = ModelUnavailable("down")
    rec = Recommender(model, parts[0], None, None, RecommenderConfig())
    result = rec.recommend(RecommendationRequest(k=3, events=EVENTS, timestamp=T))
    assert result.items == [] and set(result.degraded_reasons) == {"model_unavailable",
                                                                   "no_fallback"}


def test_model_popularity_follows_the_served_version():
    """The ranking ships with the model: read at start, kept while the version is the same,
    re-read when it changes; the catalogue order stands in until the first answer, and a
    known ranking is kept while the model server is down."""
    catalog = catalog_backend()
    model = ModelClientTestDouble(versions=("7",))
    model.fail = ModelUnavailable("UNAVAILABLE: starting")
    recommender = Recommender(model, catalog, Popularity(catalog))
    source = ModelPopularity(recommender, model, catalog)
    assert not source.refresh() and "starting" in source.error
    assert recommender.popularity.source == "catalogue order"
    assert [i for i, _ in recommender.popularity.top(2)] == ["it0", "it1"]
    model.fail = None
    assert source.refresh() and source.error is None
    assert recommender.popularity.source == "model version 7"
    assert [i for i, _ in recommender.popularity.top(3)] == ["it0", "it7", "it14"]
    assert source.refresh() and model.names().count("popular_items") == 1  # same version
    model.versions = {"9"}
    assert source.refresh() and recommender.popularity.source == "model version 9"
    assert [i for i, _ in recommender.popularity.top(3)] == ["it0", "it9", "it18"]
    model.fail = ModelUnavailable("UNAVAILABLE: down")
    assert not source.refresh() and recommender.popularity.source == "model version 9"


def test_version_retired_between_cached_offset_and_search(parts):
    """The offset of version 7 is cached; then 7 is retired (a push with latest-1): the
    search says NOT_FOUND for the pinned version.  That is the stored embedding being
    unusable (not a model outage): the events are encoded when the request has some."""
    rec, model, _ = make(parts)
    request = RecommendationRequest(k=3, user_id="known", timestamp=T)
    assert rec.recommend(request).user_embedding == "stored"
    model.versions = {"8"}
    with_events = rec.recommend(dataclasses.replace(request, events=EVENTS))
    assert with_events.user_embedding == "encoded" and not with_events.degraded
    assert with_events.model_version == "8" and len(with_events.items) == 3
    without = rec.recommend(request)
    assert without.degraded_reasons == ["stored_embedding_unusable"]
    assert [i.source for i in without.items] == ["popularity"] * 3
