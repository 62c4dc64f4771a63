"""The words the near-miss guard knows: numbers, units, months, negations, antonyms, synonyms.

Plain data, written for infermq (no download): ``workers/cache_guard.py`` reads text with it.
An antonym pair puts two words on opposite poles of one axis; a word already on an axis brings
its partner onto it, and inflections (opens, opening) share their base word's axis. Words here
are never taken for names.
"""

from __future__ import annotations

import re

from workers.guard_antonyms import ANTONYM_PAIRS as WORDNET_ANTONYM_PAIRS
from workers.guard_antonyms import IRREGULAR_FORMS as WORDNET_IRREGULAR_FORMS

NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
    "dozen": 12, "third": 3, "fourth": 4, "fifth": 5, "twice": 2,
}
MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december"]
MONTH_OF = {m: i + 1 for i, m in enumerate(MONTHS)} | {
    m[:3]: i + 1 for i, m in enumerate(MONTHS) if m != "may"} | {"sept": 9}
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAY_OF = {d: i for i, d in enumerate(WEEKDAYS)} | {d[:3]: i for i, d in enumerate(WEEKDAYS)}

# unit spelling -> canonical unit (multi-word spellings are joined with '_' before lookup)
UNITS: dict[str, str] = {}
for _canon, _spellings in {
    "km": "km kms kilometer kilometers kilometre kilometres",
    "m": "m meter meters metre metres", "cm": "cm centimeter centimeters centimetre centimetres",
    "mm": "mm millimeter millimeters", "mi": "mi mile miles", "ft": "ft foot feet",
    "in": "inch inches", "yd": "yd yard yards",
    "kg": "kg kgs kilo kilos kilogram kilograms kilogramme kilogrammes",
    "g": "g gram grams gramme grammes", "mg": "mg milligram milligrams",
    "lb": "lb lbs pound pounds", "oz": "oz ounce ounces", "t": "tonne tonnes ton tons",
    "s": "s sec secs second seconds", "min": "min mins minute minutes",
    "h": "h hr hrs hour hours", "d": "day days", "wk": "wk week weeks",
    "mo": "month months", "yr": "yr yrs year years",
    "degc": "°c celsius centigrade degrees_celsius degree_celsius c",
    "degf": "°f fahrenheit degrees_fahrenheit degree_fahrenheit f", "degk": "kelvin",
    "l": "l liter liters litre litres", "ml": "ml milliliter milliliters millilitre millilitres",
    "gal": "gal gallon gallons", "cup": "cup cups", "tbsp": "tbsp tablespoon tablespoons",
    "tsp": "tsp teaspoon teaspoons", "floz": "fl_oz fluid_ounce fluid_ounces",
    "b": "byte bytes", "kb": "kb kilobyte kilobytes", "mb": "mb megabyte megabytes",
    "gb": "gb gigabyte gigabytes", "tb": "tb terabyte terabytes", "pb": "pb petabyte petabytes",
    "usd": "$ usd dollar dollars buck bucks", "eur": "€ eur euro euros",
    "gbp": "£ gbp pounds_sterling sterling quid", "jpy": "¥ jpy yen",
    "kmh": "kmh km/h kph kilometers_per_hour kilometres_per_hour",
    "mph": "mph miles_per_hour", "pct": "% percent per_cent percentage",
    "w": "w watt watts", "kw": "kw kilowatt kilowatts", "v": "volt volts",
    "hz": "hz hertz", "ghz": "ghz gigahertz",
    "sqm": "m² m2 sqm sq_m square_meter square_meters square_metre square_metres",
    "sqkm": "km² km2 sq_km square_kilometer square_kilometers square_kilometre square_kilometres",
    "sqft": "ft² sqft sq_ft square_foot square_feet", "sqmi": "sq_mi square_mile square_miles",
    "acre": "acre acres", "ha": "ha hectare hectares",
    "kwh": "kwh kilowatt_hour kilowatt_hours", "wh": "wh watt_hour watt_hours",
    "j": "j joule joules", "kj": "kj kilojoule kilojoules", "cal": "cal calorie calories",
    "kcal": "kcal kilocalorie kilocalories", "psi": "psi", "bar": "bar bars",
    "pa": "pa pascal pascals", "kpa": "kpa kilopascal kilopascals", "atm": "atm atmospheres",
    "ms": "ms millisecond milliseconds", "ns": "ns nanosecond nanoseconds",
    "mah": "mah", "mbps": "mbps", "gbps": "gbps", "px": "px pixel pixels",
}.items():
    for _spelling in _spellings.split():
        UNITS[_spelling] = _canon
# Unit words that are also everyday words count as units only right after a number.
UNITS_AFTER_NUMBER_ONLY = {"m", "s", "h", "d", "g", "t", "c", "f", "l", "in", "b", "v", "w",
                            "j", "ha", "bar", "bars", "pa", "ms", "cal",
                            "second", "seconds", "pound", "pounds", "day", "days", "month",
                            "months", "year", "years", "week", "weeks"}

