"""The certified threshold: a bound on how often the cache answers a near-miss, from counts.

A cache that serves the answer of a different question is wrong in a way the user cannot see.
Before deployment we measure, on a calibration split kept apart from the verifier's training
data, how many near-miss pairs the whole serving pipeline accepts (cosine look-up, rule veto,
verifier score >= t). With ``k`` accepted among ``n`` near-misses, the one-sided Clopper–Pearson
upper bound at confidence ``1 - alpha`` is the ``p`` at which seeing ``k`` or fewer would happen
with probability ``alpha``: P(Binomial(n, p) <= k) = alpha, i.e. the ``1 - alpha`` quantile of
Beta(k + 1, n - k). It holds for every ``p`` whatever the verifier (the pairs are exchangeable
with what the cache meets, which is the assumption the calibration split must earn).

The live audit reads the two-sided interval (``clopper_pearson_interval``) of another quantity,
P(wrong | served hit), measured on production traffic.

Pure: math only (no scipy at run time; the tests check it against ``scipy.stats.beta``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from infermq.errors import InfermqError


class CertificateError(InfermqError):
    """Raised when a bound is asked for impossible counts (k > n, n < 0, alpha outside (0,1))."""


def _log_binomial_cdf(k: int, n: int, p: float) -> float:
    """log P(Binomial(n, p) <= k), summed in log space so n in the thousands stays exact."""
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 0.0 if k >= n else -math.inf
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
             + i * log_p + (n - i) * log_q for i in range(k + 1)]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def _validate(k: int, n: int, alpha: float) -> None:
    if n < 0 or k < 0 or k > n:
        raise CertificateError(f"counts k={k}, n={n} are impossible: need 0 <= k <= n")
    if not 0.0 < alpha < 1.0:
        raise CertificateError(f"alpha={alpha} must lie strictly between 0 and 1")


def clopper_pearson_upper(k: int, n: int, alpha: float = 0.05) -> float:
    """One-sided upper bound on the rate behind ``k`` events in ``n`` trials (level 1 - alpha).

    Found by bisection on the binomial CDF, which falls as ``p`` rises; 200 halvings reach the
    float's resolution. ``n = 0`` bounds nothing: 1.0.

    Raises:
        CertificateError: the counts or ``alpha`` are impossible.
    """
    _validate(k, n, alpha)
    if k >= n:
        return 1.0
    target = math.log(alpha)
    low, high = 0.0, 1.0
    for _ in range(200):
        mid = (low + high) / 2
        if _log_binomial_cdf(k, n, mid) > target:
            low = mid
        else:
            high = mid
        if high - low < 1e-15:
            break
    return (low + high) / 2


def clopper_pearson_lower(k: int, n: int, alpha: float = 0.05) -> float:
    """One-sided lower bound (level 1 - alpha): the mirror of the upper bound on n - k.

    Raises:
        CertificateError: the counts or ``alpha`` are impossible.
    """
    _validate(k, n, alpha)
    return 0.0 if k == 0 else 1.0 - clopper_pearson_upper(n - k, n, alpha)


def clopper_pearson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The two-sided interval (each tail (1 - confidence) / 2); (0, 1) when n = 0.

    Raises:
        CertificateError: the counts or the confidence are impossible.
    """
    if n == 0:
        return 0.0, 1.0
    tail = (1.0 - confidence) / 2
    return clopper_pearson_lower(k, n, tail), clopper_pearson_upper(k, n, tail)


def max_certified_events(n: int, target: float, alpha: float = 0.05) -> int:
    """The most events among ``n`` trials whose upper bound stays <= ``target``; -1 if none.

    Raises:
        CertificateError: ``n`` or ``alpha`` is impossible.
    """
    k = -1
    while k + 1 <= n and clopper_pearson_upper(k + 1, n, alpha) <= target:
        k += 1
    return k


@dataclass(frozen=True)
class Certificate:
    """A threshold and what it was certified on: near-misses accepted at it, and the bound."""

    threshold: float
    accepted: int
    near_misses: int
    upper_bound: float
    target: float
    alpha: float

    @property
    def certified(self) -> bool:
        return self.upper_bound <= self.target


def choose_threshold(near_miss_scores: Sequence[float], target: float = 0.005,
                     alpha: float = 0.05) -> Certificate:
    """The smallest threshold whose bound on P(accepted | near-miss) is <= ``target``.

    ``near_miss_scores`` holds one score per calibration near-miss: the verifier's score where
    the pair got past the earlier stages (look-up, rule veto), ``-inf`` where an earlier stage
    already refused it. A pair is accepted at threshold ``t`` when its score is >= ``t``. The
    smallest such ``t`` lies just above the (k+1)-th largest score, where ``k`` is the most
    accepted near-misses that still certify; when no finite score needs refusing, ``t`` is the
    lowest finite score seen (or 0.0), so the threshold never certifies more than it saw.
    When even ``k = 0`` fails (too few near-misses), the returned certificate is not
    ``certified`` and its threshold is ``inf`` (nothing is served semantically).

    Raises:
        CertificateError: ``alpha`` is impossible.
    """
    n = len(near_miss_scores)
    k = max_certified_events(n, target, alpha)
    if k < 0:
        return Certificate(math.inf, 0, n, clopper_pearson_upper(0, n, alpha), target, alpha)
    ordered = sorted(near_miss_scores, reverse=True)
    finite = [s for s in ordered if s != -math.inf]
    if k < len(finite):
        threshold = math.nextafter(finite[k], math.inf)
    else:
        threshold = min(finite) if finite else 0.0
    accepted = sum(1 for s in ordered if s >= threshold)
    return Certificate(threshold, accepted, n, clopper_pearson_upper(accepted, n, alpha),
                       target, alpha)
