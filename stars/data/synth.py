"""``stars data synth``: deterministic synthetic e-commerce data in the data contract.

The generator plants every structure STARS is meant to exploit, and records it in
``synth_truth.json`` so tests can check it is really there:

* a category -> subclass taxonomy whose titles and descriptions share words, so
  text similarity means something (:mod:`stars.data.synth_vocabulary`);
* attribute words (organic, vegan, ...) in the text that users have tastes for;
* users with static features (age, tenure, e-mail domain, region, device) that
  shift their category taste;
* sessions with a view -> add-to-cart -> purchase funnel on pages (same-page
  impressions), whose intent is usually the user's long-term taste but often a
  short-term one (a gift, an errand) that may carry over to the next session;
* more sessions at weekends and in the evening; holiday items whose demand
  peaks in the three weeks before their holiday;
* items launched late (cold start) and a "new arrival" boost; stock and regions.

Memory is bounded by the catalogue: users are generated and written one at a
time, each from its own seeded stream, so any size streams to disk.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import time
from pathlib import Path

import numpy as np

from stars.data import synth_vocabulary as V

DAY = 86400
START = int(datetime.datetime(2023, 8, 1, tzinfo=datetime.timezone.utc).timestamp())
END = int(datetime.datetime(2024, 1, 10, tzinfo=datetime.timezone.utc).timestamp())
SEASON_DAYS = 21  # holiday demand ramps up over the three weeks before the day


@dataclasses.dataclass(frozen=True)
class Size:
    users: int
    items: int


SIZES = {
    "tiny": Size(150, 150),
    "small": Size(2_000, 800),
    "demo": Size(4_000, 1_500),
    "medium": Size(100_000, 20_000),
    "large": Size(1_000_000, 100_000),
    # benchmarks/serving.py: serving latency over 10k- and 100k-item catalogues
    "bench10k": Size(5_000, 10_000),
    "bench100k": Size(5_000, 100_000),
}


@dataclasses.dataclass(frozen=True)
class Behaviour:
    """The planted behaviour, recorded in the truth file."""
    holiday_item_share: float = 0.10
    cold_start_share: float = 0.12
    cold_start_after: float = 0.6       # cold items launch in the last 40% of the span
    new_arrival_boost: float = 2.0      # for 14 days after launch
    season_peak: float = 10.0           # holiday item weight on the day, vs 1 at season start
    off_season: float = 0.2             # holiday item weight outside its season
    holiday_intent: float = 0.35        # P(holiday session) on the holiday, ramping up
    carry_over_intent: float = 0.3      # P(next session continues the last intent)
    short_term_intent: float = 0.25     # P(session intent is not the user's taste)
    weekday_acceptance: float = 0.65    # weekday sessions kept: weekends ~1.5x per day
    liked_attribute_boost: float = 4.0
    out_of_region: float = 0.05
    cart_rate: float = 0.3
    purchase_rate: float = 0.55
    direct_view_rate: float = 0.1       # views from search, not from a page
    out_of_stock_share: float = 0.07


def _holiday_times() -> dict:
    year = datetime.datetime.fromtimestamp(START, datetime.timezone.utc).year
    out = {}
    for name, ((month, day), _) in V.HOLIDAYS.items():
        t = int(datetime.datetime(year, month, day, 12, tzinfo=datetime.timezone.utc).timestamp())
        out[name] = t if START <= t <= END else t + 365 * DAY
    return out


class Catalogue:
    """The items, as column arrays plus per-subclass and per-holiday indices."""

    def __init__(self, n_items: int, seed: int, behaviour: Behaviour):
        rng = np.random.default_rng((seed, 0))
        self.categories = list(V.TAXONOMY)
        self.subclasses = [(c, s) for c in self.categories for s in V.TAXONOMY[c]]
        self.holidays = list(V.HOLIDAYS)
        self.holiday_time = np.array([_holiday_times()[h] for h in self.holidays])
        self.attributes = sorted({a for attrs in V.ATTRIBUTES.values() for a in attrs})
        attr_index = {a: i for i, a in enumerate(self.attributes)}
        n = n_items
        # every subclass gets items, then the rest at random
        n_sub = len(self.subclasses)
        sub = np.concatenate([np.arange(n_sub),
                              rng.integers(0, n_sub, max(0, n - n_sub))])[:n]
        rng.shuffle(sub)
        self.subclass = sub
        self.category = np.array([self.categories.index(self.subclasses[s][0]) for s in sub])
        self.holiday = np.where(rng.random(n) < behaviour.holiday_item_share,
                                rng.integers(0, len(self.holidays), n), -1)
        cold = (rng.random(n) < behaviour.cold_start_share) & (self.holiday < 0)
        span = END - START
        self.launch = np.where(
            cold, rng.integers(START + int(behaviour.cold_start_after * span), END - 2 * DAY, n),
            START - rng.integers(DAY, 365 * DAY, n))
        self.quality = rng.lognormal(0.0, 1.0, n)
        self.region_mask = np.where(rng.random(n) < 0.6, (1 << len(V.REGIONS)) - 1,
                                    rng.integers(1, 1 << len(V.REGIONS), n))
        self.stock = np.where(rng.random(n) < behaviour.out_of_stock_share, 0,
                              np.round(rng.lognormal(3.5, 1.0, n)).astype(int) + 1)
        self.ids = [f"p{i:06d}" for i in range(n)]
        self.attr_mask = np.zeros(n, dtype=np.int64)
        self.rows = []
        log_price = np.zeros(n)
        for i in range(n):
            category, subclass = self.subclasses[sub[i]]
            n_attrs = rng.choice(3, p=[0.35, 0.45, 0.2])
            attrs = sorted(rng.choice(V.ATTRIBUTES[category], n_attrs, replace=False).tolist())
            for a in attrs:
                self.attr_mask[i] |= 1 << attr_index[a]
            price = float(np.exp(2.0 + 0.35 * (sub[i] % 5) + rng.normal(0, 0.5)))
            price *= 1.8 if "premium" in attrs else 1.0
            log_price[i] = np.log(price)
            self.rows.append(self._item_row(rng, i, category, subclass, attrs, price))
        # price position within the subclass, matched against the user's price taste
        self.price_z = np.zeros(n)
        for s in range(len(self.subclasses)):
            m = sub == s
            self.price_z[m] = (log_price[m] - log_price[m].mean()) / (log_price[m].std() + 1e-6)
        self._by_subclass = [self._by_launch(np.flatnonzero(sub == s))
                             for s in range(len(self.subclasses))]
        self._by_holiday = [self._by_launch(np.flatnonzero(self.holiday == h))
                            for h in range(len(self.holidays))]

    def _by_launch(self, idx):
        idx = idx[np.argsort(self.launch[idx], kind="stable")]
        return idx, self.launch[idx]

    def _item_row(self, rng, i, category, subclass, attrs, price) -> list:
        nouns, words = V.TAXONOMY[category][subclass]
        noun = str(rng.choice(nouns))
        brand = str(rng.choice(V.BRANDS[category]))
        theme = V.HOLIDAYS[self.holidays[self.holiday[i]]][1] if self.holiday[i] >= 0 else []
        title = [brand]
        if theme:
            title.append(str(rng.choice(theme[:2])))
        title += [V.SURFACE[a] for a in attrs]
        if category in ("Home", "Electronics", "Sports") and rng.random() < 0.5:
            title.append(str(rng.choice(V.COLOURS)))
        title += [noun.title(), str(rng.choice(V.VARIANTS[category]))]
        w = rng.choice(words, 2, replace=False)
        description = f"{noun.capitalize()} by {brand}: {w[0]}, {w[1]} and made to last."
        if attrs:
            description += " " + ", ".join(V.SURFACE[a].lower() for a in attrs).capitalize() + "."
        if theme:
            description += f" A {theme[1].lower()} {theme[0]} favourite, {theme[2].lower()} themed."
        regions = "" if self.region_mask[i] == (1 << len(V.REGIONS)) - 1 else "|".join(
            r for k, r in enumerate(V.REGIONS) if self.region_mask[i] >> k & 1)
        merchant_tags = "|".join(attrs) if attrs and rng.random() < 0.3 else ""
        return [self.ids[i], " ".join(title), description, brand,
                f"{category} > {subclass.replace('_', ' ').title()}",
                f"{category.lower()}/{subclass}",
                f"{price:.2f}", int(self.stock[i]), regions, merchant_tags]

    def available(self, pool, t: int) -> np.ndarray:
        idx, launch = pool
        return idx[:np.searchsorted(launch, t, side="right")]

    def subclass_pool(self, s: int, t: int) -> np.ndarray:
        return self.available(self._by_subclass[s], t)

    def holiday_pool(self, h: int, t: int) -> np.ndarray:
        return self.available(self._by_holiday[h], t)

    def season_closeness(self, t: int) -> np.ndarray:
        """Per holiday: 0 outside its season, rising to 1 on the day."""
        days_to = (self.holiday_time - t) / DAY
        return np.where((days_to >= -1) & (days_to <= SEASON_DAYS),
                        1 - np.clip(days_to, 0, SEASON_DAYS) / SEASON_DAYS, 0.0)


@dataclasses.dataclass
class Counts:
    events: dict = dataclasses.field(
        default_factory=lambda: {e: 0 for e in ("view", "add_to_cart", "purchase")})
    sessions: int = 0
    pages: int = 0
    intents: dict = dataclasses.field(default_factory=lambda: {
        "taste": 0, "short_term": 0, "carried_over": 0, "holiday": 0})


class ShopperSimulator:
    """One user's static features, tastes and sessions."""

    _HOUR_WEIGHTS = np.array([1, 1, 1, 1, 1, 1, 2, 3, 4, 4, 4, 5, 6, 5, 4, 4, 5, 6, 8, 10, 11, 10,
                              6, 3], dtype=float)

    def __init__(self, catalogue: Catalogue, behaviour: Behaviour):
        self.cat, self.b = catalogue, behaviour
        self._hours = self._HOUR_WEIGHTS / self._HOUR_WEIGHTS.sum()
        self._sub_category = np.array([catalogue.categories.index(c)
                                       for c, _ in catalogue.subclasses])
        self._marginal = np.ones(len(catalogue.subclasses)) / len(catalogue.subclasses)

    def user(self, u: int, seed: int):
        rng = np.random.default_rng((seed, 1, u))
        age = int(rng.integers(18, 80))
        band = next(k for k, (lo, hi) in enumerate(V.AGE_BANDS) if lo <= age < hi)
        region = int(rng.choice(len(V.REGIONS), p=V.REGION_WEIGHTS))
        features = {"user_id": f"u{u:07d}", "age": age,
                    "tenure_days": int(rng.exponential(400)) if rng.random() > 0.05 else "",
                    "email_domain": str(rng.choice(V.EMAIL_DOMAINS)),
                    "region": V.REGIONS[region], "device": str(rng.choice(V.DEVICES))}
        bias = np.array([V.AGE_CATEGORY_BIAS[band].get(c, 1.0) for c in self.cat.categories])
        category_taste = rng.dirichlet(np.full(len(bias), 0.5)) * bias
        taste = category_taste[self._sub_category] * rng.dirichlet(
            np.full(len(self._sub_category), 0.7))
        taste /= taste.sum()
        top_category = self.cat.categories[int(np.argmax(category_taste))]
        liked = rng.choice(V.ATTRIBUTES[top_category], rng.integers(1, 3), replace=False)
        liked_mask = sum(1 << self.cat.attributes.index(a) for a in liked)
        shopper = dict(rng=rng, taste=taste, liked_mask=liked_mask, region=region,
                       price_z=rng.normal(0, 0.8), user_id=features["user_id"])
        return features, shopper

    def _session_times(self, rng):
        n_sessions = min(30, 1 + int(rng.geometric(0.3)))
        t = START + rng.random() * (END - START - 7 * DAY)
        for _ in range(n_sessions):
            while True:  # weekday sessions are thinned: more shopping at weekends
                day = int(t // DAY)
                weekday = datetime.datetime.fromtimestamp(day * DAY,
                                                          datetime.timezone.utc).weekday()
                if weekday >= 5 or rng.random() < self.b.weekday_acceptance:
                    break
                t += DAY
            start = max(int(t), day * DAY + int(rng.choice(24, p=self._hours)) * 3600
                        + int(rng.integers(3600)))
            if start >= END:
                return
            yield start
            t = start + max(3600.0, rng.exponential(10 * DAY))

    def _intent(self, rng, t, last, counts):
        closeness = self.cat.season_closeness(t)
        h = int(np.argmax(closeness))
        if closeness[h] > 0 and rng.random() < self.b.holiday_intent * closeness[h]:
            counts.intents["holiday"] += 1
            return ("holiday", h)
        if last is not None and rng.random() < self.b.carry_over_intent:
            counts.intents["carried_over"] += 1
            return last
        if rng.random() < self.b.short_term_intent:
            counts.intents["short_term"] += 1
            return ("subclass", int(rng.choice(len(self._marginal), p=self._marginal)))
        counts.intents["taste"] += 1
        return ("subclass", int(rng.choice(len(self._sub_category), p=self._shopper["taste"])))

    def _weights(self, pool, t) -> np.ndarray:
        c, b, s = self.cat, self.b, self._shopper
        w = c.quality[pool].copy()
        hol = c.holiday[pool]
        seasonal = hol >= 0
        if seasonal.any():
            closeness = c.season_closeness(t)[hol[seasonal]]
            w[seasonal] *= np.where(closeness > 0, 1 + (b.season_peak - 1) * closeness,
                                    b.off_season)
        w *= np.where(c.attr_mask[pool] & s["liked_mask"], b.liked_attribute_boost, 1.0)
        w *= np.where(c.region_mask[pool] >> s["region"] & 1, 1.0, b.out_of_region)
        w *= np.exp(-0.5 * (c.price_z[pool] - s["price_z"]) ** 2) + 0.3
        w *= np.where(t - c.launch[pool] < 14 * DAY, b.new_arrival_boost, 1.0)
        return w / w.sum()

    def sessions(self, shopper, counts: Counts):
        """Yields (interaction rows, impression rows) per session."""
        rng, self._shopper = shopper["rng"], shopper
        uid, last, busy_until = shopper["user_id"], None, 0
        for k, t in enumerate(self._session_times(rng)):
            t = max(t, busy_until + 1800)  # sessions never overlap
            intent = self._intent(rng, t, last, counts)
            last = intent
            pool = (self.cat.holiday_pool if intent[0] == "holiday" else
                    self.cat.subclass_pool)(intent[1], t)
            if len(pool) == 0:
                continue
            session = f"s{uid[1:]}_{k:03d}"
            events: list = []
            pages: list = []
            counts.sessions += 1
            for p in range(1 + int(rng.random() < 0.5)):
                weights = self._weights(pool, t)
                picked = rng.choice(len(pool), min(len(pool), int(rng.integers(6, 13))),
                                    replace=False, p=weights)
                shown = pool[picked]
                page_id = f"pg{uid[1:]}_{k:03d}_{p}"
                pages.append([page_id, "|".join(self.cat.ids[i] for i in shown)])
                counts.pages += 1
                # attention falls with the position on the page
                attention = weights[picked] / (1.0 + 0.2 * np.arange(len(shown)))
                n_views = min(len(shown), 1 + int(rng.binomial(3, 0.4)))
                viewed = rng.choice(shown, n_views, replace=False, p=attention / attention.sum())
                for item in viewed:
                    t = self._emit(events, counts, uid, item, t, "view", session, page_id, rng)
                    if rng.random() < self.b.cart_rate:
                        t = self._emit(events, counts, uid, item, t, "add_to_cart", session,
                                       page_id, rng)
                        if rng.random() < self.b.purchase_rate:
                            t = self._emit(events, counts, uid, item, t, "purchase", session,
                                           page_id, rng)
            if rng.random() < self.b.direct_view_rate:
                item = rng.choice(pool, p=self._weights(pool, t))
                t = self._emit(events, counts, uid, item, t, "view", session, "", rng)
            busy_until = t
            yield events, pages

    def _emit(self, events, counts, uid, item, t, event, session, page_id, rng) -> int:
        t = int(t + rng.integers(10, 180))
        events.append([uid, self.cat.ids[item], t, event, session, page_id])
        counts.events[event] += 1
        return t


def _writer(path: Path, header):
    f = open(path, "w", newline="")
    w = csv.writer(f)
    w.writerow(header)
    return f, w


def generate(out_dir, size: str = "tiny", seed: int = 0,
             behaviour: Behaviour = Behaviour()) -> dict:
    """Writes items, users, interactions and impressions CSVs plus synth_truth.json."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    started = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = SIZES[size]
    catalogue = Catalogue(spec.items, seed, behaviour)
    f, w = _writer(out / "items.csv", ["item_id", "title", "description", "brand",
                                        "category_path", "subclass", "price", "stock",
                                        "regions", "tags"])
    with f:
        w.writerows(catalogue.rows)
    simulator, counts = ShopperSimulator(catalogue, behaviour), Counts()
    files = [_writer(out / "users.csv", ["user_id", "age", "tenure_days", "email_domain",
                                          "region", "device"]),
             _writer(out / "interactions.csv", ["user_id", "item_id", "timestamp", "event_type",
                                                "session_id", "page_id"]),
             _writer(out / "impressions.csv", ["page_id", "item_ids"])]
    (_, users), (_, interactions), (_, impressions) = files
    try:
        for u in range(spec.users):
            features, shopper = simulator.user(u, seed)
            users.writerow(list(features.values()))
            for events, pages in simulator.sessions(shopper, counts):
                interactions.writerows(events)
                impressions.writerows(pages)
    finally:
        for f, _ in files:
            f.close()
    truth = {
        "size": size, "seed": seed, "start": START, "end": END,
        "behaviour": dataclasses.asdict(behaviour),
        "holidays": {h: {"time": int(catalogue.holiday_time[k]),
                         "season_start": int(catalogue.holiday_time[k] - SEASON_DAYS * DAY),
                         "season_end": int(catalogue.holiday_time[k] + DAY),
                         "items": [catalogue.ids[i]
                                   for i in np.flatnonzero(catalogue.holiday == k)]}
                     for k, h in enumerate(catalogue.holidays)},
        "cold_start_items": {catalogue.ids[i]: int(catalogue.launch[i])
                             for i in np.flatnonzero(catalogue.launch > START)},
        "counts": {"users": spec.users, "items": spec.items, "sessions": counts.sessions,
                   "pages": counts.pages, "events": counts.events, "intents": counts.intents},
    }
    with open(out / "synth_truth.json", "w") as f:
        json.dump(truth, f, indent=1)
    return {"out": str(out), "size": size, "seed": seed, "users": spec.users,
            "items": spec.items, "events": sum(counts.events.values()), "pages": counts.pages,
            "wall_s": round(time.time() - started, 1)}
