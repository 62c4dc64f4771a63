"""The PyTorch engine: embed, classify and generate on transformers models, batched.

One engine holds one model; the head is chosen by the task the registry gives it (``embed`` →
the bare encoder with mean pooling, ``classify`` → a sequence classifier, ``generate`` → a
causal LM). The device is CUDA when present, else the CPU; the dtype defaults to float16 on
CUDA and float32 on the CPU.

``run_batch`` checks each request's input alone first, so a malformed one fails with its own
error and the rest run; inputs of multi-input requests are flattened into one forward pass and
split back afterwards.

Texts are tokenized with a private copy of the Rust tokenizer whose settings never change
(transformers' ``tokenizer(...)`` reconfigures the shared one on every call: half the speed on
2,048 texts, and unsafe across threads), ahead by ``prepare`` in the task thread that submits
the job, so the batcher's thread only pads ids, runs the model and converts the outputs. On
CUDA the engine decodes in fixed shapes (``static_cache``), each decode step replayed as a CUDA
graph (``cuda_graphs``). A model with fewer KV heads than query heads attends with
``gqa_attention``, which does not copy each KV head per query head as transformers' ``sdpa`` does.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from infermq.errors import (
    ConfigError,
    EngineError,
    EngineInputError,
    EngineUnavailable,
    JobTimedOut,
)
from infermq.jobs import GenerationParams, TaskType
from infermq.registry import ModelSpec
from workers.engines.base import Engine, EngineOutput, EngineRequest, chats_of, texts_of
from workers.engines.cuda_graphs import DecodeGraphs
from workers.engines.generation import GenerationRow, final_text, generate_rows
from workers.engines.gqa_attention import GQA_SDPA, has_grouped_kv_heads, register_gqa_attention
from workers.engines.sources import prepare_model
from workers.engines.static_cache import PROMPT_MULTIPLE, plan_static_shape, round_up, row_bucket

log = logging.getLogger(__name__)

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
                 dtype: str | None = None, static_shapes: bool | None = None,
                 cuda_graphs: bool = True, gqa_attention: bool = True) -> None:
        super().__init__(spec)
        kinds = {task for task in spec.task_types if task != TaskType.AUTO}
        if len(kinds) != 1:
            raise ConfigError(
                f"model {spec.name} lists task types {sorted(kinds)}; the torch engine serves "
                "exactly one per model: register one model per task type")
        self.task_type = kinds.pop()
        self.models_dir = models_dir
        self.device = choose_device(device)
        self.dtype = choose_dtype(dtype, self.device)
        self.launches_gpu_work = self.device.type == "cuda"
        # Fixed shapes pay on a GPU (launch-bound, shape-sensitive) and cost on a CPU, where
        # every padded row is real arithmetic.
        self.static_shapes = self.device.type == "cuda" if static_shapes is None else static_shapes
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self.gqa_attention = gqa_attention
        self._decode_graphs: DecodeGraphs | None = None
        self.model: Any = None
        self.tokenizer: Any = None
        self._encoder: Any = None
        self._eos_ids: set[int] = set()
        self._max_positions = 512

    def load(self) -> None:
        """Loads the prepared weights (preparing them first if needed) onto the device.

        Raises:
            EngineUnavailable: the weights cannot be found or loaded.
        """
        from transformers import (
            AutoConfig,
            AutoModel,
            AutoModelForCausalLM,
            AutoModelForSequenceClassification,
            AutoTokenizer,
        )

        path = prepare_model(self.spec, self.models_dir)
        model_class = {
            TaskType.EMBED: AutoModel,
            TaskType.CLASSIFY: AutoModelForSequenceClassification,
            TaskType.GENERATE: AutoModelForCausalLM,
        }[self.task_type]
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
            attention: dict[str, str] = {}
            if self.gqa_attention and has_grouped_kv_heads(AutoConfig.from_pretrained(str(path))):
                register_gqa_attention()
                attention["attn_implementation"] = GQA_SDPA
            model = model_class.from_pretrained(str(path), dtype=self.dtype, **attention)
        except (OSError, ValueError) as e:
            raise EngineUnavailable(
                f"cannot load model {self.spec.name} from {path}: {e}; run "
                "`infermq models --prepare` to rebuild it") from e
        self.model = model.to(self.device).eval()
        config = self.model.config
        positions = getattr(config, "max_position_embeddings", None) or getattr(
            config, "n_positions", None)
        self._max_positions = int(positions) if positions else 512
        if self.task_type == TaskType.GENERATE:
            self.tokenizer.padding_side = "left"
            eos = self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id
            self._eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
            if self.tokenizer.pad_token_id is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
            if self.cuda_graphs:
                self._decode_graphs = DecodeGraphs(self.model, self.spec.name)
        self._encoder = self._private_encoder()

    def _private_encoder(self) -> Any:
        """A copy of the Rust tokenizer, configured once: no padding; truncation for texts."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            return None
        encoder = copy.deepcopy(backend)
        encoder.no_padding()
        encoder.no_truncation()
        if self.task_type != TaskType.GENERATE:
            encoder.enable_truncation(min(self._max_positions, self.tokenizer.model_max_length))
        return encoder

    def warm_up(self) -> None:
        """Runs one batch per row bucket up to ``spec.max_batch_size`` when shapes are fixed.

        With CUDA graphs it also captures each bucket's decode step at the cache length of a
        request of default ``max_new_tokens``, largest bucket first so the shared cache arena
        is sized once. Should fixed-shape decoding fail with this transformers version, the
        engine logs it and decodes with a growing cache instead, rather than failing every job.
        """
        super().warm_up()
        if not (self.static_shapes and self.task_type == TaskType.GENERATE):
            return
        rows = row_bucket(self.spec.max_batch_size)
        while rows >= 1:
            default = plan_static_shape(rows, PROMPT_MULTIPLE, GenerationParams().max_new_tokens,
                                        self._max_positions)
            if self._decode_graphs is not None and default is not None:
                self._decode_graphs.graph_for(rows, default.cache_len)
            batch = [EngineRequest(job_id="warm-up", task_type=TaskType.GENERATE, input="warm up",
                                   params=GenerationParams(max_new_tokens=2))] * rows
            try:
                self.run_batch(batch)
            except Exception as e:  # noqa: BLE001 - any failure means: do not use fixed shapes
                log.warning("fixed-shape decoding failed on %s (%s: %s); using a growing cache",
                            self.spec.name, type(e).__name__, e)
                self.static_shapes = False
                return
            rows //= 2

    def unload(self) -> None:
        self.model = None
        self._decode_graphs = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @property
    def memory_mib(self) -> int:
        if self.model is None:
            return self.spec.memory_mib
        tensors = [*self.model.parameters(), *self.model.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors) // 2**20

    def compatibility_key(self, request: EngineRequest) -> Hashable:
        """Any two requests of the model's task share a batch: sampling is done per row."""
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
        run = {TaskType.EMBED: self._embed, TaskType.CLASSIFY: self._classify,
               TaskType.GENERATE: self._generate}[self.task_type]
        for i, output in zip(runnable, run(batch), strict=True):
            outputs[i] = output
        return [output for output in outputs if output is not None]

    def prepare(self, request: EngineRequest) -> None:
        """Tokenizes the request's texts into ``request.prepared`` (or keeps its error).

        Generate prompts are left to ``run_batch``: rendering a chat template holds the GIL,
        and on an H100 doing it in the task threads slowed the decoding loop more than it saved
        (see ``workers/batching.py``).
        """
        if self.model is None or request.task_type != self.task_type:
            return
        if self.task_type == TaskType.GENERATE:
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
        """Pads token ids into the model's inputs (to a multiple of 16 with fixed shapes)."""
        longest = max(len(row) for row in ids)
        if self.static_shapes:
            longest = min(round_up(longest, PROMPT_MULTIPLE), self._max_positions)
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

    def _prompt_ids(self, request: EngineRequest) -> list[list[int]]:
        """Token ids of each prompt: chats through the chat template, when the model has one."""
        limit = self._max_positions - request.params.max_new_tokens
        if limit < 1:
            raise EngineInputError(
                f"job {request.job_id}: max_new_tokens {request.params.max_new_tokens} leaves no "
                f"room for a prompt in this model's {self._max_positions} positions")
        prompts: list[list[int]] = []
        for chat in chats_of(request):
            if self.tokenizer.chat_template:
                text = self.tokenizer.apply_chat_template(
                    chat, add_generation_prompt=True, tokenize=False)
            else:
                text = "\n".join(turn["content"] for turn in chat)
            if self._encoder is not None:
                ids = self._encoder.encode(text, add_special_tokens=False).ids
            else:
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            # Keep the end of an over-long prompt: the latest turns matter most.
            prompts.append(ids[-limit:] or [self.tokenizer.pad_token_id])
        return prompts

    def _generate(self, requests: Sequence[EngineRequest]) -> list[EngineOutput]:
        rows: list[GenerationRow] = []
        spans: list[tuple[int, int] | EngineOutput] = []
        for request in requests:
            try:
                prompts = self._prompt_ids(request)
            except EngineInputError as e:
                spans.append(EngineOutput(None, error=e))
                continue
            params = request.params
            stream = request.on_token if not request.is_multi_input else None
            spans.append((len(rows), len(rows) + len(prompts)))
            rows.extend(
                GenerationRow(prompt, params.max_new_tokens, params.temperature, params.top_p,
                              params.seed, stream, request.deadline_monotonic)
                for prompt in prompts)
        shape = None
        if self.static_shapes and rows:
            shape = plan_static_shape(len(rows), max(len(row.prompt_ids) for row in rows),
                                      max(row.max_new_tokens for row in rows),
                                      self._max_positions)
        generate_rows(self.model, self.tokenizer, rows, self.device, self._eos_ids,
                      int(self.tokenizer.pad_token_id), self.notify_step, shape,
                      self._decode_graphs)
        outputs = self._split(requests, spans, [final_text(row, self.tokenizer) for row in rows],
                              [len(row.new_ids) for row in rows])
        for request, span, output in zip(requests, spans, outputs, strict=True):
            if isinstance(span, tuple) and any(row.timed_out for row in rows[span[0]:span[1]]):
                output.error = JobTimedOut(
                    f"job {request.job_id} ran past its timeout of {request.timeout_s:g} s "
                    "while generating")
        return outputs
