"""The calendar-context decision: on only where the timestamps tell the time of day."""
import pandas as pd
import pytest

from models import calendar_context as CC
from models.config import make_config
from stars.data import contract


def _interactions(data_dir, timestamps):
    data_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"user_id": ["u1"] * len(timestamps),
                  "item_id": [f"i{k}" for k in range(len(timestamps))],
                  "timestamp": timestamps, "event_type": "purchase"}).to_csv(
        data_dir / "interactions.csv", index=False)
    return data_dir


def test_calendar_context_is_on_only_where_timestamps_tell_the_time_of_day(tmp_path):
    dates = _interactions(tmp_path / "reviews", [1388534400, 1388620800, 1391212800])
    clock = _interactions(tmp_path / "clicks", [1388534400, 1388538000, "2014-01-02T10:31:00"])
    used, why = CC.calendar_context(dates)
    assert not used and "day-granular" in why
    assert CC.calendar_context(clock)[0]
    assert CC.calendar_context(dates, "on")[0] and not CC.calendar_context(clock, "off")[0]
    with pytest.raises(ValueError, match="--context"):
        CC.calendar_context(clock, "sometimes")
    (tmp_path / "empty").mkdir()
    with pytest.raises(contract.ContractError, match="interactions"):
        CC.calendar_context(tmp_path / "empty")


def test_context_decision_reaches_stars_models_but_not_their_own_switches():
    assert CC.context_overrides("stars", False, None) == {"use_context": False}
    assert CC.context_overrides("stars_no_user", False, {"epochs": 3}) == {
        "epochs": 3, "use_context": False}
    for variant in ("stars_no_context", "sasrec_plain"):  # their ablation sets it
        assert CC.context_overrides(variant, True, None) == {}
    # The ID-only baseline is STARS without its semantic parts: it keeps the context.
    assert CC.context_overrides("sasrec_id", False, None) == {"use_context": False}
    forced = {"stars": {"use_context": True}}  # the caller's explicit choice wins
    assert CC.context_overrides("stars", False, forced) == forced
    assert not make_config("tiny", **CC.context_overrides("stars", False, None)).use_context
