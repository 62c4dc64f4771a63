"""The alert rules: promtool checks them and runs their unit tests, and every rule has a case
where it fires and one where it stays quiet."""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import yaml

PROMETHEUS_DIR = Path(__file__).parent.parent / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "alerts.yaml"
RULE_TESTS = PROMETHEUS_DIR / "alerts_test.yaml"
INSTALL_HINT = ("promtool is missing: `apt-get install -y --no-install-recommends prometheus` "
                "installs it (.ci/run does so on CI)")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    assert path is not None, INSTALL_HINT
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_rule_has_a_firing_and_a_quiet_case() -> None:
    rules = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"]
             for rule in group["rules"]}
    cases: dict[str, set[str]] = defaultdict(set)
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test["alert_rule_test"]:
            cases[case["alertname"]].add("fires" if case["exp_alerts"] else "quiet")
    assert {rule: cases[rule] for rule in rules} == {rule: {"fires", "quiet"} for rule in rules}
