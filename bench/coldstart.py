"""Cold start of 1, 2, 4, 8 models: seed 003's table reproduced, and infermq's scheduler against
the best schedule that exhaustive search finds, in a simulation driving the real scheduler.

    python bench/coldstart.py            # tables on stdout, plot in bench/out/coldstart.png

The physics (routing/coldstart_sim.py): a model takes ``load_s`` to load alone plus 2 s of
warm-up; k loads at once each run at 1 / (1 + 0.57 (k - 1)) of solo speed (the shared load
path; 0.57 reproduces seed 003's "parallel, contention" column: 30/47/81/150 s against the
seed's 30/50/80/150 s); memory is held from load start until an evicted model has drained (1 s);
a READY model serves its waiting burst for 5 s, then is idle and may be evicted (LRU).

Table 1 is seed 003's scenario: identical models, 30 s and 14 GiB each, memory ample.
Table 2 puts the same loads under a 40 GiB budget (two 14 GiB models at a time, so reaching
"every model READY once" needs evictions) and compares:

- naive: a FIFO loader that polls for free memory every 5 s (seed 003's "T+30s A done, T+35s B
  starts") and unloads the oldest idle model when it needs room;
- infermq: ``routing.coldstart.ColdStartScheduler`` (priority, then deadline; LRU eviction);
- best: the minimum over every load order (n! orders, the scheduler driven with that order as
  priorities) and every cap on parallel loads: the optimal makespan among list schedules with
  the same physics, memory needs and budget. Goal: infermq <= 1.1 x best.

Table 3 repeats table 2 with varied models (24-36 s, 12-16 GiB, deadlines not in size order),
where the load order matters.
"""

from __future__ import annotations

import itertools
import math
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from routing.coldstart import Action, ColdStartScheduler, Evict, GiveUp, StartLoad  # noqa: E402
from routing.coldstart_sim import SimModel, simulate  # noqa: E402

GIB = 1024
CONTENTION = 0.57
DRAIN_S = 1.0
SERVE_S = 5.0
WARMUP_S = 2.0
BUDGET_MIB = 40 * GIB
POLL_S = 5.0
SEED_TABLE = {1: (30, 30, 30), 2: (60, 30, 50), 4: (120, 30, 80), 8: (240, 30, 150)}
OUT = Path(__file__).parent / "out"


class NaivePoller:
    """The baseline: FIFO loads, started at 5 s polls when memory is free; no LRU, no priority."""

    def __init__(self, memory_budget_mib: int) -> None:
        self.budget = memory_budget_mib
        self.queue: list[tuple[str, int]] = []
        self.resident: dict[str, dict[str, float]] = {}  # model -> memory, loaded_at, busy, ready
        self.next_poll_s = 0.0

    def request(self, model: str, memory_mib: int, now_s: float, *, priority: int = 0,
                deadline_s: float = math.inf) -> None:
        self.queue.append((model, memory_mib))

    def next_actions(self, now_s: float) -> list[Action]:
        if now_s + 1e-9 < self.next_poll_s:
            return []
        self.next_poll_s = now_s + POLL_S
        actions: list[Action] = []
        used = sum(r["memory"] for r in self.resident.values())
        while self.queue:
            model, memory = self.queue[0]
            if used + memory <= self.budget:
                self.queue.pop(0)
                self.resident[model] = {"memory": memory, "loaded_at": now_s, "busy": 1,
                                        "ready": 0, "draining": 0}
                used += memory
                actions.append(StartLoad(model, 1))
                continue
            idle = [m for m, r in self.resident.items()
                    if r["ready"] and not r["busy"] and not r["draining"]]
            if idle:
                oldest = min(idle, key=lambda m: self.resident[m]["loaded_at"])
                self.resident[oldest]["draining"] = 1
                actions.append(Evict(oldest))
            break
        return actions

    def loaded(self, model: str, now_s: float) -> None:
        pass

    def warmed_up(self, model: str, now_s: float) -> None:
        self.resident[model]["ready"] = 1

    def load_failed(self, model: str, now_s: float, error: str) -> GiveUp | None:
        raise AssertionError("no failures in this benchmark")

    def drained(self, model: str) -> None:
        del self.resident[model]

    def job_started(self, model: str, now_s: float) -> None:
        self.resident[model]["busy"] = 1

    def job_finished(self, model: str, now_s: float) -> None:
        self.resident[model]["busy"] = 0

    def next_retry_s(self) -> float | None:
        return self.next_poll_s if self.queue else None


