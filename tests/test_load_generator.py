"""The reliability benchmark's load generator (``benchmarks/load.py``) against an
in-process sidecar: closed and open loop, and the answer check that counts filter
violations (proved by a sidecar that serves unfiltered answers on purpose)."""

import asyncio

from benchmarks.load import AnswerCheck, Outcome, closed_loop, open_loop, recovery_s, summarize
from tests.test_sidecar_api import GOOD, Sidecar
from tests.test_sidecar_doubles import catalog_backend


def test_closed_and_open_loop_count_what_the_answers_say():
    sidecar = Sidecar()
    try:
        url = f"http://127.0.0.1:{sidecar.port}/v1/recommendations"
        check = AnswerCheck(catalog_backend())
        bodies = [GOOD, {**GOOD, "user_id": "nobody"}]
        outcomes = asyncio.run(closed_loop(url, bodies, check, concurrency=4, requests=40))
        row = summarize(outcomes)
        assert row["requests"] == 40 and row["http_5xx"] == row["connection_errors"] == 0
        assert row["filter_violations"] == 0 and row["degraded_share"] == 0.0
        assert row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
        outcomes = asyncio.run(open_loop(url, bodies, check, rate=100, duration_s=0.5))
        assert summarize(outcomes)["requests"] == 50
        # a sidecar that serves past a filter it cannot apply: every such answer is counted
        sidecar.backend.down = True
        sidecar.app.recommender.config = type(sidecar.app.recommender.config)(
            filter_failure="open", overfetch=2.0)
        row = summarize(asyncio.run(closed_loop(url, [GOOD], check, concurrency=2,
                                                requests=6)))
        assert row["filter_violations"] == 6 and row["degraded_share"] == 1.0
    finally:
        sidecar.stop()


def test_connection_errors_and_recovery_time():
    url = "http://127.0.0.1:9/v1/recommendations"  # nothing listens on the discard port
    outcomes = asyncio.run(closed_loop(url, [GOOD], AnswerCheck(catalog_backend()), 1, 3,
                                       timeout_s=1.0))
    assert summarize(outcomes)["connection_errors"] == 3
    good, bad = Outcome(sent=10.0, latency_ms=5, status=200), Outcome(sent=11.5, latency_ms=5,
                                                                        status=503)
    late_degraded = Outcome(sent=12.25, latency_ms=5, status=200, degraded=True)
    assert recovery_s([good, bad, late_degraded], fault_end=11.0) == 1.25
    assert recovery_s([good], fault_end=9.0) == 0.0
