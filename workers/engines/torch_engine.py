"""The PyTorch engine: embed and classify on transformers models, batched.

One engine holds one model; the head is chosen by the task the registry gives it (``embed`` →
the bare encoder with mean pooling, ``classify`` → a sequence classifier). Generation is the
paged engine's (``workers/engines/paged``; registry engine ``paged``). The device is CUDA when
present, else the CPU; the dtype defaults to float16 on CUDA and float32 on the CPU.

``run_batch`` checks each request's input alone first, so a malformed one fails with its own
error and the rest run; inputs of multi-input requests are flattened into one forward pass and
split back afterwards.

Texts are tokenized with a private copy of the Rust tokenizer whose settings never change
(transformers' ``tokenizer(...)`` reconfigures the shared one on every call: half the speed on
2,048 texts, and unsafe across threads), ahead by ``prepare`` in the task thread that submits
the job, so the batcher's thread only pads ids, runs the model and converts the outputs.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from infermq.errors import ConfigError, EngineError, EngineInputError, EngineUnavailable
from infermq.jobs import TaskType
from infermq.registry import ModelSpec
from workers.engines.base import Engine, EngineOutput, EngineRequest, texts_of
from workers.engines.sources import prepare_model

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def choose_device(device: str | None) -> torch.device:
    """The device asked for, else CUDA when present, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def choose_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """The dtype asked for, else float16 on CUDA and float32 elsewhere.

    Raises:
        ConfigError: ``dtype`` is not one of float32, float16, bfloat16.
    """
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


