"""The isolation gate alone: suspects halve their group per level and wait for clean jobs."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from workers.isolation import IsolationGate, group_cap, levels_before_solo


def test_groups_halve_per_level_until_a_suspect_runs_alone() -> None:
    assert [group_cap(level, 8) for level in range(1, 5)] == [4, 2, 1, 1]
    assert [levels_before_solo(slots) for slots in (1, 2, 4, 8, 16)] == [0, 0, 1, 2, 3]
    gate = IsolationGate(8)
    assert not gate.runs_alone(0) and not gate.runs_alone(2) and gate.runs_alone(3)


def test_a_suspect_waits_for_the_clean_job_inside_and_then_runs_alone() -> None:
    # Given a clean job in the engine
    gate = IsolationGate(4)
    clean: Future[str] = Future()
    gate.submit_admitted(0, 0, lambda: clean)
    entered = threading.Event()
    alone: Future[str] = Future()

    def suspect() -> None:
        gate.submit_admitted(2, 0, lambda: alone)
        entered.set()

    thread = threading.Thread(target=suspect)
    thread.start()
    # When a suspect of the solo level arrives, it waits; it enters once the clean job ends
    assert not entered.wait(0.2)
    clean.set_result("done")
    assert entered.wait(10)
    thread.join()
    # Then a clean job arriving now waits until the suspect is done
    later_entered = threading.Event()

    def clean_later() -> None:
        gate.submit_admitted(0, 0, Future)
        later_entered.set()

    later = threading.Thread(target=clean_later)
    later.start()
    assert not later_entered.wait(0.2)
    alone.set_result("done")
    assert later_entered.wait(10)
    later.join()
