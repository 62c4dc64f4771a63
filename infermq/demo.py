"""``infermq demo``: the main job end to end, with a progress bar and a results table.

Starts a worker process, submits a few hundred mixed jobs (embeddings and generations, mixed
priorities, some repeated), waits for every result and summarizes per task type and model.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from infermq.errors import InfermqError
from infermq.settings import Settings

DEMO_MODELS = ["minilm", "smollm2"]
SENTENCES = [
    "RabbitMQ keeps the job until a worker acknowledges it.",
    "The GPU runs many requests together in one batch.",
    "A semantic cache answers a paraphrase without running the model.",
    "Sessions carry the conversation from one job to the next.",
    "PostgreSQL records every job and its result.",
    "Priorities let urgent requests overtake the backlog.",
]
QUESTIONS = [
    "What is a message queue?",
    "Name three colours of the rainbow.",
    "Why do GPUs like large batches?",
    "Write one sentence about the sea.",
    "What is the capital of France?",
]


@dataclass
class Outcome:
    task_type: str
    model: str
    ok: bool
    latency_s: float
    question: str = ""
    answer: str = ""


def _start_worker(settings: Settings, log_path: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings.as_env(), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "infermq.cli", "worker", f"--models={','.join(DEMO_MODELS)}",
             "--slots=32", "--loglevel=WARNING"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )


def _jobs(count: int, rng: random.Random) -> list[tuple[str, object, dict[str, object]]]:
    jobs: list[tuple[str, object, dict[str, object]]] = []
    for i in range(count):
        priority = rng.choice([1, 3, 5, 5, 7, 9])
        if i % 5 < 3:
            text = rng.choice(SENTENCES)
            if i % 10:  # most are unique, a few repeat exactly
                text = f"{text} (#{i})"
            jobs.append(("embed", text, {"priority": priority}))
        else:
            question = rng.choice(QUESTIONS)
            jobs.append(("generate", [{"role": "user", "content": question}],
                         {"priority": priority, "params": {"max_new_tokens": 20}}))
    return jobs


def run_demo(settings: Settings, count: int) -> None:
    """Runs the demo against the configured services and prints its results table.

    Raises:
        InfermqError: a service is down or the worker could not start.
    """
    from producer.client import Client

    console = Console()
    log_path = os.path.join(tempfile.gettempdir(), "infermq-demo-worker.log")
    console.print(f"starting a worker for {', '.join(DEMO_MODELS)} (log: {log_path})")
    worker = _start_worker(settings, log_path)
    outcomes: list[Outcome] = []
    try:
        with Client(settings) as client:
            rng = random.Random(7)
            progress = Progress("[progress.description]{task.description}", BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(), console=console)
            with progress:
                warm = progress.add_task("loading models in the worker", total=1)
                client.submit("embed", "warm up").result(timeout_s=600)
                client.submit("generate", "warm up",
                              params={"max_new_tokens": 2}).result(timeout_s=600)
                progress.update(warm, completed=1)
                done = progress.add_task(f"running {count} jobs", total=count)
                started = time.monotonic()
                with ThreadPoolExecutor(max_workers=32) as pool:
                    futures = [pool.submit(_run_one, client, job) for job in _jobs(count, rng)]
                    for future in as_completed(futures):
                        outcomes.append(future.result())
                        progress.advance(done)
                elapsed_s = time.monotonic() - started
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
    if worker.returncode not in (0, -signal.SIGTERM) and not outcomes:
        raise InfermqError(f"the demo worker exited with {worker.returncode}; see {log_path}")
    console.print(_table(outcomes, elapsed_s))
    answers = Table("question", "SmolLM2's answer", title="a few generated answers")
    seen: set[str] = set()
    for outcome in outcomes:
        if outcome.answer and outcome.question not in seen and len(seen) < 3:
            seen.add(outcome.question)
            answers.add_row(outcome.question, outcome.answer.strip())
    console.print(answers)


def _run_one(client: object, job: tuple[str, Any, dict[str, Any]]) -> Outcome:
    from producer.client import Client

    assert isinstance(client, Client)
    task_type, input, fields = job
    started = time.monotonic()
    try:
        result = client.submit(task_type, input, **fields).result(timeout_s=600)
        latency_s = time.monotonic() - started
        if task_type == "generate" and isinstance(input, list):
            return Outcome(task_type, result.model or "?", True, latency_s,
                           str(input[0]["content"]), str(result.output))
        return Outcome(task_type, result.model or "?", True, latency_s)
    except InfermqError:
        return Outcome(task_type, "?", False, time.monotonic() - started)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _table(outcomes: list[Outcome], elapsed_s: float) -> Table:
    groups: dict[tuple[str, str], list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        groups[(outcome.task_type, outcome.model)].append(outcome)
    table = Table("task type", "model", "jobs", "failures", "p50 latency ms", "p95 latency ms",
                  "jobs/s", title=f"infermq demo: {len(outcomes)} jobs in {elapsed_s:.1f} s")
    for (task_type, model), group in sorted(groups.items()):
        latencies = [o.latency_s * 1000 for o in group]
        table.add_row(task_type, model, str(len(group)), str(sum(not o.ok for o in group)),
                      f"{_percentile(latencies, 0.5):.0f}", f"{_percentile(latencies, 0.95):.0f}",
                      f"{len(group) / elapsed_s:.1f}")
    return table