# The closed class of English negators, and verbs whose complement they deny ("fails to
# load", "refused to sign", "lacks a window"): general grammar, not this data set's words.
NEGATIONS = {"not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "without",
              "nowhere", "cannot", "unable", "lacks", "lack", "lacked", "lacking", "hardly",
              "scarcely", "barely", "fail", "fails", "failed", "failing", "refuse", "refuses",
              "refused", "refusing", "neglect", "neglects", "neglected", "absent", "missing"}

ANTONYM_PAIRS = """
buy sell|purchase sell|enable disable|activate deactivate|on off|up down|increase decrease|
raise lower|rise fall|open close|start stop|begin end|
upload download|import export|add remove|include exclude|allow block|allow deny|
accept reject|approve deny|approve reject|win lose|won lost|beat lost|encrypt decrypt|
compress decompress|lock unlock|mute unmute|show hide|connect disconnect|install uninstall|
subscribe unsubscribe|follow unfollow|push pull|send receive|deposit withdraw|credit debit|
borrow lend|lent borrowed|loaned borrowed|hire fire|hired fired|arrive depart|arrives departs|
leave arrive|arrival departure|inbound outbound|incoming outgoing|north south|east west|
left right|above below|before after|earlier later|earliest latest|first last|
ascending descending|asc desc|highest lowest|high low|higher lower|maximum minimum|max min|
most least|more less|largest smallest|biggest smallest|big small|large small|bigger smaller|
larger smaller|longest shortest|long short|longer shorter|heaviest lightest|heavier lighter|
heavy light|fastest slowest|faster slower|fast slow|hot cold|hottest coldest|warm cool|
cheapest most_expensive|cheap expensive|cheaper more_expensive|oldest newest|old new|
older newer|expand collapse|zoom_in zoom_out|inside outside|positive negative|
true false|yes no|love hate|loved hated|like dislike|liked disliked|enjoyed disliked|
good bad|better worse|best worst|happy unhappy|pass fail|passed failed|success failure|
keep stop|keep cancel|monthly yearly|monthly annual|daily weekly|weekly monthly|
morning evening|today tomorrow|today yesterday|tomorrow yesterday|past future|
plus minus|add subtract|multiply divide|sum difference|min max|import export|
uppercase lowercase|forward backward|next previous|top bottom|front back|entry exit|
enter exit|login logout|log_in log_out|sign_in sign_out|check_in check_out|asleep awake|
full empty|alive dead|present absent|available unavailable|legal illegal|safe unsafe|
possible impossible|visible invisible|public private|online offline|inner outer|
minimum maximum|gain loss|profit loss|buyer seller|lender borrower|employer employee|
parent child|teacher student|sender recipient|host guest|owner tenant|landlord tenant|
reduce increase|optional mandatory|allowed forbidden|interesting boring|exciting boring
"""
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

