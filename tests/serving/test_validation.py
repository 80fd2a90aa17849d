"""Validation at every door (issue 13): numbers bounded to what float32 carries, no control
characters in names, nothing non-finite stored, adapted or answered, conflicting event ids, and
every refusal a JSON 4xx, never a plain-text 500."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from tests.conftest import KNOWN_HELD_OUT
from tests.serving.test_app import AUTH, event, service_of, serving, store_rows, wait_for_job
from typer.testing import CliRunner

from metarec.cli import app
from metarec.meta.model import MetaModel, save_model
from metarec.ranking import CategoryRanker


@pytest.fixture()
def client(known_store: Path, known_model_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    with serving(known_store, known_model_dir, tmp_path / "live") as test_client:
        yield test_client


def nan_model(model: MetaModel, folder: Path) -> Path:
    """A model whose output layer is NaN: every score it gives is NaN."""
    params = dict(model.params)
    last = sorted(k for k in params if k.endswith(".weight"))[-1]
    params[last] = torch.full_like(params[last], float("nan"))
    return save_model(dataclasses.replace(model, params=params), folder)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"weight": 1e39}, "weight"),  # finite JSON, infinite in float32: poisoned a category
        ({"weight": -2.0}, "weight"),
        ({"rating": 1e7}, "rating"),
        ({"timestamp": 10**18}, "timestamp"),
    ],
)
def test_numbers_out_of_range_are_422_and_nothing_is_stored(
    client: TestClient, extra: dict[str, object], fragment: str
) -> None:
    before = store_rows(client)
    answer = client.post("/events", json={"events": [event(1, **extra)]}, headers=AUTH)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "RequestValidationError" and fragment in answer.text
    assert store_rows(client) == before


def test_limits_are_in_the_openapi_schema(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    weight = schemas["Event"]["properties"]["weight"]["anyOf"][0]
    assert (weight["minimum"], weight["maximum"]) == (0.0, 1e6)
    price = schemas["Item"]["properties"]["price"]["anyOf"][0]
    assert price["maximum"] == 1e12


@pytest.mark.parametrize("name", ["Books\x00Poetry", "Books\n> Poetry", "Books\x1b[31m", "A\x85B"])
def test_control_characters_in_a_launched_category_are_422(client: TestClient, name: str) -> None:
    before = store_rows(client)
    answer = client.post(
        "/categories", json={"category": name, "items": [{"item_id": "cc1"}]}, headers=AUTH
    )
    assert answer.status_code == 422, answer.text
    assert "category" in answer.json()["detail"]
    assert store_rows(client) == before


def test_a_nul_in_a_swap_path_is_a_json_422(client: TestClient) -> None:
    answer = client.post("/admin/model", json={"path": "bad\u0000path"}, headers=AUTH)
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["error"] == "RequestValidationError"


def test_a_5000_digit_number_is_a_json_422(client: TestClient) -> None:
    body = '{"events": [{"event_id": "x", "user_id": "u1", "item_id": "c7-i1", "timestamp": '
    answer = client.post(
        "/events",
        content=body + "9" * 5000 + "}]}",
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "RequestValidationError"
    assert "digits" in answer.json()["detail"]


def test_a_reused_event_id_with_other_content_is_a_conflict(client: TestClient) -> None:
    first = event(1, timestamp=1_700_000_000)
    assert client.post("/events", json={"events": [first]}, headers=AUTH).status_code == 200
    same = client.post("/events", json={"events": [first]}, headers=AUTH).json()
    assert (same["inserted"], same["duplicates"]) == (0, 1)
    iso = {**first, "timestamp": "2023-11-14T22:13:20"}  # the same instant, as ISO text
    assert client.post("/events", json={"events": [iso]}, headers=AUTH).json()["duplicates"] == 1

    before = store_rows(client)
    other = {**first, "item_id": "c7-i5"}
    batch = {"events": [event(2, timestamp=1), other]}
    refused = client.post("/events", json=batch, headers=AUTH)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "EventConflictError"
    assert "'c7-i3' -> 'c7-i5'" in refused.json()["detail"]
    assert store_rows(client) == before  # the good event of the batch was not stored either

    skipped = client.post("/events?skip_bad_rows=true", json=batch, headers=AUTH).json()
    assert skipped["inserted"] == 1
    assert [(r["index"], r["column"]) for r in skipped["rejected"]] == [(1, "event_id")]


def test_an_adaptation_with_non_finite_params_fails_and_keeps_the_previous_version(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = client.post(f"/categories/{KNOWN_HELD_OUT}/adapt", headers=AUTH).json()
    assert wait_for_job(client, first["job_id"])["state"] == "done"
    launch = CategoryRanker.launch

    def poisoned(*args: object, **kwargs: object) -> object:
        ranker = launch(*args, **kwargs)  # type: ignore[arg-type]
        name = next(iter(ranker.params))
        ranker.params[name] = torch.full_like(ranker.params[name], float("nan"))
        return ranker

    monkeypatch.setattr(CategoryRanker, "launch", poisoned)
    second = client.post(f"/categories/{KNOWN_HELD_OUT}/adapt", headers=AUTH).json()
    failed = wait_for_job(client, second["job_id"])
    assert failed["state"] == "failed" and "non-finite" in failed["error"]
    monkeypatch.undo()
    status = client.get(f"/categories/{KNOWN_HELD_OUT}").json()
    assert status["adaptation"]["version"] == 1
    served = client.get("/recommend", params={"user_id": "u1", "category": KNOWN_HELD_OUT})
    assert served.status_code == 200 and served.json()["adaptation_version"] == 1
    adapted = service_of(client).snapshot.recommender.model_dir
    manifest = json.loads((adapted / "manifest.json").read_text())
    versions = [e["metadata"]["version"] for n, e in manifest["files"].items() if "adapted/" in n]
    assert versions == ["1"]


def test_a_model_with_nan_scores_is_refused_by_the_swap_and_never_answered(
    client: TestClient, known_model: MetaModel, tmp_path: Path
) -> None:
    client.get("/recommend", params={"user_id": "u1", "category": KNOWN_HELD_OUT})
    bad = nan_model(known_model, tmp_path / "models" / "nan")
    refused = client.post("/admin/model", json={"path": str(bad)}, headers=AUTH)
    assert refused.status_code == 422 and "non-finite" in refused.json()["detail"]


def test_nan_scores_are_a_typed_error_not_a_null_list(
    known_store: Path, known_model: MetaModel, tmp_path: Path
) -> None:
    bad = nan_model(known_model, tmp_path / "nan")
    with serving(known_store, bad, tmp_path / "live") as live:
        answer = live.get("/recommend", params={"user_id": "u1", "category": KNOWN_HELD_OUT})
        assert answer.status_code == 500
        assert answer.json()["error"] == "NonFiniteError"
        popular = live.get("/recommend", params={"user_id": "new", "category": KNOWN_HELD_OUT})
        assert popular.status_code == 200  # popularity needs no scores from the model
    result = CliRunner().invoke(
        app,
        [
            "recommend",
            "--model",
            str(bad),
            "--store",
            str(known_store),
            "--category",
            KNOWN_HELD_OUT,
            "--user",
            "u1",
            "--json",
        ],
    )
    assert result.exit_code == 2 and "non-finite" in result.output
    assert "NaN" not in result.output
