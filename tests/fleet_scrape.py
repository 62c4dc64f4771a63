"""Live scrapes of a worker, the gateway and beat's fleet gauges, as Prometheus text.

The dashboard test checks its queries against these; ``bench/dashboard.py`` feeds them to a
real Prometheus to render the panels."""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

METRIC_NAME = re.compile(r"\b(infermq_[a-z0-9_]+|up)\b")
SUFFIXES_BY_TYPE = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
                    "summary": ("_count", "_sum")}


def exported_names(texts: Iterable[str]) -> dict[str, set[str]]:
    """Each exported family (``_created`` series folded into theirs) and the sample names a
    query may use for it: a counter's ``_total``, a histogram's ``_bucket``/``_count``/``_sum``."""
    families: dict[str, set[str]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name.endswith("_created"):
                continue
            families[family.name] = {family.name + suffix for suffix in
                                      SUFFIXES_BY_TYPE.get(family.type, ("",))}
    for created in [name for name in families if name.endswith("_created")]:
        del families[created]
    return families


def query_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (infermq's, and Prometheus' own ``up``)."""
    return set(METRIC_NAME.findall(expr))
