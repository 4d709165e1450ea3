"""The adaptive admission limit (``serving/sidecar/admission.py``) against its rule, and
in the HTTP app: late answers shrink the cap so the next requests are refused at once."""

import threading
import time

import pytest

from serving.sidecar.admission import AdaptiveLimit
from serving.sidecar.api import ApiConfig
from tests.test_sidecar_api import GOOD, Sidecar


def test_additive_increase_multiplicative_decrease():
    now = [0.0]
    limit = AdaptiveLimit(target_s=0.1, max_limit=20, min_limit=4, clock=lambda: now[0])
    assert limit.limit == 20 and limit.admits(19) and not limit.admits(20)
    limit.record(0.5)                 # late: x 0.9
    assert limit.limit == pytest.approx(18)
    limit.record(0.5)                 # late again within the same target interval: kept
    assert limit.limit == pytest.approx(18)
    for _ in range(30):               # a burst of late answers shrinks it once per interval
        now[0] += 0.1
        limit.record(0.5)
    assert limit.limit == 4           # not below min_limit
    for _ in range(4):                # in time: + 1/limit each, one per limit's answers
        limit.record(0.01)
    assert limit.limit == pytest.approx(4 + 1 / 4 + 1 / 4.25 + 1 / (4.25 + 1 / 4.25)
                                        + 1 / (4.25 + 1 / 4.25 + 1 / (4.25 + 1 / 4.25)),
                                        rel=1e-6)
    for _ in range(2000):
        limit.record(0.01)
    assert limit.limit == 20          # never above max_limit
    with pytest.raises(ValueError):
        AdaptiveLimit(0.1, decrease=1.5)


def test_late_answers_shrink_the_cap_in_the_app():
    """A model that answers late (the machine is saturated): after the late answers the
    cap is lower, so concurrent requests beyond it get 429 at once; a fixed cap does not
    move."""
    adaptive = Sidecar(ApiConfig(max_inflight=8, latency_target_s=0.05), budget_s=2.0,
                       model_timeout_s=2.0)
    fixed = Sidecar(ApiConfig(max_inflight=8, admission="fixed", latency_target_s=0.05),
                    budget_s=2.0, model_timeout_s=2.0)
    try:
        for sidecar in (adaptive, fixed):
            sidecar.model.delay_s = 0.1
            for _ in range(3):
                assert sidecar.call("POST", "/v1/recommendations", GOOD)[0] == 200
                time.sleep(0.06)  # one decrease per target interval
        limit = adaptive.server.asgi.admission.limit
        assert limit == pytest.approx(8 * 0.9 ** 3)
        assert fixed.server.asgi.admission is None
        statuses = []
        threads = [threading.Thread(target=lambda: statuses.append(
            adaptive.call("POST", "/v1/recommendations", GOOD)[0])) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert statuses.count(429) >= 8 - int(limit) and statuses.count(200) >= 1
    finally:
        adaptive.stop()
        fixed.stop()
