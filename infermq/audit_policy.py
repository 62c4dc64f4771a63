"""The live audit's decisions: which semantic hits to re-run, whether two answers agree, and
when the measured wrong-answer rate says a task type's semantic tier must turn itself off.

The certificate (``infermq/certificate.py``) bounds P(accepted | near-miss) before deployment,
on calibration pairs. The audit measures another quantity on live traffic: P(wrong | served
semantic hit), from hits re-run on the engine. Both are Clopper–Pearson; the audit trips on the
interval's *lower* bound above the target, so a few early disagreements (when the upper bound
is still far above any target) do not switch the tier off; real evidence does.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from infermq.certificate import clopper_pearson_interval

DEFAULT_TARGET = 0.005
DEFAULT_SHARE = 0.05


@dataclass(frozen=True)
class AuditCounts:
    """Audits of one task type and model: agreed, disagreed, and could-not-run (starved or
    failed: neither agreement nor disagreement, and never counted as either)."""

    agreed: int = 0
    disagreed: int = 0
    starved: int = 0
    failed: int = 0

    @property
    def compared(self) -> int:
        return self.agreed + self.disagreed

    def wrong_rate(self) -> float | None:
        return self.disagreed / self.compared if self.compared else None

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """The two-sided Clopper–Pearson interval on P(wrong | served hit)."""
        return clopper_pearson_interval(self.disagreed, self.compared, confidence)


def breached(counts: AuditCounts, target: float = DEFAULT_TARGET,
             confidence: float = 0.95) -> bool:
    """Whether the evidence says the wrong-answer rate is above ``target``: the interval's
    lower bound is."""
    return counts.compared > 0 and counts.interval(confidence)[0] > target


def picked_for_audit(job_id: str, share: float) -> bool:
    """Whether the semantic hit of ``job_id`` is re-run: a hash of the id, so a redelivered job
    is picked (or not) again, every worker agrees, and the share holds over many jobs."""
    if share <= 0:
        return False
    value = int.from_bytes(hashlib.sha256(f"audit:{job_id}".encode()).digest()[:8], "big")
    return value / 2**64 < share


def normalized_answer(text: str) -> str:
    """The answer with Unicode, case, punctuation (not decimal points) and spacing folded."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[^\w\s%.-]", " ", text)
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", text)  # sentence stops, not decimal points
    return " ".join(text.split())


def answers_agree(task_type: str, served: Any, fresh: Any) -> bool:
    """Whether the fresh answer confirms the served one.

    classify: the same label. generate (greedy only; sampled generations are never cached):
    the same text after Unicode, case, punctuation and whitespace are normalized. Chosen on
    ``bench/audit_equivalence.py``: on SmolLM2-135M's greedy answers to 150 paraphrase pairs
    every looser test (token F1 >= 0.8 / 0.5 / 0.3, the verifier on the two answers) still
    calls 59-100 % of good hits wrong, far above any target, and catches fewer wrong ones
    (F1 >= 0.3: 45 % of near-misses, fewer than its false alarms), so looser buys blindness,
    not a usable audit. With such a model the generate tier switches itself off at its
    first audited hit; that is the audit saying it cannot vouch for those answers.
    """
    if task_type == "classify":
        return _label(served) == _label(fresh)
    if isinstance(served, str) and isinstance(fresh, str):
        return normalized_answer(served) == normalized_answer(fresh)
    return json.dumps(served, sort_keys=True) == json.dumps(fresh, sort_keys=True)


def _label(output: Any) -> Any:
    if isinstance(output, dict):
        return output.get("label")
    if isinstance(output, list) and output and isinstance(output[0], dict):
        return [o.get("label") for o in output]
    return output
