"""The near-miss guard: would a cached answer to ``cached`` answer ``asked`` wrongly?

A sentence embedding blurs exactly the tokens that decide an answer: "what is 2+3" and "what is
2+4", "cancel my order" and "don't cancel my order", "did Alice pay Bob" and "did Bob pay Alice"
sit at cosine 0.9 and above. After the embedding has said "close", this module compares the two
texts' meaning-bearing tokens, canonicalized so that paraphrases still agree (digits and number
words, unit, month and date spellings, bare years, contractions, "unavailable" as "not
available"; the word lists are data in ``workers/guard_data/``, read by
``workers/guard_lexicon.py``):

- numbers must match in order; identifiers (#123, SKU-42), dates and years, units and each
  number's unit must match;
- the count of negators must match (the closed class of English negators, and verbs that deny
  their complement: "fails to", "refused to", "lacks");
- no word left unmatched on one side may be the opposite of one left unmatched on the other:
  WordNet's antonyms (``guard_data/wordnet_antonyms.tsv.gz``, ~28k pairs, inflections
  folded), or the same stem under mirror prefixes (import/export, attach/detach, lock/unlock);
- the arguments of from / than / vs (and of to, next to from) must match, and so must the role
  order of names, the agent of a passive "by" and the source of "from" read first;
- a name on one side only, two words swapped around the words that relate them ("files in A
  into B" / "in B into A"), or one content word put in place of another with the rest of the
  sentence unchanged is a near-miss: that is how a near-miss is usually written, whatever the
  word, so the guard needs no list of it.

Pure: no I/O, no Redis, no torch. It errs towards "different": a false alarm costs one engine
run, a false match serves the wrong answer.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from workers.guard_lexicon import (
    ANTONYMS,
    CONTRACTIONS,
    FRAMING,
    IRREGULAR,
    LEXICON,
    MIRROR_PREFIXES,
    MONTH_OF,
    NEGATIONS,
    NEGATIVE_PREFIXES,
    NUMBER_WORDS,
    OPERATOR_WORDS,
    OPPOSITES,
    ORDER_MARKERS,
    PASSIVE_AUX,
    PHRASES,
    PREFIX_STEMS_SEEN,
    RELATIONAL,
    REORDER,
    SYNONYMS,
    TOKEN,
    UNIT_CONTEXT,
    UNITS,
    UNITS_AFTER_NUMBER_ONLY,
    WEEKDAY_OF,
)


@dataclass(frozen=True)
class Reading:
    """What the guard reads in one text: canonical tokens and the meaning-bearing parts."""

    tokens: tuple[str, ...]
    content: tuple[str, ...]
    quantities: tuple[str, ...]  # numbers, in order
    identifiers: tuple[str, ...]  # "#123", "sku-42", "tk123": must match, in any order
    capitalized: frozenset[str]  # every token written capitalized, sentence starts included
    dates: tuple[str, ...]  # dates and weekdays
    quantity_units: tuple[tuple[str, str], ...]  # (number, unit right after it)
    units: tuple[str, ...]
    negations: int
    poles: tuple[tuple[str, int], ...]  # (antonym axis, pole) in order
    markers: tuple[tuple[str, str], ...]  # (order marker, its argument)
    names: frozenset[str]  # tokens written capitalized somewhere past the first word


def _next_is_number(raw: list[str], index: int) -> bool:
    return index + 1 < len(raw) and _number(raw[index + 1]) is not None


def _number(token: str) -> str | None:
    match = re.fullmatch(r"([-+]?\d+(?:[.,:]\d+)*)(?:st|nd|rd|th)?", token)
    if not match:
        return None
    raw = match.group(1).lstrip("+")
    if re.fullmatch(r"-?\d+(?:\.\d+)?", raw):
        value = float(raw)
        return str(int(value)) if value.is_integer() else repr(value)
    return raw


def _fold_dates(tokens: list[str]) -> list[str]:
    """Rewrites "march 3", "3 march", "the 3rd of march", "2025-03-03" as ``date:m-d[-y]``."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        t = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        month = day = year = None
        used = 0
        if dotted := re.fullmatch(r"(\d{1,2})[./](\d{1,2})[./](\d{4})", t):
            # day.month.year, the order most of the world writes
            day, month, year, used = (int(dotted.group(1)), int(dotted.group(2)),
                                      dotted.group(3), 1)
        elif (re.fullmatch(r"\d{4}", t) and nxt == "-" and i + 4 < len(tokens)
                and tokens[i + 3] == "-" and tokens[i + 2].isdigit() and tokens[i + 4].isdigit()):
            year, month, day, used = t, int(tokens[i + 2]), int(tokens[i + 4]), 5
        elif t.startswith("month:") and nxt.isdigit() and 1 <= int(nxt) <= 31:
            month, day, used = int(t[6:]), int(nxt), 2
        elif t.isdigit() and 1 <= int(t) <= 31 and nxt.startswith("month:"):
            month, day, used = int(nxt[6:]), int(t), 2
        elif (t.isdigit() and nxt == "of" and i + 2 < len(tokens)
              and tokens[i + 2].startswith("month:")):
            month, day, used = int(tokens[i + 2][6:]), int(t), 3
        if used:
            after = tokens[i + used] if i + used < len(tokens) else ""
            if year is None and re.fullmatch(r"\d{4}", after):
                year, used = after, used + 1
            out.append(f"date:{month}-{day}" + (f"-{year}" if year else ""))
            i += used
        elif (re.fullmatch(r"1[5-9]\d\d|20\d\d", t) and not nxt.startswith("unit:")
              and nxt not in OPERATOR_SET and (not out or out[-1] not in OPERATOR_SET)):
            # A bare year is a date, not an operand: "in 2002, hired 14" = "hired 14 in 2002".
            out.append(f"year:{t}")
            i += 1
        else:
            out.append(t)
            i += 1
    return out


