"""The words the near-miss guard knows, read once from ``workers/guard_data/``.

The lists are data (``lexicon.toml``, written for infermq, and two tables distilled from
WordNet 3.0 by ``bench/data/build_antonyms.py``), shipped as package data so that a worker
image without ``bench/`` reads the same words; ``workers/cache_guard.py`` reads text with
them. An antonym pair puts two words on opposite poles of one axis; a word already on an axis
brings its partner onto it, and inflections (opens, opening) share their base word's axis.
Words here are never taken for names.
"""

from __future__ import annotations

import gzip
import importlib.resources
import re
import tomllib
from typing import Any


def _data(name: str) -> bytes:
    return (importlib.resources.files("workers") / "guard_data" / name).read_bytes()


def _table(name: str) -> list[tuple[str, str]]:
    """A gzipped two-column table: ``#`` lines carry WordNet's notice, the rest ``a<TAB>b``."""
    lines = gzip.decompress(_data(name)).decode().splitlines()
    return [(left, right) for left, right in (
        line.split("\t") for line in lines if line and not line.startswith("#"))]


_LEXICON: dict[str, Any] = tomllib.loads(_data("lexicon.toml").decode())
_WORDS: dict[str, list[str]] = _LEXICON["words"]

NUMBER_WORDS: dict[str, int] = _LEXICON["number_words"]
MONTHS: list[str] = _WORDS["months"]
MONTH_OF = {m: i + 1 for i, m in enumerate(MONTHS)} | {
    m[:3]: i + 1 for i, m in enumerate(MONTHS) if m != "may"} | {"sept": 9}
WEEKDAYS: list[str] = _WORDS["weekdays"]
WEEKDAY_OF = {d: i for i, d in enumerate(WEEKDAYS)} | {d[:3]: i for i, d in enumerate(WEEKDAYS)}

# unit spelling -> canonical unit (multi-word spellings are joined with '_' before lookup)
UNITS: dict[str, str] = {
    spelling: canon for canon, spellings in _LEXICON["units"].items()
    for spelling in spellings.split()}
UNITS_AFTER_NUMBER_ONLY = set(_WORDS["units_after_number_only"])
NEGATIONS = set(_WORDS["negations"])
PHRASES: dict[str, str] = dict(_LEXICON["phrases"])
REORDER = [(re.compile(pattern), repl) for pattern, repl in _LEXICON["rewrites"]["reorder"]]
CONTRACTIONS = [(pattern, repl) for pattern, repl in _LEXICON["rewrites"]["contractions"]]
PASSIVE_AUX = set(_WORDS["passive_aux"])
SYNONYMS: dict[str, str] = _LEXICON["synonyms"]
FRAMING = frozenset(_WORDS["framing"])
ORDER_MARKERS = set(_WORDS["order_markers"])
UNIT_CONTEXT = set(_WORDS["unit_context"])
OPERATOR_WORDS: dict[str, str] = _LEXICON["operator_words"]
NEGATIVE_PREFIXES = tuple(_WORDS["negative_prefixes"])
MIRROR_PREFIXES = tuple(_WORDS["mirror_prefixes"])
RELATIONAL = frozenset(_WORDS["relational"])
PREFIX_STEMS_SEEN = set(_WORDS["prefix_stems_seen"])
# The tokenizer, not a word list: hyphenated identifiers, numbers, words, signs.
TOKEN = re.compile(
    r"[a-z]\+\+|[a-z]+(?:-\d+)+\b|(?<![\w.])[-+]?\d+(?:[.,:]\d+)*(?:st|nd|rd|th)?|[a-z_°][a-z0-9_°]*(?:'[a-z]+)?|[#$€£¥%+*/=<>^@-]"
)

ANTONYMS: dict[str, tuple[str, int]] = {}


def _add_antonym_pair(left: str, right: str) -> None:
    """Puts both words on one axis; a word already on an axis brings its partner onto it."""
    if left in ANTONYMS and right not in ANTONYMS:
        axis, pole = ANTONYMS[left]
        ANTONYMS[right] = (axis, 1 - pole)
    elif right in ANTONYMS and left not in ANTONYMS:
        axis, pole = ANTONYMS[right]
        ANTONYMS[left] = (axis, 1 - pole)
    elif left not in ANTONYMS:
        ANTONYMS[left], ANTONYMS[right] = (f"{left}/{right}", 0), (f"{left}/{right}", 1)


# Antonyms are looked up after synonyms are folded (hated -> disliked), so fold the lexicon
# the same way; inflections (opens, opening) sit on their base word's axis.
for _pair in _WORDS["antonym_pairs"]:
    _add_antonym_pair(*(SYNONYMS.get(word, word) for word in _pair.split()))
for _word, _pole in list(ANTONYMS.items()):
    _stem = _word[:-1] if _word.endswith("e") else _word
    for _form in (_word + "s", _word + "es", _word + "d", _word + "ed", _stem + "ing"):
        ANTONYMS.setdefault(_form, _pole)

LEXICON = (set(NUMBER_WORDS) | set(MONTH_OF) | set(WEEKDAY_OF) | set(UNITS)
           | set(ANTONYMS) | set(SYNONYMS) | FRAMING | NEGATIONS | ORDER_MARKERS
           | set(_WORDS["task_verbs"]))

# WordNet's antonyms: word -> the words opposite to it.
OPPOSITES: dict[str, frozenset[str]] = {}
for _left, _right in _table("wordnet_antonyms.tsv.gz"):
    OPPOSITES[_left] = OPPOSITES.get(_left, frozenset()) | {_right}
    OPPOSITES[_right] = OPPOSITES.get(_right, frozenset()) | {_left}
IRREGULAR = dict(_table("wordnet_irregular.tsv.gz"))
# Multi-word unit spellings ("square feet") are folded to their joined form before lookup.
PHRASES.update({unit.replace("_", " "): unit for unit in UNITS if "_" in unit})