def uniform_models(n: int) -> list[SimModel]:
    return [SimModel(f"m{i}", 14 * GIB, 30 - WARMUP_S, warmup_s=WARMUP_S, serve_s=SERVE_S,
                     deadline_s=60.0 + 10 * i) for i in range(n)]


def varied_models(n: int) -> list[SimModel]:
    rng = random.Random(3)
    models = []
    for i in range(n):
        load_s = rng.uniform(24, 36) - WARMUP_S
        memory = rng.randint(12, 16) * GIB
        models.append(SimModel(f"m{i}", memory, round(load_s, 1), warmup_s=WARMUP_S,
                               serve_s=SERVE_S, deadline_s=60.0 + 10 * rng.randrange(n)))
    return models


def run(scheduler: object, models: list[SimModel], contention: float = CONTENTION) -> float:
    return simulate(scheduler, models, contention=contention,  # type: ignore[arg-type]
                    drain_s=DRAIN_S).makespan_s


def best_makespan(models: list[SimModel], budget_mib: int) -> float:
    """Exhaustive search over load orders and parallel-load caps (orders of equal models once)."""
    max_parallel = max(1, budget_mib // min(m.memory_mib for m in models))
    best = math.inf
    seen: set[tuple[tuple[int, float], ...]] = set()
    for order in itertools.permutations(models):
        shape = tuple((m.memory_mib, m.load_s) for m in order)
        if shape in seen:
            continue
        seen.add(shape)
        ranked = [replace(m, priority=len(order) - i) for i, m in enumerate(order)]
        for cap in range(1, max_parallel + 1):
            scheduler = ColdStartScheduler(budget_mib, max_parallel_loads=cap)
            best = min(best, run(scheduler, ranked))
    return best


def budget_table(title: str, make: object) -> list[tuple[int, float, float, float]]:
    print(f"\n{title}")
    print(f"{'models':>6} | {'naive s':>8} | {'infermq s':>9} | {'best s':>7} | "
          f"{'infermq/best':>12} | {'naive/infermq':>13} | search")
    rows = []
    for n in (1, 2, 4, 8):
        models = make(n)  # type: ignore[operator]
        naive = run(NaivePoller(BUDGET_MIB), models)
        ours = run(ColdStartScheduler(BUDGET_MIB), models)
        started = time.perf_counter()
        best = best_makespan(models, BUDGET_MIB)
        search_s = time.perf_counter() - started
        rows.append((n, naive, ours, best))
        print(f"{n:>6} | {naive:>8.1f} | {ours:>9.1f} | {best:>7.1f} | {ours / best:>12.3f} | "
              f"{naive / ours:>13.2f} | {search_s:.1f}s")
    return rows


def main() -> None:
    print("Table 1 - seed 003 reproduced (identical models: 30 s, 14 GiB; memory ample)")
    print(f"{'models':>6} | {'serial seed/sim':>15} | {'parallel ample seed/sim':>23} | "
          f"{'parallel contention seed/sim':>28}")
    ample = 10**9
    for n in (1, 2, 4, 8):
        models = uniform_models(n)
        serial = run(ColdStartScheduler(ample, max_parallel_loads=1), models)
        parallel = run(ColdStartScheduler(ample), models, contention=0.0)
        contended = run(ColdStartScheduler(ample), models)
        s = SEED_TABLE[n]
        print(f"{n:>6} | {s[0]:>6} / {serial:>6.1f} | {s[1]:>12} / {parallel:>8.1f} | "
              f"{s[2]:>15} / {contended:>10.1f}")

    uniform = budget_table(
        f"Table 2 - identical models under a {BUDGET_MIB // GIB} GiB budget "
        "(time until every model has been READY)", uniform_models)
    varied = budget_table(
        f"Table 3 - varied models (24-36 s, 12-16 GiB) under a {BUDGET_MIB // GIB} GiB budget",
        varied_models)

    OUT.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, rows, title in ((axes[0], uniform, "identical models"),
                            (axes[1], varied, "varied models")):
        ns = [r[0] for r in rows]
        ax.plot(ns, [r[1] for r in rows], "o-", label="naive FIFO poller")
        ax.plot(ns, [r[2] for r in rows], "s-", label="infermq ColdStartScheduler")
        ax.plot(ns, [r[3] for r in rows], "k--", label="best (exhaustive search)")
        ax.set_title(f"{title}, {BUDGET_MIB // GIB} GiB budget")
        ax.set_xlabel("models cold-started")
        ax.set_xticks(ns)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("seconds until every model has been READY")
    axes[0].legend()
    fig.tight_layout()
    path = OUT / "coldstart.png"
    fig.savefig(path, dpi=120)
    print(f"\nplot: {path}")


if __name__ == "__main__":
    main()