# Phrases folded to one canonical word before comparison (wording that means the same).
PHRASES = {
    "turn on": "enable", "switch on": "enable", "turn off": "disable", "switch off": "disable",
    "log in": "login", "log out": "logout", "sign in": "login", "sign out": "logout",
    "zoom in": "zoom_in", "zoom out": "zoom_out", "zooming in": "zoom_in",
    "zooming out": "zoom_out", "laid off": "fired", "lay off": "fire", "lays off": "fires",
    "take away": "minus", "per cent": "percent",
    "no longer": "not", "two times": "2 times", "most expensive": "most_expensive",
    "more expensive": "more_expensive", "two factor": "2fa", "two-factor": "2fa",
    "degrees celsius": "°c", "degree celsius": "°c", "degrees fahrenheit": "°f",
    "degree fahrenheit": "°f", "miles per hour": "mph", "kilometers per hour": "kmh",
    "kilometres per hour": "kmh", "fluid ounces": "fl_oz", "pounds sterling": "pounds_sterling",
    "km/h": "kmh", "united states": "us", "u.s.": "us", "usa": "us",
    "thanks in advance": "thanks", "do not let me forget to": "remind me to",
    "do not forget to": "remember to", "does not work": "broken", "do not work": "broken",
    "is not working": "broken", "does nothing": "broken", "double": "2 times",
    "no one": "nobody", "not anyone": "nobody", "not anybody": "nobody", "yet to": "not",
    "square root": "sqrt", "to the power of": "^", "to the power": "^", "raised to": "^",
}
# Constructions whose arguments come in the other order: rewritten to the usual order.
REORDER = [(re.compile(r"\bsubtract (\S+) from (\S+)"), r"\2 minus \1"),
            (re.compile(r"\bdivide (\S+) into (\S+)"), r"\2 divided by \1"),
            (re.compile(r"\bhow many times does (\S+) go into (\S+)"), r"\2 divided by \1"),
            # ISO 8601 dates, read as day.month.year like the dotted form
            (re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b"), r"\3.\2.\1")]
PASSIVE_AUX = {"was", "were", "is", "are", "been", "be", "being", "got", "gets", "get"}
SYNONYMS = {
    "purchase": "buy", "acquire": "buy", "activate": "enable", "deactivate": "disable",
    "large": "big", "larger": "bigger", "largest": "biggest", "huge": "big", "tiny": "small",
    "begin": "start", "commence": "start", "end": "stop", "finish": "stop", "quit": "stop",
    "repair": "fix", "mend": "fix", "parcel": "package", "shop": "store", "automobile": "car",
    "sum": "plus", "subtract": "minus", "add": "plus", "compute": "calculate",
    "loaned": "lent", "loan": "lend", "silence": "mute", "annual": "yearly",
    "annually": "yearly", "remove": "delete", "erase": "delete", "auth": "authentication",
    "phone": "call", "ring": "call", "kilos": "kg", "liked": "loved", "enjoyed": "loved",
    "hated": "disliked", "leaves": "departs", "wifi": "wi-fi",
    "item": "product", "goods": "product", "recruit": "hire", "recruited": "hired",
    "dismissed": "fired", "dismiss": "fire",
}

# Words whose presence or absence does not change what is asked (framing, politeness, grammar).
# Antonyms are looked up after synonyms are folded (hated -> disliked), so fold the lexicon
# the same way; inflections (opens, opening) sit on their base word's axis.
for _pair in ANTONYM_PAIRS.replace("\n", "").split("|"):
    _add_antonym_pair(*(SYNONYMS.get(word, word) for word in _pair.split()))
for _word, _pole in list(ANTONYMS.items()):
    _stem = _word[:-1] if _word.endswith("e") else _word
    for _form in (_word + "s", _word + "es", _word + "d", _word + "ed", _stem + "ing"):
        ANTONYMS.setdefault(_form, _pole)

FRAMING_WORDS = """
a an the this that these those it its it's i i'm me my mine we us our you your yours he she
him her his they them their there here what what's which who whom whose how when where why
is are was were be been being am do does did done doing have has had having will would shall
should can could may might must of for in at on with by about as and or but so if then just
please pls thanks thank thx hi hello hey dear team support regards cheers quick question
help tell show give name let know want wanted like need needs needed i'd i'll kindly again
also really very much many any some every each all one ones get got going go make makes made
see explain describe find search look steps ways way step to into
"""
FRAMING = frozenset(FRAMING_WORDS.split())
ORDER_MARKERS = {"from", "to", "than", "into", "vs", "versus", "against", "by", "over"}
UNIT_CONTEXT = {"many", "much", "in", "into", "to", "of", "per"}
OPERATOR_WORDS = {"+": "plus", "-": "minus", "*": "times", "×": "times", "/": "divided",
                   "÷": "divided"}
TOKEN = re.compile(
    r"[a-z]\+\+|[a-z]+(?:-\d+)+\b|(?<![\w.])[-+]?\d+(?:[.,:]\d+)*(?:st|nd|rd|th)?|[a-z_°][a-z0-9_°]*(?:'[a-z]+)?|[#$€£¥%+*/=<>^@-]"
)
CONTRACTIONS = [(r"won't", "will not"), (r"can't", "can not"), (r"cannot", "can not"),
                 (r"shan't", "shall not"), (r"n't\b", " not"), (r"'re\b", " are"),
                 (r"'m\b", " am"), (r"'ve\b", " have"), (r"'ll\b", " will"), (r"'d\b", " would"),
                 (r"\b(what|it|that|there|here|who|where|how)'s\b", r"\1 is"), (r"'s\b", "")]

NEGATIVE_PREFIXES = ("un", "dis", "in", "im", "il", "ir", "non", "de")
# Stems that have a negative-prefix form somewhere in the lexicon of everyday words; a text
# with "available" and one with "unavailable" then sit on opposite poles of one axis.
PREFIX_STEMS_SEEN = {
    "available", "able", "happy", "lock", "mute", "install", "connect", "subscribe",
    "follow", "like", "agree", "allow", "safe", "legal", "possible", "visible", "correct",
    "complete", "known", "valid", "active", "enabled", "approve", "continue", "secure",
    "stable", "compress", "encrypt", "pack", "load", "paid", "read", "sure", "fair",
}
LEXICON = (set(NUMBER_WORDS) | set(MONTH_OF) | set(WEEKDAY_OF) | set(UNITS)
            | set(ANTONYMS) | set(SYNONYMS) | FRAMING | NEGATIONS | ORDER_MARKERS
            | {"calculate", "convert", "translate", "compute", "write", "sort", "set", "remind",
               "should", "add", "multiply", "divide", "refund", "cancel", "transfer", "move"})


def _pairs(text: str) -> list[tuple[str, str]]:
    return [(left, right) for left, right in (
        item.split(",") for item in text.replace("\n", "").split("|") if item)]


# WordNet's antonyms (``workers/guard_antonyms.py``): word -> the words opposite to it.
OPPOSITES: dict[str, frozenset[str]] = {}
for _left, _right in _pairs(WORDNET_ANTONYM_PAIRS):
    OPPOSITES[_left] = OPPOSITES.get(_left, frozenset()) | {_right}
    OPPOSITES[_right] = OPPOSITES.get(_right, frozenset()) | {_left}
IRREGULAR = dict(_pairs(WORDNET_IRREGULAR_FORMS))
# Multi-word unit spellings ("square feet") are folded to their joined form before lookup.
PHRASES.update({unit.replace("_", " "): unit for unit in UNITS if "_" in unit})
