"""Calendar features of a unix timestamp, in TensorFlow ops (usable in Transform and serving).

Gives the context signals of STARS §4.4 that a timestamp alone carries: hour of
day, day of week, week of year (for the learnable time-of-year embedding τ(t)),
month, and a holiday flag: which e-commerce holiday, if any, falls within the
next ``HOLIDAY_WINDOW_DAYS`` days (demand for holiday items peaks *before* the
day).  All in UTC; the ids are small non-negative ints ready for embeddings.
"""
import numpy as np
import tensorflow as tf

HOUR_BUCKETS = 24
DAY_OF_WEEK_BUCKETS = 7
WEEK_OF_YEAR_BUCKETS = 53
MONTH_BUCKETS = 12
HOLIDAY_WINDOW_DAYS = 21
# (name, month, day); Black Friday moves and is computed separately.
FIXED_HOLIDAYS = (("new_year", 1, 1), ("valentines", 2, 14), ("mothers_day_uk", 3, 15),
                  ("independence_day", 7, 4), ("halloween", 10, 31), ("christmas", 12, 25))
HOLIDAYS = ("none",) + tuple(h[0] for h in FIXED_HOLIDAYS) + ("black_friday",)
HOLIDAY_BUCKETS = len(HOLIDAYS)
_CUMULATIVE_DAYS = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)


def _floordiv(a, b):
    return tf.math.floordiv(a, tf.constant(b, a.dtype))


def civil_from_days(days):
    """Days since 1970-01-01 -> (year, month 1-12, day 1-31); H. Hinnant's algorithm."""
    z = days + 719468
    era = _floordiv(z, 146097)
    doe = z - era * 146097
    yoe = _floordiv(doe - _floordiv(doe, 1460) + _floordiv(doe, 36524)
                    - _floordiv(doe, 146096), 365)
    doy = doe - (365 * yoe + _floordiv(yoe, 4) - _floordiv(yoe, 100))
    mp = _floordiv(5 * doy + 2, 153)
    day = doy - _floordiv(153 * mp + 2, 5) + 1
    month = tf.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + tf.cast(month <= 2, days.dtype)
    return year, month, day


def _is_leap(year):
    return tf.logical_and(tf.equal(year % 4, 0),
                          tf.logical_or(tf.not_equal(year % 100, 0), tf.equal(year % 400, 0)))


def day_of_year(year, month, day):
    """0-based day of the year."""
    cumulative = tf.gather(tf.constant(_CUMULATIVE_DAYS, year.dtype), month - 1)
    leap_shift = tf.cast(tf.logical_and(_is_leap(year), month > 2), year.dtype)
    return cumulative + day - 1 + leap_shift


def _black_friday_doy(year, leap):
    """Day after the fourth Thursday of November, as a 0-based day of year."""
    nov1 = _CUMULATIVE_DAYS[10] + leap
    # Days since epoch of Nov 1: from Jan 1 of `year` (days_from_civil inverse).
    y = year - 1
    jan1 = 365 * (year - 1970) + (_floordiv(y, 4) - _floordiv(y, 100) + _floordiv(y, 400)) - 477
    weekday_nov1 = (jan1 + nov1 + 3) % 7  # Monday = 0
    first_thursday = (3 - weekday_nov1) % 7
    return nov1 + first_thursday + 21 + 1


# Day of year of each fixed holiday in a common year, and whether a leap day precedes it.
_FIXED_DOY = tuple(_CUMULATIVE_DAYS[m - 1] + d - 1 for _, m, d in FIXED_HOLIDAYS)
_AFTER_FEBRUARY = tuple(int(m > 2) for _, m, _ in FIXED_HOLIDAYS)


def calendar_features(timestamps):
    """int64 unix seconds (any shape) -> dict of int64 calendar ids of the same shape.

    The holidays are one vectorised step over a trailing holiday axis, not a loop: the
    serving signatures run this for every request and every event, and TensorFlow's
    cost per call is its op count (a loop of seven holidays made the context offset
    and the encoder's calendar ~450 ops per call)."""
    ts = tf.cast(timestamps, tf.int64)
    days = _floordiv(ts, 86400)
    hour = _floordiv(ts - days * 86400, 3600)
    year, month, day = civil_from_days(days)
    doy = day_of_year(year, month, day)
    leap = tf.cast(_is_leap(year), tf.int64)
    holiday_doy = tf.concat([
        tf.constant(_FIXED_DOY, tf.int64) + leap[..., None] * tf.constant(_AFTER_FEBRUARY,
                                                                         tf.int64),
        _black_friday_doy(year, leap)[..., None]], axis=-1)
    ahead = holiday_doy - doy[..., None]
    ahead = tf.where(ahead < 0, ahead + (365 + leap)[..., None], ahead)
    # the nearest holiday ahead; on a tie the first in HOLIDAYS' order
    nearest = tf.argmin(ahead, axis=-1, output_type=tf.int64) + 1
    holiday = tf.where(tf.reduce_min(ahead, axis=-1) <= HOLIDAY_WINDOW_DAYS, nearest,
                       tf.zeros_like(nearest))
    return {
        "hour": hour,
        "day_of_week": (days + 3) % 7,
        "week_of_year": tf.minimum(_floordiv(doy, 7), WEEK_OF_YEAR_BUCKETS - 1),
        "month": month - 1,
        "holiday": holiday,
    }


def carries_time_of_day(timestamps) -> bool:
    """Whether unix timestamps (numpy-like, seconds) tell the time of day.

    False when every event falls on the same second of its day: day-granular dates
    such as Amazon's review dates, which mark when a review was written rather than
    when the shopper bought, so their hour is constant and their weekday, week and
    holiday are a proxy's.  ``stars eval`` switches calendar context off for such
    data (on Beauty it cost NDCG@10 on the validation target: BUILD_NOTES.md).
    """
    seconds = np.asarray(timestamps, np.int64).reshape(-1)
    return seconds.size > 0 and np.unique(np.mod(seconds, 86400)).size > 1
