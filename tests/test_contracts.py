"""The shared contracts: validation at the edge, names built in one place, the registry."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from infermq.errors import UnknownModel, UnknownTaskType
from infermq.jobs import JobRequest, TaskType
from infermq.keys import QueueNames
from infermq.registry import load_registry


@pytest.mark.parametrize(
    "fields",
    [
        {"task_type": "paint", "input": "x"},
        {"task_type": "embed", "input": "x", "priority": 12},
        {"task_type": "embed", "input": "   "},
        {"task_type": "embed", "input": []},
        {"task_type": "embed", "input": 42},
        {"task_type": "generate", "input": "x", "params": {"temperature": -1}},
        {"task_type": "embed", "input": "x", "colour": "red"},
    ],
)
def test_bad_request_is_refused_by_validation(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        JobRequest.model_validate(fields)


def test_queue_names_are_partitioned_by_task_and_model() -> None:
    names = QueueNames("infer")
    assert names.for_model("embed", "minilm") == "infer.embed.minilm"
    assert names.dead == "infer.dead"


def test_registry_chooses_default_and_refuses_unknown_models() -> None:
    registry = load_registry()
    assert registry.choose_model(TaskType.EMBED, None).name == "minilm"
    with pytest.raises(UnknownModel):
        registry.choose_model(TaskType.EMBED, "smollm2")
    with pytest.raises(UnknownTaskType):
        registry.choose_model(TaskType.AUTO, None)
