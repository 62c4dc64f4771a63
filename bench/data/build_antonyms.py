"""Writes ``workers/guard_data/wordnet_*.tsv.gz``: antonym pairs and irregular forms from WordNet.

Why: the near-miss guard must know that "arrive" and "depart", "deep" and "shallow", "hire" and
"fire" flip a question's meaning, for words no template of ours has used. A hand-written list
covers only the words its author thought of; WordNet 3.0 (Princeton, a general lexicon written
for no task of ours) covers the language. This script distils the part the guard needs into two
gzipped tables shipped as package data, so that nothing is downloaded at run time.

What it keeps (single-word lemmas only):
- direct antonyms, widened to every lemma of the two synsets (buy/sell brings purchase/sell);
- for adjectives, the satellites of a head synset against the lemmas of its antonym head
  ("boring", a satellite of "uninteresting", against "interesting");
- the irregular forms (verb.exc, adj.exc, noun.exc), so that "paid" meets "pay".

Source: Debian's ``wordnet-base`` package (``apt-get install wordnet-base``), files under
``/usr/share/wordnet``. WordNet 3.0 Copyright 2006 by Princeton University; its license allows
copying and redistribution with the notice, which the generated tables carry.

Run: ``python bench/data/build_antonyms.py [--wordnet-dir /usr/share/wordnet]``.
"""

from __future__ import annotations

import argparse
import gzip
import re
from collections import defaultdict
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "workers" / "guard_data"
POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
WORD = re.compile(r"[a-z]+")

NOTICE = """WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved.
THIS SOFTWARE AND DATABASE IS PROVIDED "AS IS" AND PRINCETON UNIVERSITY MAKES NO
REPRESENTATIONS OR WARRANTIES, EXPRESS OR IMPLIED. BY WAY OF EXAMPLE, BUT NOT LIMITATION,
PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR WARRANTIES OF MERCHANTABILITY OR FITNESS
FOR ANY PARTICULAR PURPOSE OR THAT THE USE OF THE LICENSED SOFTWARE, DATABASE OR
DOCUMENTATION WILL NOT INFRINGE ANY THIRD PARTY PATENTS, COPYRIGHTS, TRADEMARKS OR OTHER
RIGHTS."""


Pointer = tuple[str, str, int, int, int]  # symbol, target pos, target offset, source, target
Synsets = dict[tuple[str, int], tuple[list[str], list[Pointer]]]


def read_synsets(directory: Path) -> Synsets:
    """(pos, offset) -> (lemmas, pointers)."""
    synsets: Synsets = {}
    for pos, name in POS_FILES.items():
        for line in (directory / f"data.{name}").read_text(encoding="latin-1").splitlines():
            if line.startswith(" "):
                continue
            fields = line.split(" | ")[0].split()
            offset, count = int(fields[0]), int(fields[3], 16)
            lemmas = [re.sub(r"\(.*\)$", "", fields[4 + 2 * i]).lower() for i in range(count)]
            at = 4 + 2 * count
            pointers = []
            for _ in range(int(fields[at])):
                symbol, target, target_pos, st = fields[at + 1: at + 5]
                pointers.append((symbol, "a" if target_pos == "s" else target_pos,
                                 int(target), int(st[:2], 16), int(st[2:], 16)))
                at += 4
            synsets[(pos, offset)] = (lemmas, pointers)
    return synsets


def antonym_pairs(synsets: Synsets) -> set[tuple[str, str]]:
    pairs: set[tuple[str, str]] = set()

    def add(left: list[str], right: list[str]) -> None:
        for x in left:
            for y in right:
                if x != y and WORD.fullmatch(x) and WORD.fullmatch(y):
                    pairs.add((min(x, y), max(x, y)))

    satellites: dict[tuple[str, int], list[str]] = defaultdict(list)
    for (pos, _offset), (lemmas, pointers) in synsets.items():
        for symbol, target_pos, target, _, _ in pointers:
            if pos == "a" and symbol == "&":  # a satellite points at its head
                satellites[(target_pos, target)].extend(lemmas)
    for (pos, offset), (lemmas, pointers) in synsets.items():
        for symbol, target_pos, target, _, _ in pointers:
            if symbol != "!" or (target_pos, target) not in synsets:
                continue
            other = synsets[(target_pos, target)][0]
            add(lemmas, other)
            add(satellites.get((pos, offset), []), other)
    return pairs


def irregular_forms(directory: Path, known: set[str]) -> dict[str, str]:
    """Inflected form -> base ("paid" -> "pay"), the first base where WordNet lists several."""
    forms: dict[str, str] = {}
    for name in ("verb", "adj", "noun"):
        for line in (directory / f"{name}.exc").read_text(encoding="latin-1").splitlines():
            inflected, base, *_ = line.split()
            if WORD.fullmatch(inflected) and WORD.fullmatch(base) and inflected != base:
                forms.setdefault(inflected, base)
    return forms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet-dir", type=Path, default=Path("/usr/share/wordnet"))
    args = parser.parse_args()
    pairs = antonym_pairs(read_synsets(args.wordnet_dir))
    words = {w for pair in pairs for w in pair}
    forms = irregular_forms(args.wordnet_dir, words)
    header = "".join(f"# {line}".rstrip() + "\n" for line in NOTICE.splitlines())
    tables = (("wordnet_antonyms.tsv.gz", sorted(pairs), "antonym pairs: word<TAB>word"),
              ("wordnet_irregular.tsv.gz", sorted(forms.items()), "irregular forms: form<TAB>base"))
    for name, rows, what in tables:
        text = (f"# WordNet 3.0 {what}; written by bench/data/build_antonyms.py (generated: do "
                "not edit)\n" + header + "".join(f"{a}\t{b}\n" for a, b in rows))
        # mtime 0: the same WordNet gives the same bytes.
        (OUT / name).write_bytes(gzip.compress(text.encode(), mtime=0))
    print(f"{OUT}: {len(pairs)} antonym pairs, {len(forms)} irregular forms")

if __name__ == "__main__":
    main()
