"""The certified threshold: exact Clopper–Pearson arithmetic and the threshold chooser."""

from __future__ import annotations

import math

import pytest
from scipy.stats import beta

from infermq.certificate import (
    CertificateError,
    choose_threshold,
    clopper_pearson_interval,
    clopper_pearson_upper,
    max_certified_events,
)


@pytest.mark.parametrize(("k", "n"), [(0, 1), (0, 600), (1, 950), (3, 1000), (7, 20), (49, 50)])
def test_upper_bound_matches_the_beta_quantile(k: int, n: int) -> None:
    assert clopper_pearson_upper(k, n, 0.05) == pytest.approx(
        float(beta.ppf(0.95, k + 1, n - k)), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (1, 950), (12, 40), (40, 40)])
def test_two_sided_interval_matches_scipy(k: int, n: int) -> None:
    low, high = clopper_pearson_interval(k, n, 0.95)
    want_low = 0.0 if k == 0 else float(beta.ppf(0.025, k, n - k + 1))
    want_high = 1.0 if k == n else float(beta.ppf(0.975, k + 1, n - k))
    assert (low, high) == (pytest.approx(want_low, abs=1e-12), pytest.approx(want_high, abs=1e-12))


def test_the_issue_counts_hold_600_with_none_and_950_with_one() -> None:
    # 0 of 598 does not certify 0.5 %, 0 of 600 does; 1 needs ~950.
    assert max_certified_events(590, 0.005) == -1
    assert max_certified_events(600, 0.005) == 0
    assert max_certified_events(949, 0.005) == 1
    assert max_certified_events(900, 0.005) == 0


def test_chooser_puts_the_threshold_just_above_the_scores_it_must_refuse() -> None:
    # Given 1000 near-misses, 990 refused before the verifier and 10 scored,
    scores = [-math.inf] * 990 + [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    # When the chooser certifies 0.5 % at 95 %,
    cert = choose_threshold(scores, 0.005, 0.05)
    # Then one near-miss may stay accepted (1 of 1000 certifies, 2 does not): the 0.95.
    assert cert.accepted == 1 and cert.certified
    assert 0.9 < cert.threshold <= math.nextafter(0.9, 1.0)
    assert cert.upper_bound == pytest.approx(float(beta.ppf(0.95, 2, 999)), rel=1e-9)


def test_chooser_refuses_everything_when_there_are_too_few_near_misses() -> None:
    cert = choose_threshold([0.1] * 100)
    assert not cert.certified and cert.threshold == math.inf


def test_chooser_needs_no_refusal_when_the_rules_refused_enough() -> None:
    cert = choose_threshold([-math.inf] * 1000 + [0.3])
    assert cert.threshold == 0.3 and cert.accepted == 1 and cert.certified


def test_impossible_counts_are_refused() -> None:
    with pytest.raises(CertificateError):
        clopper_pearson_upper(5, 3)
    with pytest.raises(CertificateError):
        clopper_pearson_upper(0, 3, alpha=1.5)
