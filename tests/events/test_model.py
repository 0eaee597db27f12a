"""The event value types load alone: the aggregation depends on them, never on the decoder."""

from __future__ import annotations

import subprocess
import sys

import pytest

from twisted_rta.events.model import BatchResult, BodyError, Event, EventError, RejectedEvent


def loaded_after(module: str) -> set[str]:
    """The top-level names of the modules a fresh interpreter holds after importing ``module``."""
    code = f"import sys, {module}; print(' '.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return set(out.split())


def test_the_model_loads_neither_msgspec_nor_json_nor_the_decoder() -> None:
    loaded = loaded_after("twisted_rta.events.model")
    assert {"msgspec", "json", "twisted"} & {name.partition(".")[0] for name in loaded} == set()
    assert [name for name in loaded if name.startswith("twisted_rta.events.")] == [
        "twisted_rta.events.model"
    ]


@pytest.mark.parametrize(
    "module", ["twisted_rta.aggregation.aggregator", "twisted_rta.aggregation.batch"]
)
def test_the_aggregation_loads_only_the_model_of_events(module: str) -> None:
    loaded = loaded_after(module)
    assert {"msgspec", "twisted"} & {name.partition(".")[0] for name in loaded} == set()
    assert {name for name in loaded if name.startswith("twisted_rta.events.")} == {
        "twisted_rta.events.model"
    }


def test_errors_carry_what_the_edge_answers() -> None:
    error = EventError(3, "type", "missing_field", "type is required")
    assert error.as_dict() == {
        "index": 3,
        "code": "missing_field",
        "field": "type",
        "message": "type is required",
    }
    assert "index" not in EventError(None, "type", "missing_field", "m").as_dict()
    rejected = RejectedEvent(error)
    assert (rejected.status, rejected.error, str(rejected)) == (400, error, "type is required")
    body = BodyError(413, "batch_too_large", "too many", (error,))
    assert (body.status, body.code, body.message, body.errors) == (
        413,
        "batch_too_large",
        "too many",
        (error,),
    )
    event = Event("id-1", "click", 1.5)
    assert (event.user_id, event.session_id, event.properties) == (None, None, {})
    assert BatchResult((event,), (), 1).total == 1