class TorchEngine(Engine):
    """A transformers model serving one task kind on one device."""

    def __init__(self, spec: ModelSpec, models_dir: Path, device: str | None = None,
                 dtype: str | None = None) -> None:
        super().__init__(spec)
        kinds = {task for task in spec.task_types if task != TaskType.AUTO}
        if len(kinds) != 1:
            raise ConfigError(
                f"model {spec.name} lists task types {sorted(kinds)}; the torch engine serves "
                "exactly one per model: register one model per task type")
        self.task_type = kinds.pop()
        if self.task_type not in (TaskType.EMBED, TaskType.CLASSIFY):
            raise ConfigError(
                f"model {spec.name}: the torch engine serves embed and classify; generate "
                "models use engine = \"paged\"")
        self.models_dir = models_dir
        self.device = choose_device(device)
        self.dtype = choose_dtype(dtype, self.device)
        self.launches_gpu_work = self.device.type == "cuda"
        self.model: Any = None
        self.tokenizer: Any = None
        self._encoder: Any = None
        self._max_positions = 512

    def load(self) -> None:
        """Loads the prepared weights (preparing them first if needed) onto the device.

        Raises:
            EngineUnavailable: the weights cannot be found or loaded.
        """
        from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

        path = prepare_model(self.spec, self.models_dir)
        model_class = {
            TaskType.EMBED: AutoModel,
            TaskType.CLASSIFY: AutoModelForSequenceClassification,
        }[self.task_type]
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
            model = model_class.from_pretrained(str(path), dtype=self.dtype)
        except (OSError, ValueError) as e:
            raise EngineUnavailable(
                f"cannot load model {self.spec.name} from {path}: {e}; run "
                "`infermq models --prepare` to rebuild it") from e
        self.model = model.to(self.device).eval()
        config = self.model.config
        positions = getattr(config, "max_position_embeddings", None) or getattr(
            config, "n_positions", None)
        self._max_positions = int(positions) if positions else 512
        self._encoder = self._private_encoder()

    def _private_encoder(self) -> Any:
        """A copy of the Rust tokenizer, configured once: no padding; truncation for texts."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            return None
        encoder = copy.deepcopy(backend)
        encoder.no_padding()
        encoder.no_truncation()
        encoder.enable_truncation(min(self._max_positions, self.tokenizer.model_max_length))
        return encoder

    def unload(self) -> None:
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @property
    def memory_mib(self) -> int:
        if self.model is None:
            return self.spec.memory_mib
        tensors = [*self.model.parameters(), *self.model.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors) // 2**20

    def compatibility_key(self, request: EngineRequest) -> Hashable:
        """Any two requests of the model's task share a batch."""
        return (request.task_type,)

    def run_batch(self, requests: Sequence[EngineRequest]) -> list[EngineOutput]:
        """Runs every request whose input is valid in one batched pass.

        Raises:
            EngineError: the engine is not loaded.
        """
        if self.model is None:
            raise EngineError(f"engine {self.spec.name} is not loaded: call load() first")
        outputs: list[EngineOutput | None] = [None] * len(requests)
        runnable: list[int] = []
        for i, request in enumerate(requests):
            if request.task_type != self.task_type:
                outputs[i] = EngineOutput(None, error=EngineInputError(
                    f"job {request.job_id}: model {self.spec.name} serves {self.task_type}, "
                    f"not {request.task_type}"))
            else:
                runnable.append(i)
        batch = [requests[i] for i in runnable]
        run = {TaskType.EMBED: self._embed, TaskType.CLASSIFY: self._classify}[self.task_type]
        for i, output in zip(runnable, run(batch), strict=True):
            outputs[i] = output
        return [output for output in outputs if output is not None]

    def prepare(self, request: EngineRequest) -> None:
        """Tokenizes the request's texts into ``request.prepared`` (or keeps its error)."""
        if self.model is None or request.task_type != self.task_type:
            return
        try:
            request.prepared = self._text_ids(texts_of(request))
        except EngineError as e:
            request.prepared = e

    def _text_ids(self, texts: list[str]) -> list[list[int]]:
        if self._encoder is None:
            return list(self.tokenizer(
                texts, truncation=True,
                max_length=min(self._max_positions, self.tokenizer.model_max_length),
            )["input_ids"])
        return [encoding.ids for encoding in self._encoder.encode_batch(texts)]

    def _ids_or_errors(self, requests: Sequence[EngineRequest]
                       ) -> tuple[list[list[int]], list[tuple[int, int] | EngineOutput]]:
        """Flattens every request's token ids; per request, its slice of them or its error."""
        ids: list[list[int]] = []
        spans: list[tuple[int, int] | EngineOutput] = []
        for request in requests:
            mine = request.prepared
            if mine is None:
                try:
                    mine = self._text_ids(texts_of(request))
                except EngineError as e:
                    mine = e
            if isinstance(mine, EngineError):
                spans.append(EngineOutput(None, error=mine))
                continue
            spans.append((len(ids), len(ids) + len(mine)))
            ids.extend(mine)
        return ids, spans

    def _encode(self, ids: list[list[int]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Pads token ids into the model's inputs."""
        longest = max(len(row) for row in ids)
        input_ids = np.full((len(ids), longest), self.tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(ids), longest), dtype=np.int64)
        left = self.tokenizer.padding_side == "left"
        for i, row in enumerate(ids):
            where = slice(longest - len(row), longest) if left else slice(0, len(row))
            input_ids[i, where] = row
            mask[i, where] = 1
        attention_mask = torch.from_numpy(mask).to(self.device)
        encoded = {"input_ids": torch.from_numpy(input_ids).to(self.device),
                   "attention_mask": attention_mask}
        return encoded, attention_mask

    def _split(self, requests: Sequence[EngineRequest],
               spans: list[tuple[int, int] | EngineOutput], values: list[Any],
               tokens: list[int]) -> list[EngineOutput]:
        outputs = []
        for request, span in zip(requests, spans, strict=True):
            if isinstance(span, EngineOutput):
                outputs.append(span)
                continue
            start, end = span
            value = values[start:end] if request.is_multi_input else values[start]
            outputs.append(EngineOutput(value, tokens=sum(tokens[start:end])))
        return outputs

    @torch.inference_mode()
    def _embed(self, requests: Sequence[EngineRequest]) -> list[EngineOutput]:
        ids, spans = self._ids_or_errors(requests)
        if not ids:
            return self._split(requests, spans, [], [])
        encoded, mask = self._encode(ids)
        hidden = self.model(**encoded).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        vectors = torch.nn.functional.normalize(pooled.float(), p=2, dim=-1)
        return self._split(requests, spans, vectors.cpu().tolist(), [len(row) for row in ids])

    @torch.inference_mode()
    def _classify(self, requests: Sequence[EngineRequest]) -> list[EngineOutput]:
        ids, spans = self._ids_or_errors(requests)
        if not ids:
            return self._split(requests, spans, [], [])
        encoded, _ = self._encode(ids)
        probs = torch.softmax(self.model(**encoded).logits.float(), dim=-1).cpu().tolist()
        labels = [self.model.config.id2label[i] for i in range(len(probs[0]))]
        values = [
            {"label": labels[max(range(len(row)), key=row.__getitem__)],
             "scores": dict(zip(labels, row, strict=True))}
            for row in probs
        ]
        return self._split(requests, spans, values, [len(row) for row in ids])
