"""The controlled vocabulary V of attribute tags t_i (spec §4.1).

Each tag has a canonical name (``gluten_free``), ``synonyms`` that are safe to
look for in product text ("gluten free", "no gluten"), ``aliases`` accepted only
as a whole tag from a merchant or an LLM because they are ambiguous in free text
("GF", "eco"; listing the name itself there keeps it out of text search too),
and a description for LLM prompts.  Matching ignores case,
spaces, hyphens and punctuation: "Gluten-Free", "gluten free" and "GLUTENFREE"
are one tag.

Users supply their own V as JSON (``{"tags": [{"name", "synonyms", "aliases",
"description"}]}``) or text, one tag per line::

    # name | synonyms | aliases | description   (trailing fields optional)
    gluten_free | gluten free, no gluten | gf | contains no gluten
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import unicodedata
from typing import Iterable, Iterator, Optional

from stars import storage

_NAME = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)*$")


def normalise_key(raw: str) -> str:
    """Lower case, letters and digits only: the form in which tags are compared."""
    text = unicodedata.normalize("NFKC", str(raw)).lower()
    return "".join(ch for ch in text if ch.isalnum())


@dataclasses.dataclass(frozen=True)
class Tag:
    name: str
    synonyms: tuple = ()
    aliases: tuple = ()
    description: str = ""

    def __post_init__(self):
        if not _NAME.match(self.name):
            raise ValueError(f"tag name {self.name!r} must be lower_snake_case "
                             "letters and digits")
        object.__setattr__(self, "synonyms", tuple(self.synonyms))
        object.__setattr__(self, "aliases", tuple(self.aliases))


class TagVocabulary:
    """An ordered set of tags; the order is the multi-hot index order."""

    def __init__(self, tags: Iterable[Tag]):
        self.tags = tuple(tags)
        self._by_key: dict[str, str] = {}
        for tag in self.tags:
            for form in (tag.name, *tag.synonyms, *tag.aliases):
                key = normalise_key(form)
                if not key:
                    raise ValueError(f"tag {tag.name!r}: empty form {form!r}")
                other = self._by_key.setdefault(key, tag.name)
                if other != tag.name:
                    raise ValueError(f"{form!r} names both tag {other!r} and {tag.name!r}")
        self.names = tuple(t.name for t in self.tags)
        self._index = {name: i for i, name in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.tags)

    def __iter__(self) -> Iterator[Tag]:
        return iter(self.tags)

    def __contains__(self, name) -> bool:
        return name in self._index

    def __eq__(self, other) -> bool:
        return isinstance(other, TagVocabulary) and self.tags == other.tags

    def index(self, name: str) -> int:
        return self._index[name]

    def normalise(self, raw: str) -> Optional[str]:
        """The canonical name for a tag as written anywhere; None when not in V."""
        return self._by_key.get(normalise_key(raw))

    @property
    def digest(self) -> str:
        """Short hash of the vocabulary, for cache keys of taggers that use it."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True)
                              .encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        return {"tags": [{"name": t.name, "synonyms": list(t.synonyms),
                          "aliases": list(t.aliases), "description": t.description}
                         for t in self.tags]}

    @classmethod
    def from_dict(cls, data) -> "TagVocabulary":
        """From ``{"tags": [...]}`` or the bare list of tag objects."""
        entries = data["tags"] if isinstance(data, dict) else data
        return cls(Tag(d["name"], tuple(d.get("synonyms", ())), tuple(d.get("aliases", ())),
                       d.get("description", "")) for d in entries)

    def save(self, path) -> None:
        """Writes JSON for a ``.json`` path, the text format otherwise."""
        path = os.fspath(path)
        if path.endswith(".json"):
            storage.write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")
            return
        lines = ["# name | synonyms | aliases | description"]
        for t in self.tags:
            lines.append(" | ".join([t.name, ", ".join(t.synonyms), ", ".join(t.aliases),
                                     t.description]).rstrip(" |"))
        storage.write_text(path, "\n".join(lines) + "\n")

    @classmethod
    def load(cls, path) -> "TagVocabulary":
        """Reads a vocabulary written by :meth:`save` or by hand (JSON or text)."""
        path = os.fspath(path)
        text = storage.read_text(path)
        if path.endswith(".json"):
            try:
                return cls.from_dict(json.loads(text))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}: not a tag vocabulary ({e!r})") from e
        tags = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            fields = [f.strip() for f in line.split("|")] + ["", "", ""]
            try:
                tags.append(Tag(fields[0], _split(fields[1]), _split(fields[2]), fields[3]))
            except ValueError as e:
                raise ValueError(f"{path}, line {number}: {e}") from None
        return cls(tags)