OPERATOR_SET = frozenset(OPERATOR_WORDS.values()) | {"^", "=", "times", "divided", "x"}

# One pass over every phrase, the longest first.
_PHRASE = re.compile(
    r"(?<!\w)(?:" + "|".join(re.escape(p) for p in sorted(PHRASES, key=len, reverse=True))
    + r")(?!\w)"
)


@lru_cache(maxsize=16_384)
def read(text: str) -> Reading:
    """Canonicalizes ``text`` and pulls out what a near-miss would change."""
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2212", "-")
    original = text
    names = frozenset(
        word.lower() for word in re.findall(r"(?<=[\w,;] )[A-Z](?:[a-zA-Z]+|\+\+|#)", text)
        if word.lower() not in LEXICON
    )
    text = text.lower()
    for pattern, repl in CONTRACTIONS:
        text = re.sub(pattern, repl, text)
    for reorder, repl in REORDER:
        text = reorder.sub(repl, text)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    text = _PHRASE.sub(lambda match: f" {PHRASES[match.group(0)]} ", text)
    raw = TOKEN.findall(text)
    tokens: list[str] = []
    for index, tok in enumerate(raw):
        previous_is_number = bool(tokens) and _number(tokens[-1]) is not None
        if (number := _number(tok)) is not None:
            tokens.append(number)
        elif tok in NUMBER_WORDS:
            tokens.append(str(NUMBER_WORDS[tok]))
        elif tok in MONTH_OF and (tok != "may" or _next_is_number(raw, index)
                                   or previous_is_number):
            tokens.append(f"month:{MONTH_OF[tok]}")
        elif tok in WEEKDAY_OF:
            tokens.append(f"weekday:{WEEKDAY_OF[tok]}")
        elif tok in UNITS and (previous_is_number or tok not in UNITS_AFTER_NUMBER_ONLY
                                or (tokens and tokens[-1] in UNIT_CONTEXT)):
            tokens.append(f"unit:{UNITS[tok]}")
        elif tok in OPERATOR_WORDS and (tok != "-" or (
                previous_is_number and _next_is_number(raw, index))):
            tokens.append(OPERATOR_WORDS[tok])
        elif (stem := _prefix_antonym_stem(tok)) is not None:
            tokens.extend(["not", stem])  # "unavailable" reads as "not available"
        else:
            tokens.append(SYNONYMS.get(tok, tok))
    tokens = _fold_dates(tokens)

    quantities, identifiers, dates, quantity_units, units, poles, markers = (
        [], [], [], [], [], [], [])
    negations = 0
    for i, tok in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok.startswith(("date:", "weekday:", "year:")):
            dates.append(tok)
        elif (i > 0 and tokens[i - 1] in {"#", "no", "number"} and _number(tok) is not None) or (
                re.search(r"\d", tok) and re.search(r"[a-z]", tok)):
            identifiers.append(tok)
        elif _number(tok) is not None:
            quantities.append(tok)
            if nxt.startswith("unit:") and _number(tok) is not None:
                quantity_units.append((tok, nxt))
        if tok.startswith("unit:"):
            units.append(tok)
        if tok in NEGATIONS:
            negations += 1
        if tok in ANTONYMS:
            poles.append(ANTONYMS[tok])
        if tok in ORDER_MARKERS:
            argument = next((t for t in tokens[i + 1:] if t not in FRAMING), "")
            markers.append((tok, argument))
    content = tuple(
        t for t in tokens
        if t not in FRAMING and t not in NEGATIONS and not re.fullmatch(r"[#$€£¥%*/=<>^@-]", t)
    )
    capitalized = frozenset(
        word.lower() for word in re.findall(r"\b[A-Z][a-zA-Z]+", original)
        if word.lower() not in LEXICON
    )
    return Reading(tuple(tokens), content, tuple(quantities), tuple(identifiers), capitalized,
                   tuple(dates),
                   tuple(quantity_units), tuple(units), negations, tuple(poles), tuple(markers),
                   names)




