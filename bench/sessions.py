"""Session context restore from each tier, against re-sending the whole context with each job.

What is measured (one 20-turn chat, about 2 KB of text):

- restore from each tier, as the worker calls it: memory (``restore_context`` hitting the
  LRU), Redis (``SessionStore.load_context``: Lua GET + zlib + JSON), PostgreSQL (the same
  call after the Redis copy is dropped: SELECT + decode + the Redis refill it does);
- the baseline, re-sending the context: the producer encodes a ``JobMessage`` whose input is
  the whole chat and the worker decodes it (CPU only), and its extra bytes per job;
- the whole hand-off through RabbitMQ (publish with confirm, ``basic_get``, decode): a message
  carrying the whole chat vs a message carrying the new turn plus a session id and a restore;
- the memory of 100k sleeping sessions. Sleeping sessions are not in Redis by design (SLEEP
  drops the hot copies), so the tier that holds them, PostgreSQL, is measured; and the Redis
  tier holding 100k contexts (its bound, ``session_redis_max_contexts``), by ``MEMORY USAGE``
  of each key on a dedicated prefix, deleted afterwards.

Run: ``python bench/sessions.py [--iterations 2000] [--sessions 100000]``. Needs the services
of a developer machine; works in its own PostgreSQL schema and Redis prefix and removes both.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import matplotlib
import pika
import redis
from sqlalchemy import Engine, func, insert, select, text

from infermq.jobs import ChatMessage, JobMessage, TaskType
from infermq.sessions import SessionContext, SessionState, encode_context
from infermq.settings import Settings
from infermq.tables import sessions
from stores.database import dispose_engines, get_engine
from stores.migrate import upgrade_to_head
from stores.session_store import SessionStore
from workers.context_cache import ContextCache, restore_context

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OUT_DIR = Path(__file__).parent / "out"
TURNS = 20
RESEND = "re-send: encode+decode (baseline)"
HANDOFF = "hand-off: whole context in job (baseline)"
WORDS = [
    "the",
    "model",
    "answer",
    "question",
    "context",
    "token",
    "batch",
    "queue",
    "worker",
    "redis",
    "session",
    "cache",
    "job",
    "result",
    "latency",
    "priority",
    "request",
    "user",
    "please",
    "explain",
    "why",
    "how",
    "what",
    "when",
    "a",
    "an",
    "of",
    "to",
    "in",
    "is",
    "are",
    "was",
    "be",
    "this",
    "that",
    "it",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "summary",
    "detail",
    "example",
    "step",
]


def chat_context(rng: random.Random) -> SessionContext:
    """20 turns (a user question and an assistant answer each), about 2 KB of text."""
    context = SessionContext()
    for _ in range(TURNS):
        question = " ".join(rng.choice(WORDS) for _ in range(7))
        answer = " ".join(rng.choice(WORDS) for _ in range(11))
        context = context.with_turn(
            [
                ChatMessage(role="user", content=question),
                ChatMessage(role="assistant", content=answer),
            ]
        )
    return context


TimedPath = tuple[Callable[[], object], Callable[[], object] | None]  # (timed call, untimed setup)


def timed_ms_interleaved(paths: dict[str, TimedPath], iterations: int) -> dict[str, list[float]]:
    """Milliseconds per call of each path, the paths taking turns in every iteration.

    The machine is shared, so its noise comes in bursts; interleaving gives every path the
    same bursts, which keeps the ratios fair even when the tails are not.
    """
    samples: dict[str, list[float]] = {name: [] for name in paths}
    warm_up = min(50, iterations)  # connections, script cache
    for i in range(warm_up + iterations):
        for name, (call, before) in paths.items():
            if before is not None:
                before()
            start = time.perf_counter()
            call()
            if i >= warm_up:
                samples[name].append((time.perf_counter() - start) * 1000)
    return samples


def p(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1]


def job_message(chat: list[ChatMessage], session_id: str | None) -> JobMessage:
    return JobMessage(
        job_id=str(uuid.uuid4()),
        task_type=TaskType.GENERATE,
        model="smollm2",
        input=chat,
        priority=5,
        session_id=session_id,
        timeout_s=60,
        submitted_at=datetime.now(UTC),
    )


def rabbit_round_trip(channel: object, queue: str, body: bytes) -> bytes:
    channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))  # type: ignore[attr-defined]
    _method, _props, received = channel.basic_get(queue, auto_ack=True)  # type: ignore[attr-defined]
    return bytes(received)


def measure_latency(
    settings: Settings, store: SessionStore, iterations: int
) -> tuple[dict[str, list[float]], dict[str, int]]:
    rng = random.Random(6)
    context = chat_context(rng)
    session_id = store.create().id
    with store.engine.begin() as conn:
        conn.execute(
            sessions.update()
            .where(sessions.c.id == session_id)
            .values(
                state=SessionState.ACTIVE.value,
                context_zlib=encode_context(context),
                turns=context.turns,
            )
        )
    store.redis_tier.write(session_id, context)
    cache = ContextCache(max_sessions=16, idle_ttl_s=3600)
    cache.put(session_id, context)
    chat = list(context.messages)
    new_turn = [ChatMessage(role="user", content="and one more question please")]
    full = job_message(chat + new_turn, None).model_dump_json().encode()
    slim = job_message(new_turn, session_id).model_dump_json().encode()

    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        paths: dict[str, TimedPath] = {
            "memory tier": (lambda: restore_context(cache, store, session_id, TURNS), None),
            "Redis tier": (lambda: store.load_context(session_id, TURNS), None),
            "PostgreSQL tier (+ Redis refill)": (
                lambda: store.load_context(session_id, TURNS),
                lambda: store.redis_tier.drop(session_id),
            ),
            RESEND: (
                lambda: JobMessage.model_validate_json(
                    job_message(chat + new_turn, None).model_dump_json()
                ),
                None,
            ),
            HANDOFF: (
                lambda: JobMessage.model_validate_json(
                    rabbit_round_trip(
                        channel,
                        queue,
                        job_message(chat + new_turn, None).model_dump_json().encode(),
                    )
                ),
                None,
            ),
            "hand-off: session id + Redis restore": (
                lambda: (
                    JobMessage.model_validate_json(
                        rabbit_round_trip(
                            channel,
                            queue,
                            job_message(new_turn, session_id).model_dump_json().encode(),
                        )
                    ),
                    store.load_context(session_id, TURNS),
                ),
                None,
            ),
        }
        samples = timed_ms_interleaved(paths, iterations)
    finally:
        connection.close()
    sizes = {
        "text_chars": sum(len(m.content) for m in chat),
        "context_zlib_bytes": len(encode_context(context)),
        "job_with_context_bytes": len(full),
        "job_with_session_id_bytes": len(slim),
    }
    return samples, sizes


def measure_memory(store: SessionStore, count: int) -> dict[str, float]:
    """Bytes for ``count`` sleeping sessions in PostgreSQL, and ``count`` contexts in Redis."""
    rng = random.Random(7)
    blobs = [encode_context(chat_context(rng)) for _ in range(64)]
    engine: Engine = store.engine
    with engine.connect() as conn:
        before_pg = conn.execute(select(func.pg_total_relation_size("sessions"))).scalar_one()
    batch = 5000
    ids = [f"bench-{i:07d}" for i in range(count)]
    for start in range(0, count, batch):
        rows = [
            {
                "id": sid,
                "state": SessionState.SLEEP.value,
                "context_zlib": blobs[i % 64],
                "turns": TURNS,
                "next_seq": TURNS,
                "done_seq": TURNS,
                "model_history": [
                    {"seq": t, "turn": t + 1, "model": "smollm2", "job_id": None}
                    for t in range(TURNS)
                ],
            }
            for i, sid in enumerate(ids[start : start + batch], start)
        ]
        with engine.begin() as conn:
            conn.execute(insert(sessions), rows)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE sessions"))
        after_pg = conn.execute(select(func.pg_total_relation_size("sessions"))).scalar_one()

    client = store.redis
    info_before = int(client.info("memory")["used_memory"])
    tier = store.redis_tier
    tier.max_contexts = count + 1
    for i, session_id in enumerate(ids):
        tier.write_encoded(session_id, TURNS, blobs[i % 64])
    info_after = int(client.info("memory")["used_memory"])
    key_bytes = 0
    for start in range(0, count, 1000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + 1000, count)):
            pipe.memory_usage(store.keys.session_context(ids[i]), samples=0)
        key_bytes += sum(int(v or 0) for v in pipe.execute())
    index_bytes = int(client.memory_usage(store.keys.session_index(), samples=0) or 0)
    for start in range(0, count, 1000):
        client.delete(*[store.keys.session_context(s) for s in ids[start : start + 1000]])
    client.delete(store.keys.session_index())
    return {
        "pg_bytes": float(after_pg - before_pg),
        "redis_memory_usage_bytes": float(key_bytes + index_bytes),
        "redis_info_delta_bytes": float(info_after - info_before),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=100_000)
    args = parser.parse_args()

    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        database_url="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        database_schema=f"bench_{tag}",
        redis_url="redis://127.0.0.1:6379/1",
        redis_prefix=f"bench{tag}",
    )
    upgrade_to_head(settings)
    client = redis.Redis.from_url(settings.redis_url)
    store = SessionStore.from_settings(settings, get_engine(settings), client)
    try:
        samples, sizes = measure_latency(settings, store, args.iterations)
        memory = measure_memory(store, args.sessions)
    finally:
        leftovers = list(client.scan_iter(match=f"{settings.redis_prefix}:*", count=1000))
        if leftovers:
            client.delete(*leftovers)
        with get_engine(settings).begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{settings.database_schema}" CASCADE'))
        dispose_engines()

    print(
        f"\ncontext: {TURNS} turns, {sizes['text_chars']} chars of text, "
        f"{sizes['context_zlib_bytes']} B compressed; job message {sizes['job_with_context_bytes']}"
        f" B with the context vs {sizes['job_with_session_id_bytes']} B with a session id"
    )
    load_1m, _, _ = os.getloadavg()
    print(
        f"iterations: {args.iterations} per row, interleaved; {os.cpu_count()} CPUs, load "
        f"average {load_1m:.1f} at the end\n"
    )
    baselines = {name: HANDOFF if name.startswith("hand-off") else RESEND for name in samples}
    print(f"| {'path':<42} | p50 ms | p99 ms | p50 / its baseline |")
    print(f"| {'-' * 42} | -----: | -----: | -----------------: |")
    for name, values in samples.items():
        ratio = statistics.median(values) / statistics.median(samples[baselines[name]])
        print(f"| {name:<42} | {p(values, 50):6.3f} | {p(values, 99):6.3f} | {ratio:18.2f} |")
    n = args.sessions
    print(f"\n| {n} sessions of that size                   | MiB    | B/session |")
    print("| ------------------------------------------- | -----: | --------: |")
    for label, key in (
        ("sleeping, in PostgreSQL (their tier)", "pg_bytes"),
        ("in the Redis tier (MEMORY USAGE, keys+index)", "redis_memory_usage_bytes"),
        ("in the Redis tier (INFO used_memory delta)", "redis_info_delta_bytes"),
    ):
        print(f"| {label:<43} | {memory[key] / 2**20:6.1f} | {memory[key] / n:9.0f} |")
    redis_p99 = p(samples["Redis tier"], 99)
    print(
        f"\ngoals: p99 restore from Redis {redis_p99:.3f} ms (< 5 ms: "
        f"{'met' if redis_p99 < 5 else 'MISSED'}); {n} sessions in Redis "
        f"{memory['redis_memory_usage_bytes'] / 2**30:.3f} GiB (< 1 GB: "
        f"{'met' if memory['redis_memory_usage_bytes'] < 1e9 else 'MISSED'})"
    )

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 1]})
    names = list(samples)
    xs = range(len(names))
    left.bar([x - 0.2 for x in xs], [p(samples[k], 50) for k in names], 0.4, label="p50")
    left.bar([x + 0.2 for x in xs], [p(samples[k], 99) for k in names], 0.4, label="p99")
    left.set_xticks(
        list(xs), [k.replace(": ", ":\n").replace(" (", "\n(") for k in names], fontsize=7
    )
    left.set_yscale("log")
    left.set_ylabel("ms (log)")
    left.set_title(f"context restore, {TURNS}-turn chat (~2 KB)")
    left.legend()
    right.bar(
        ["PostgreSQL\n(sleeping)", "Redis\n(tier bound)"],
        [memory["pg_bytes"] / 2**20, memory["redis_memory_usage_bytes"] / 2**20],
    )
    right.axhline(1e9 / 2**20, color="red", linestyle="--", label="1 GB goal")
    right.set_ylabel("MiB")
    right.set_title(f"{n} sessions")
    right.legend()
    fig.tight_layout()
    path = OUT_DIR / "sessions.png"
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