def _split(text: str) -> tuple:
    """``"a, b,, c"`` -> ``("a", "b", "c")``."""
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _tag(name, synonyms, aliases="", description=""):
    return Tag(name, _split(synonyms), _split(aliases), description)


# Names and synonyms are searched in product text on word boundaries, so each
# must be unambiguous there; ambiguous forms are aliases (whole tags only).
DEFAULT = TagVocabulary([
    _tag("organic", "organic, certified organic, usda organic", "bio",
         "made with certified organic ingredients"),
    _tag("natural", "all natural, 100% natural, natural ingredients", "natural",
         "made from natural ingredients"),
    _tag("vegan", "vegan", "plant based", "contains no animal products"),
    _tag("gluten_free", "gluten free, no gluten, without gluten", "gf",
         "contains no gluten"),
    _tag("dairy_free", "dairy free, non dairy, lactose free", "", "contains no dairy"),
    _tag("sugar_free", "sugar free, sugarless, zero sugar", "no sugar",
         "contains no sugar"),
    _tag("non_gmo", "non gmo, gmo free", "", "made without genetically modified ingredients"),
    _tag("cruelty_free", "cruelty free, not tested on animals, no animal testing, "
         "leaping bunny", "", "not tested on animals"),
    _tag("fragrance_free", "fragrance free, unscented, unfragranced, perfume free, "
         "scent free", "", "no added fragrance"),
    _tag("paraben_free", "paraben free, parabens free, no parabens", "", "contains no parabens"),
    _tag("sulfate_free", "sulfate free, sulphate free, sls free, no sulfates", "",
         "contains no sulfates"),
    _tag("hypoallergenic", "hypoallergenic, hypo allergenic", "", "low allergy risk"),
    _tag("sensitive_skin", "sensitive skin, for sensitive", "sensitive",
         "made for sensitive skin"),
    _tag("sun_protection", "spf, sunscreen, sunblock, sun protection", "uv protection",
         "protects against the sun"),
    _tag("eco_friendly", "eco friendly, environmentally friendly, earth friendly, "
         "biodegradable, compostable", "eco, sustainable",
         "made or packaged with low environmental impact"),
    _tag("handmade", "handmade, hand made, handcrafted, hand crafted", "artisan",
         "made by hand"),
    _tag("waterproof", "waterproof, water proof", "", "resists water"),
    _tag("wireless", "wireless, cordless, bluetooth", "", "works without a cable"),
    _tag("rechargeable", "rechargeable", "", "has a rechargeable battery"),
    _tag("kids", "kids, kid, children, childrens, child, toddler, toddlers",
         "junior, for kids", "made for children"),
    _tag("baby", "baby, babies, infant, infants, newborn", "", "made for babies"),
    _tag("men", "men, mens, for him", "male", "made for men"),
    _tag("women", "women, womens, ladies, for her", "female", "made for women"),
    _tag("unisex", "unisex", "", "made for anyone"),
    _tag("premium", "premium, luxury, deluxe", "high end", "premium or luxury quality"),
    _tag("travel_size", "travel size, travel sized, mini size, trial size", "travel",
         "small size for travel"),
    _tag("gift_set", "gift set, gift box, gift pack", "gift", "packaged as a gift"),
    _tag("value_pack", "value pack, multipack, multi pack, twin pack, family size, "
         "bulk pack", "bundle", "several units in one pack"),
    _tag("refillable", "refillable, refill", "", "can be refilled"),
    _tag("long_lasting", "long lasting, long wear, long wearing", "",
         "lasts long after application"),
])


def load_vocabulary(path: str) -> TagVocabulary:
    """The vocabulary at ``path``; the built-in one for an empty path."""
    return TagVocabulary.load(path) if path else DEFAULT
