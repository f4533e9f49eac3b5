"""The client's copy of the wire messages must match the service's: same fields, same required set, same types.

The client cannot import the service (it must install without torch), so the shapes are written twice;
this test is what makes a change on one side without the other fail in CI rather than in production.
Descriptions, titles, defaults and value bounds may differ; ``extra`` differs on purpose (the service
forbids unknown fields, the client ignores them so older clients survive newer servers).
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

import client.messages as cm
import service.messages as sm

# Messages the client does not model as data: error bodies become exceptions (client.errors).
NOT_MIRRORED = {"ErrorResponse"}
PAIRS = sorted(set(sm.__all__) - NOT_MIRRORED)

_TYPE_KEYS = ("type", "const", "enum", "format")


def _shape(node: dict[str, Any]) -> Any:
    """The type information of one JSON-schema node, without prose, defaults or bounds."""
    if "$ref" in node:
        return {"ref": node["$ref"].rsplit("/", 1)[-1]}
    if "anyOf" in node:
        return {"anyOf": sorted((_shape(n) for n in node["anyOf"]), key=repr)}
    out: dict[str, Any] = {k: node[k] for k in _TYPE_KEYS if k in node}
    if "items" in node:
        out["items"] = _shape(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        out["values"] = _shape(node["additionalProperties"])
    return out


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {
        "fields": {name: _shape(prop) for name, prop in schema["properties"].items()},
        "required": sorted(schema.get("required", [])),
    }


def test_every_service_message_has_a_client_twin() -> None:
    assert set(PAIRS) <= set(cm.__all__), f"client/messages.py lacks {set(PAIRS) - set(cm.__all__)}"


@pytest.mark.parametrize("name", PAIRS)
def test_schemas_agree(name: str) -> None:
    service_schema, client_schema = _schema(getattr(sm, name)), _schema(getattr(cm, name))
    assert client_schema["fields"].keys() == service_schema["fields"].keys(), "field names differ"
    assert client_schema["required"] == service_schema["required"], "required fields differ"
    for field, shape in service_schema["fields"].items():
        assert client_schema["fields"][field] == shape, f"{name}.{field}: type differs"


@pytest.mark.parametrize("name", PAIRS)
def test_client_ignores_new_fields(name: str) -> None:
    model: type[BaseModel] = getattr(cm, name)
    assert model.model_config.get("extra") == "ignore"


def _samples() -> dict[str, BaseModel]:
    top = sm.TopClass(class_index=3, label="cat", confidence=0.8)
    image = sm.BatchImageResult(
        index=0, filename="cat.jpg", label="cat", class_index=3, confidence=0.97, exit=2, mflops=25.5
    )
    return {
        "TopClass": top,
        "CameraPrediction": sm.CameraPrediction(
            camera_id="cam0", tick=42, frame_seq=17, captured_at=1.7e9, published_at=1.7e9 + 0.1, exit=3,
            exits_total=5, label="cat", class_index=3, confidence=0.8, top5=[top], mflops=31.5, compute_ms=6.0,
            camera_state="live",
        ),
        "ClassifyResponse": sm.ClassifyResponse(
            label="cat", class_index=3, confidence=0.8, top5=[top], exit=2, exits_total=5, mflops=20.0,
            elapsed_ms=12.5, deadline_ms=50, deadline_met=True,
        ),
        "BatchImageResult": image,
        "BatchClassifyResponse": sm.BatchClassifyResponse(
            images=[image], exits_total=7, budget_mflops=30.0, avg_mflops=25.5, p=0.5, cut_by_deadline=0,
            elapsed_ms=140.0, deadline_ms=10000,
        ),
        "CameraInfo": sm.CameraInfo(
            id="cam0", source="synthetic", state="live", fps=10.0, frames=100, dropped_frames=2, reconnects=0,
            last_error="connection refused", last_frame_at=1.7e9, last_error_at=1.7e9 - 5,
        ),
    }  # fmt: skip


def test_samples_cover_every_pair() -> None:
    assert sorted(_samples()) == PAIRS


@pytest.mark.parametrize("name", PAIRS)
def test_client_reads_service_json(name: str) -> None:
    sample = _samples()[name]
    parsed = getattr(cm, name).model_validate_json(sample.model_dump_json())
    assert parsed.model_dump() == sample.model_dump()


def test_waiting_camera_message() -> None:
    """The "nothing classified yet" form (exit 0, nulls) must parse too."""
    waiting = sm.CameraPrediction(
        camera_id="cam0", tick=1, frame_seq=None, captured_at=None, published_at=1.7e9, exit=0, exits_total=5,
        label=None, class_index=None, confidence=None, top5=[], mflops=0.0, compute_ms=0.0, camera_state="connecting",
    )  # fmt: skip
    parsed = cm.CameraPrediction.model_validate_json(waiting.model_dump_json())
    assert parsed.label is None and parsed.exit == 0 and parsed.camera_state == "connecting"
