"""The ``openai`` engine: a model served elsewhere behind an OpenAI-compatible HTTP API.

Seed 001 sends the hardest tasks to a cloud model through a gateway; to infermq that model is
one more registry entry that routing, QoS and fallbacks treat like a local one. The engine POSTs
``/chat/completions`` with httpx: up to ``max_concurrency`` requests of a batch at once, each
attempt cut at ``timeout_s``, transient failures (timeouts, connection errors, 429 and 5xx)
retried with exponential backoff within the job's own deadline. When the retries are spent the
job's error is ``EngineUnavailable``, which sends a routed job to its next fallback.

The API key is read from the environment variable the registry names, never from the registry.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from infermq.errors import EngineInputError, EngineUnavailable
from infermq.jobs import TaskType
from infermq.registry import ModelSpec, RemoteEndpoint
from workers.engines.base import Engine, EngineOutput, EngineRequest, chats_of

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class OpenAIRemoteEngine(Engine):
    """Generation on an OpenAI-compatible endpoint; nothing is loaded on this machine."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        if spec.remote is None:
            raise EngineUnavailable(f"model {spec.name} has engine openai but no remote table")
        self.remote: RemoteEndpoint = spec.remote
        self._client: httpx.Client | None = None
        self._pool: ThreadPoolExecutor | None = None

    def load(self) -> None:
        """Opens the HTTP connection pool (no request: a cloud call at start would cost money).

        Raises:
            EngineUnavailable: the API key's environment variable is named but not set.
        """
        headers = {"Content-Type": "application/json"}
        if self.remote.api_key_env:
            key = os.environ.get(self.remote.api_key_env)
            if not key:
                raise EngineUnavailable(
                    f"model {self.spec.name}: set {self.remote.api_key_env} to the API key of "
                    f"{self.remote.base_url}")
            headers["Authorization"] = f"Bearer {key}"
        limits = httpx.Limits(max_connections=self.remote.max_concurrency,
                              max_keepalive_connections=self.remote.max_concurrency)
        self._client = httpx.Client(base_url=self.remote.base_url.rstrip("/"), headers=headers,
                                    timeout=self.remote.timeout_s, limits=limits)
        self._pool = ThreadPoolExecutor(self.remote.max_concurrency,
                                        thread_name_prefix=f"remote-{self.spec.name}")

    def warm_up(self) -> None:
        return None

    def unload(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def compatibility_key(self, request: EngineRequest) -> tuple[TaskType]:
        return (request.task_type,)  # every request is its own HTTP call

    def run_batch(self, requests: Sequence[EngineRequest]) -> list[EngineOutput]:
        if self._pool is None:
            raise EngineUnavailable(f"model {self.spec.name} is not loaded: call load() first")
        return list(self._pool.map(self._run_one, requests))

    def _run_one(self, request: EngineRequest) -> EngineOutput:
        if request.task_type != TaskType.GENERATE:
            return EngineOutput(None, error=EngineInputError(
                f"job {request.job_id}: remote model {self.spec.name} only generates"))
        outputs: list[str] = []
        tokens = 0
        try:
            for chat in chats_of(request):
                text, used = self._complete(request, chat)
                outputs.append(text)
                tokens += used
        except (EngineUnavailable, EngineInputError) as e:
            return EngineOutput(None, error=e)
        if request.on_token is not None:
            for text in outputs:
                request.on_token(text)
        return EngineOutput(outputs if request.is_multi_input else outputs[0], tokens=tokens)

    def _complete(self, request: EngineRequest, chat: list[dict[str, str]]) -> tuple[str, int]:
        """One chat completion, retried on transient failures within the job's deadline."""
        client = self._client
        if client is None:
            raise EngineUnavailable(f"model {self.spec.name} is not loaded: call load() first")
        params = request.params
        body: dict[str, Any] = {"model": self.remote.model, "messages": chat,
                                "max_tokens": params.max_new_tokens,
                                "temperature": params.temperature, "top_p": params.top_p}
        if params.seed is not None:
            body["seed"] = params.seed
        url = f"{self.remote.base_url.rstrip('/')}/chat/completions"
        last_error = "no attempt made"
        for attempt in range(self.remote.max_retries + 1):
            if attempt:
                wait_s = self.remote.backoff_s * 2 ** (attempt - 1)
                if request.expired(time.monotonic() + wait_s):
                    break
                time.sleep(wait_s)
            try:
                response = client.post("/chat/completions", json=body)
            except httpx.TimeoutException:
                last_error = f"no answer within {self.remote.timeout_s} s"
                continue
            except httpx.HTTPError as e:
                last_error = f"{type(e).__name__}: {e}"
                continue
            if response.status_code in RETRYABLE_STATUS:
                last_error = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code >= 400:
                raise EngineInputError(
                    f"job {request.job_id}: {url} refused the request with HTTP "
                    f"{response.status_code}: {response.text[:200]}")
            return _parse_completion(response, url)
        raise EngineUnavailable(
            f"remote model {self.spec.name} at {url} failed {attempt + 1} attempt(s): "
            f"{last_error}")


def _parse_completion(response: httpx.Response, url: str) -> tuple[str, int]:
    """The text and completion tokens of an OpenAI chat completion.

    Raises:
        EngineUnavailable: the answer is not a chat completion (a misconfigured endpoint).
    """
    try:
        data = response.json()
        text = data["choices"][0]["message"]["content"]
        tokens = int((data.get("usage") or {}).get("completion_tokens") or 0)
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise EngineUnavailable(
            f"{url} answered something that is not a chat completion: {response.text[:200]}"
        ) from e
    return str(text), tokens