def _agent_first(tokens: list[str], names: frozenset[str]) -> list[str]:
    """The names in the order of their roles: "B was paid by A" reads as "A ... B".

    The name after a passive "by" is the agent, the name after "from" the source ("B got an
    email from A", "B borrowed from A"): either is put first, so converse wordings of one
    event agree and a swap of the roles does not.
    """
    ordered = [t for t in tokens if t in names]
    for i, tok in enumerate(tokens[:-1]):
        if tokens[i + 1] in names and (
                tok == "from" or (tok == "by" and PASSIVE_AUX & set(tokens[:i]))):
            agent = tokens[i + 1]
            ordered.remove(agent)
            ordered.insert(0, agent)
            break
    return ordered


def _passive_participants(tokens: tuple[str, ...]) -> frozenset[str]:
    """In "X was hired by Y" (or "was X paid by Y"), X and Y are the roles to keep in order."""
    if not _is_passive(list(tokens)):
        return frozenset()
    by = tokens.index("by")
    found = {tokens[by + 1]} if by + 1 < len(tokens) and tokens[by + 1] not in LEXICON else set()
    subject = next((t for t in tokens[:by] if t not in LEXICON and not re.search(r"\d", t)
                    and not t.endswith("ed") and t != "paid"), None)
    if subject is not None:
        found.add(subject)
    return frozenset(found)


def _is_passive(tokens: list[str]) -> bool:
    return "by" in tokens and bool(PASSIVE_AUX & set(tokens[: tokens.index("by")]))


def _transposed(first: tuple[str, ...], second: tuple[str, ...], *, apart: bool = False) -> bool:
    """Whether the sequences differ by exchanging two tokens (``apart``: not neighbours).

    Neighbouring content words trade places in paraphrases ("Vienna weather", "weather in
    Vienna"); in the whole token sequence a swap of two words is who did what to whom.
    """
    if len(first) != len(second):
        return False
    diff = [i for i, (x, y) in enumerate(zip(first, second, strict=True)) if x != y]
    return (len(diff) == 2 and (not apart or diff[1] - diff[0] > 1)
            and first[diff[0]] == second[diff[1]] and first[diff[1]] == second[diff[0]])


def _substituted(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, str] | None:
    """The one token put in place of another when that is all that differs, else None.

    The same sentence with one content word replaced is how a near-miss is usually written
    ("the river runs deep" / "shallow", "hold" / "dump" the shares); a paraphrase that changes
    one word only is rare, and missing it costs one engine run.
    """
    if len(first) != len(second):
        return None
    diff = [(x, y) for x, y in zip(first, second, strict=True) if x != y]
    if len(diff) != 1 or _lemmas(diff[0][0]) & _lemmas(diff[0][1]):
        return None
    x, y = diff[0]
    if len(os.path.commonprefix([x, y])) >= 5:
        return None  # one word in two forms ("weighs" / "weight")
    return x, y


@lru_cache(maxsize=16_384)
def _lemmas(token: str) -> frozenset[str]:
    """The token and the base forms it may inflect ("departs", "hired", "easier", "beaten")."""
    forms = {token}
    if token in IRREGULAR:
        forms.add(IRREGULAR[token])
    for suffix, replacements in (("ies", ("y",)), ("es", ("", "e")), ("s", ("",)),
                                 ("ied", ("y",)), ("ed", ("", "e")), ("ing", ("", "e")),
                                 ("ier", ("y",)), ("iest", ("y",)), ("er", ("", "e")),
                                 ("est", ("", "e")), ("ly", ("",)), ("en", ("", "e"))):
        if token.endswith(suffix) and len(token) - len(suffix) >= 3:
            stem = token[: -len(suffix)]
            forms.update(stem + r for r in replacements)
            if len(stem) >= 4 and stem[-1] == stem[-2]:  # stopped -> stop
                forms.add(stem[:-1])
    return frozenset(forms)


