"""The pipeline benchmark's arithmetic and its component monitor."""
import logging
import time

import numpy as np
import pytest

from benchmarks.pipeline_scale import ComponentCosts, growth, slope, targets
from pipeline.runners.local import FINISHED, RUNNING


def test_slope_is_the_log_log_least_squares_fit():
    rng = np.random.default_rng(0)
    x = np.array([1e3, 5e4, 2e5, 1.8e6])
    y = 3e-4 * x ** 1.07 * np.exp(rng.normal(0, 0.05, len(x)))
    assert slope(list(x), list(y)) == pytest.approx(np.polyfit(np.log(x), np.log(y), 1)[0])
    assert slope([10.0], [1.0]) is None and slope([10.0, 10.0], [1.0, 2.0]) is None


def test_growth_fits_each_component_over_the_sizes_it_ran_at():
    def run(size, events, components):
        return {"size": size, "events": events, "components": {
            name: {"wall_s": wall, "peak_mb": 500.0, "growth_mb": grown}
            for name, (wall, grown) in components.items()}}
    runs = [run("a", 1000, {"Transform": (10.0, 50.0), "StarsTrainer": (5.0, 100.0)}),
            run("b", 10000, {"Transform": (100.0, 50.0), "StarsTrainer": (500.0, 100.0)}),
            run("c", 100000, {"Transform": (1000.0, 50.0)})]
    fits = growth(runs)
    assert fits["Transform"] == {"sizes": ["a", "b", "c"], "b": 1.0, "b_memory": 0.0,
                                 "within_target": True}
    assert fits["StarsTrainer"]["b"] == 2.0 and fits["StarsTrainer"]["within_target"] is False
    runs[2]["data_half_s"] = 1000.0
    runs[2]["components"]["Transform"]["growth_mb"] = 900.0
    assert targets(runs, fits) == {
        "max_exponent": 1.1, "above_linear": ["StarsTrainer"], "largest_size": "c",
        "memory_growth_limit_mb": 500, "memory_growth_above_limit": {"Transform": 900.0},
        "largest_data_half_s": 1000.0, "data_half_target_s": 1800}


def test_component_costs_hear_the_runner_records():
    costs = ComponentCosts()
    logger = logging.getLogger("test_pipeline_scale")
    logger.addHandler(costs)
    logger.setLevel(logging.INFO)
    try:
        logger.info(RUNNING, "Transform")
        held = bytearray(200 * 2 ** 20)  # 200 MB, touched: resident while it runs
        held[::4096] = b"x" * len(held[::4096])
        time.sleep(0.5)
        logger.info(FINISHED, "Transform")
        del held
        logger.info("unrelated %s", "record")
    finally:
        logger.removeHandler(costs)
        costs.close()
    assert set(costs.costs) == {"Transform"}
    cost = costs.costs["Transform"]
    assert cost["wall_s"] >= 0.5 and cost["growth_mb"] >= 150
    assert cost["peak_mb"] >= cost["growth_mb"]
