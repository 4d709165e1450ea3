"""Calendar ids against Python's datetime (the numpy/stdlib reference)."""
import datetime as dt

import numpy as np
import tensorflow as tf

from models import calendar


def _reference(ts: int) -> dict:
    d = dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc)
    doy = d.timetuple().tm_yday - 1
    return {"hour": d.hour, "day_of_week": d.weekday(), "month": d.month - 1,
            "week_of_year": min(doy // 7, calendar.WEEK_OF_YEAR_BUCKETS - 1)}


def test_calendar_ids_match_datetime_for_random_times():
    rng = np.random.default_rng(0)
    stamps = rng.integers(0, 2_000_000_000, size=2000).astype(np.int64)
    stamps = np.concatenate([stamps, [0, 951782400, 4107542400 - 1, 1709164800]])  # leap days
    got = {k: v.numpy() for k, v in calendar.calendar_features(tf.constant(stamps)).items()}
    for i, ts in enumerate(stamps):
        ref = _reference(int(ts))
        for name, value in ref.items():
            assert got[name][i] == value, (int(ts), name, got[name][i], value)


def _holiday_of(date: dt.date) -> str:
    ts = int(dt.datetime(date.year, date.month, date.day, 12, tzinfo=dt.timezone.utc).timestamp())
    index = int(calendar.calendar_features(tf.constant([ts]))["holiday"].numpy()[0])
    return calendar.HOLIDAYS[index]


def test_holiday_window_precedes_the_day():
    assert _holiday_of(dt.date(2024, 12, 10)) == "christmas"
    assert _holiday_of(dt.date(2024, 12, 25)) == "christmas"
    assert _holiday_of(dt.date(2024, 12, 27)) == "new_year"
    assert _holiday_of(dt.date(2024, 10, 20)) == "halloween"
    assert _holiday_of(dt.date(2024, 2, 1)) == "valentines"
    assert _holiday_of(dt.date(2024, 9, 1)) == "none"


def test_black_friday_is_the_day_after_the_fourth_thursday():
    for year, day in ((2023, 24), (2024, 29), (2025, 28)):
        assert _holiday_of(dt.date(year, 11, day)) == "black_friday"
        # The evening before Black Friday is still inside its window, not Christmas's.
        assert _holiday_of(dt.date(year, 11, day - 3)) == "black_friday"


def test_shape_is_preserved():
    out = calendar.calendar_features(tf.constant([[1_700_000_000, 1_700_003_600]], tf.int64))
    assert all(v.shape == (1, 2) for v in out.values())


def test_time_of_day_is_carried_only_by_timestamps_off_one_second_of_the_day():
    days = np.array([17000, 17001, 17400], np.int64) * 86400
    assert not calendar.carries_time_of_day(days)                 # UTC midnights
    assert not calendar.carries_time_of_day(days + 8 * 3600)      # local midnights (UTC-8)
    assert calendar.carries_time_of_day(days + [0, 3600, 60])     # real clock times
    assert not calendar.carries_time_of_day(np.array([], np.int64))


def _next_holiday_reference(date: dt.date) -> str:
    """The nearest holiday on or after ``date`` within the window (first in HOLIDAYS' order
    on a tie), from real dates of this year and the next."""
    def black_friday(year):
        nov1 = dt.date(year, 11, 1)
        return nov1 + dt.timedelta(days=(3 - nov1.weekday()) % 7 + 22)
    best = None
    for name in calendar.HOLIDAYS[1:]:
        for year in (date.year, date.year + 1):
            day = black_friday(year) if name == "black_friday" else dt.date(
                year, *next((m, d) for n, m, d in calendar.FIXED_HOLIDAYS if n == name))
            ahead = (day - date).days
            if ahead >= 0:
                if ahead <= calendar.HOLIDAY_WINDOW_DAYS and (best is None or ahead < best[0]):
                    best = (ahead, name)
                break
    return "none" if best is None else best[1]


def test_holiday_of_every_day_matches_a_calendar_of_real_dates():
    days = [dt.date(2019, 1, 1) + dt.timedelta(days=n) for n in range(8 * 366)]
    stamps = [int(dt.datetime(d.year, d.month, d.day, 12, tzinfo=dt.timezone.utc).timestamp())
              for d in days]
    got = calendar.calendar_features(tf.constant(stamps, tf.int64))["holiday"].numpy()
    assert [calendar.HOLIDAYS[i] for i in got] == [_next_holiday_reference(d) for d in days]