def _opposed(first: str, second: str) -> bool:
    """Whether two words are antonyms (WordNet) or one prefix away from each other's opposite."""
    lemmas_first, lemmas_second = _lemmas(first), _lemmas(second)
    if any(OPPOSITES.get(x, frozenset()) & lemmas_second for x in lemmas_first):
        return True
    for x in lemmas_first:
        for y in lemmas_second:
            shorter, longer = sorted((x, y), key=len)
            if len(shorter) >= 4 and longer.endswith(shorter) and (
                    longer[: -len(shorter)] in NEGATIVE_PREFIXES):
                return True  # "lock" / "unlock", "able" / "disable"
            common = len(os.path.commonprefix([x[::-1], y[::-1]]))
            if common >= 4 and x[:-common] != y[:-common] and (
                    x[:-common] in MIRROR_PREFIXES and y[:-common] in MIRROR_PREFIXES):
                return True  # "import" / "export", "attach" / "detach", "upload" / "download"
    return False


def _unmatched(tokens: tuple[str, ...], other: tuple[str, ...]) -> list[str]:
    """Tokens of one text with no token of the other sharing a base form."""
    other_lemmas = set().union(*(_lemmas(t) for t in other)) if other else set()
    return [t for t in tokens if not _lemmas(t) & other_lemmas]


# Words that relate two arguments: kept in the skeleton, where their order shows the roles.
_RELATIONAL = ORDER_MARKERS | RELATIONAL


def _skeleton(reading: Reading) -> tuple[str, ...]:
    """Content words and the relational words between them, without politeness or framing."""
    return tuple(t for t in reading.tokens if t not in FRAMING or t in _RELATIONAL)


def _prefix_antonym_stem(token: str) -> str | None:
    for prefix in NEGATIVE_PREFIXES:
        rest = token[len(prefix):]
        if token.startswith(prefix) and any(
            rest.removesuffix(ending) in PREFIX_STEMS_SEEN for ending in ("", "s", "es", "ed", "d")
        ):
            return rest
    return None


@lru_cache(maxsize=16_384)
def near_miss_reason(asked: str, cached: str) -> str | None:
    """Why the answer to ``cached`` may not answer ``asked``, or None when nothing says so.

    The reason names the first rule that fired ("number", "unit", "negation", "antonym",
    "order", "entity", "substitution"); callers count them to see what the guard stops.
    """
    a, b = read(asked), read(cached)
    if a.quantities != b.quantities or Counter(a.identifiers) != Counter(b.identifiers):
        return "number"
    if Counter(a.dates) != Counter(b.dates):
        return "date"
    if (Counter(a.units) != Counter(b.units)
            or Counter(a.quantity_units) != Counter(b.quantity_units)):
        return "unit"
    if a.negations != b.negations:
        return "negation"
    only_in_a, only_in_b = _unmatched(a.tokens, b.tokens), _unmatched(b.tokens, a.tokens)
    if any(_opposed(x, y) for x in only_in_a for y in only_in_b):
        return "antonym"
    axes_a = {axis for axis, _ in a.poles}
    axes_b = {axis for axis, _ in b.poles}
    for axis in axes_a & axes_b:
        if {p for x, p in a.poles if x == axis} != {p for x, p in b.poles if x == axis}:
            return "antonym"
    markers_a, markers_b = dict(a.markers), dict(b.markers)
    # "to" is also the infinitive's; it names a role only next to "from".
    compared = {"from", "than", "vs", "versus", "against"} | (
        {"to"} if "from" in markers_a and "from" in markers_b else set())
    for marker in markers_a.keys() & markers_b.keys():
        if marker in compared and (
            Counter(x for m, x in a.markers if m == marker)
            != Counter(x for m, x in b.markers if m == marker)
        ):
            return "order"
    names = a.names | b.names | _passive_participants(a.tokens) | _passive_participants(b.tokens)
    roles_a = [t for t in _agent_first(list(a.tokens), names) if t in set(b.tokens)]
    roles_b = [t for t in _agent_first(list(b.tokens), names) if t in set(a.tokens)]
    unique_roles = len(set(roles_a)) == len(roles_a) and len(set(roles_b)) == len(roles_b)
    if unique_roles and roles_a != roles_b:
        return "order"
    only_a = Counter(a.content) - Counter(b.content)
    only_b = Counter(b.content) - Counter(a.content)
    if any(t in names for t in only_a) or any(t in names for t in only_b):
        return "entity"
    passive = any(_is_passive(list(r.tokens)) for r in (a, b))
    if not passive and (_transposed(_skeleton(a), _skeleton(b))
                        or _transposed(a.content, b.content, apart=True)):
        return "order"
    if _substituted(a.content, b.content) is not None:
        return "substitution"
    # One name put in place of another ("Bob hired Emma" / "Henry hired Emma"), where the
    # name starts the sentence and so escaped the entity rule.
    written_capitalized = a.capitalized | b.capitalized
    if (sum(only_a.values()) == 1 and sum(only_b.values()) == 1 and len(a.content) >= 3
            and (set(only_a) | set(only_b)) & written_capitalized):
        return "substitution"
    return None
