"""Packs the verifier's labelled pairs into package data (``workers/verifier_data/``).

``infermq prepare`` trains the verifier inside the image, where ``bench/`` is not copied, so
the pairs it learns from and the pairs that certify its threshold ship with ``workers``:
  pairs_train.jsonl.gz        tuning + dev + dev2 (pairs_heldout) + heldout2: the spent banks;
  pairs_calibration.jsonl.gz  the CALIBRATION bank, disjoint from all of them.
The blind test split is never packed. Deterministic (gzip mtime 0): rerun after a bank changes.

Run: ``python bench/data/pack_verifier_data.py``
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

DATA = Path(__file__).parent
OUT = DATA.parents[1] / "workers" / "verifier_data"
PACKS = {
    "pairs_train.jsonl.gz": ["pairs_tuning.jsonl", "pairs_dev.jsonl", "pairs_heldout.jsonl",
                             "pairs_heldout2.jsonl"],
    "pairs_calibration.jsonl.gz": ["pairs_calibration.jsonl"],
}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, sources in PACKS.items():
        lines = [json.dumps({"_source": "packed from bench/data/" + ", ".join(sources)
                             + " by bench/data/pack_verifier_data.py"})]
        for source in sources:
            lines += [line for line in (DATA / source).read_text().splitlines()[1:] if line]
        (OUT / name).write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))
        print(OUT / name, len(lines) - 1, "pairs")


if __name__ == "__main__":
    main()
