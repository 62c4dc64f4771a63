"""Cold start: order by priority then deadline within memory, LRU eviction, bounded retries."""

from __future__ import annotations

import pytest

from infermq.errors import InvalidInstanceTransition
from routing.coldstart import ColdStartScheduler, Evict, GiveUp, InstanceState, StartLoad
from routing.coldstart_sim import SimModel, simulate


def test_loads_start_by_priority_then_deadline_while_they_fit() -> None:
    # Given a budget for two of four equal models
    s = ColdStartScheduler(memory_budget_mib=200)
    s.request("late", 100, 0.0, priority=1, deadline_s=90)
    s.request("low", 100, 0.0, priority=0, deadline_s=10)
    s.request("urgent", 100, 0.0, priority=1, deadline_s=30)
    s.request("top", 100, 0.0, priority=5)
    # Then the two most important start, the others wait in order
    assert s.next_actions(0.0) == [StartLoad("top", 1), StartLoad("urgent", 1)]
    assert s.pending_models() == ["late", "low"]
    assert s.free_memory_mib == 0


def test_head_that_does_not_fit_is_not_overtaken() -> None:
    s = ColdStartScheduler(memory_budget_mib=100)
    s.request("a", 60, 0.0, priority=2)
    s.next_actions(0.0)
    s.request("big", 80, 0.0, priority=1)
    s.request("small", 30, 0.0, priority=0)
    assert s.next_actions(0.0) == []  # small would fit, but big is ahead of it


def test_warm_up_comes_before_ready() -> None:
    s = ColdStartScheduler(memory_budget_mib=100)
    s.request("a", 50, 0.0)
    s.next_actions(0.0)
    with pytest.raises(InvalidInstanceTransition):
        s.warmed_up("a", 1.0)
    s.loaded("a", 1.0)
    assert s.state("a") == InstanceState.LOADING
    s.warmed_up("a", 2.0)
    assert s.state("a") == InstanceState.READY


def test_only_allowed_transitions() -> None:
    s = ColdStartScheduler(memory_budget_mib=100)
    s.request("a", 50, 0.0)
    s.next_actions(0.0)
    with pytest.raises(InvalidInstanceTransition):
        s.drain("a")  # LOADING -> DRAINING is not an edge
    with pytest.raises(InvalidInstanceTransition):
        s.drained("a")
    s.loaded("a", 1.0)
    s.warmed_up("a", 1.0)
    assert s.drain("a") == Evict("a")
    with pytest.raises(InvalidInstanceTransition):
        s.job_started("a", 2.0)  # a DRAINING model takes no new job
    s.drained("a")
    assert s.state("a") is None and s.free_memory_mib == 100


def ready(s: ColdStartScheduler, model: str, memory_mib: int, now_s: float) -> None:
    s.request(model, memory_mib, now_s)
    assert StartLoad(model, 1) in s.next_actions(now_s)
    s.loaded(model, now_s)
    s.warmed_up(model, now_s)


def test_short_memory_evicts_least_recently_used_idle_models() -> None:
    # Given three READY models: a used at t=5, b busy, c used at t=3, d used at t=1
    s = ColdStartScheduler(memory_budget_mib=400)
    for name, t in (("a", 0.0), ("b", 0.0), ("c", 0.0), ("d", 0.0)):
        ready(s, name, 100, t)
    s.request("a", 100, 5.0)
    s.job_started("b", 4.0)
    s.request("c", 100, 3.0)
    s.request("d", 100, 1.0)
    # When a 150 MiB model is requested
    s.request("new", 150, 10.0)
    actions = s.next_actions(10.0)
    # Then the two LRU idle ones go (d, then c), never the busy b; the load waits for the drain
    assert actions == [Evict("d"), Evict("c")]
    assert s.next_actions(11.0) == []  # no second round of evictions while they drain
    s.drained("d")
    s.drained("c")
    assert s.next_actions(12.0) == [StartLoad("new", 1)]
    assert s.state("a") == s.state("b") == InstanceState.READY


def test_no_eviction_when_it_could_not_make_room() -> None:
    s = ColdStartScheduler(memory_budget_mib=200)
    ready(s, "busy", 100, 0.0)
    ready(s, "idle", 100, 0.0)
    s.job_started("busy", 1.0)
    s.request("huge", 200, 2.0)
    assert s.next_actions(2.0) == []
    assert s.state("idle") == InstanceState.READY


def test_a_pinned_model_is_never_evicted() -> None:
    # Given the worker's own embedding model, pinned and least recently used
    s = ColdStartScheduler(memory_budget_mib=200)
    ready(s, "embedder", 100, 0.0)
    s.pin("embedder")
    ready(s, "chat", 100, 1.0)
    # When another model needs room
    s.request("other", 100, 2.0)
    # Then the idle unpinned one goes, though it was used more recently
    assert s.next_actions(2.0) == [Evict("chat")]
    assert s.state("embedder") == InstanceState.READY


def test_failed_load_is_retried_with_backoff_and_does_not_block_others() -> None:
    s = ColdStartScheduler(memory_budget_mib=100, max_attempts=3, retry_backoff_s=10.0)
    s.request("flaky", 60, 0.0, priority=9)
    s.request("steady", 60, 0.0, priority=1)
    assert s.next_actions(0.0) == [StartLoad("flaky", 1)]
    assert s.load_failed("flaky", 4.0, "CUDA OOM") is None
    assert s.state("flaky") == InstanceState.FAILED
    # flaky waits out its backoff (until t=14); steady goes meanwhile
    assert s.next_actions(4.0) == [StartLoad("steady", 1)]
    assert s.next_retry_s() == 14.0
    s.loaded("steady", 8.0)
    s.warmed_up("steady", 8.0)
    s.job_started("steady", 8.0)
    s.job_finished("steady", 9.0)
    # at t=14, flaky (priority 9) is the head again and evicts the idle steady
    assert s.next_actions(14.0) == [Evict("steady")]
    s.drained("steady")
    assert s.next_actions(14.0) == [StartLoad("flaky", 2)]
    assert s.load_failed("flaky", 15.0, "CUDA OOM") is None
    assert s.next_retry_s() == 35.0  # backoff doubles
    assert s.next_actions(35.0) == [StartLoad("flaky", 3)]
    assert s.load_failed("flaky", 36.0, "CUDA OOM") == GiveUp("flaky", 3, "CUDA OOM")
    assert s.state("flaky") is None and s.pending_models() == []


def test_simulation_drives_retries_evictions_and_warm_up() -> None:
    models = [
        SimModel("a", 60, load_s=10, warmup_s=2, priority=2, failures=1),
        SimModel("b", 60, load_s=10, warmup_s=2, priority=1),
        SimModel("c", 60, load_s=10, warmup_s=2, priority=0, requested_at_s=1.0),
    ]
    result = simulate(ColdStartScheduler(120, retry_backoff_s=3.0), models, drain_s=1.0)
    assert result.order("start") == ["a", "b", "c", "a"]
    assert result.order("fail") == ["a"]
    assert result.order("evict") == ["b"]  # idle LRU makes room for a's retry
    # a fails at 5 (c takes its memory), retries when b has drained at 13: 13 + 10 + 2
    assert result.ready_at_s == {"b": 12.0, "c": 17.0, "a": 25.0}
    assert result.gave_up == []


def test_simulated_contention_slows_parallel_loads() -> None:
    models = [SimModel(f"m{i}", 10, load_s=30) for i in range(2)]
    assert simulate(ColdStartScheduler(100), models, contention=0.5).makespan_s == 45.0
    assert simulate(ColdStartScheduler(100), models).makespan_s == 30.0
