"""A ridge model (``metarec train``'s choice on many stores) behind the HTTP service: launch, zero
shot, events, adaptation, personal lists, and a hot swap between the two kinds of model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from tests.conftest import known_answer_config
from tests.serving.test_app import AUTH, event, serving, wait_for_job

from metarec.data import Store
from metarec.meta.model import load_model, save_model
from metarec.meta.ridge_model import RidgeModel
from metarec.selection import train_selected
from metarec.serving.recommender import Recommender


@pytest.fixture(scope="module")
def ridge_dir(known_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with Store.open(known_store, read_only=True) as store:
        model = train_selected(store, known_answer_config(), choice="ridge", progress=False).model
    return save_model(model, tmp_path_factory.mktemp("ridge") / "model")


def test_launch_events_adapt_recommend_with_a_ridge_model(
    known_store: Path, ridge_dir: Path, known_model_dir: Path, tmp_path: Path
) -> None:
    ridge = shutil.copytree(ridge_dir, tmp_path / "ridge")  # beside the MLP: one model root
    with serving(known_store, ridge, tmp_path / "live") as client:
        _launch_flow(client)
        # the console's before/after lookup ranks the zero-shot list through the same launcher
        page = client.get(
            "/console/category", params={"name": "Shelf > Launch", "user": "u0", "k": 3}
        )
        assert page.status_code == 200 and "new " in page.text
        # hot swap to the MLP model and back: both kinds serve through the same doors
        for folder in (known_model_dir, ridge):
            swapped = client.post("/admin/model", json={"path": str(folder)}, headers=AUTH)
            assert swapped.status_code == 200, swapped.text
            got = client.get("/recommend", params={"user_id": "u0", "category": "Shelf > C1"})
            assert got.status_code == 200 and len(got.json()["items"]) == 10


def _launch_flow(client: TestClient) -> None:
    category = "Shelf > Launch"
    items = [{"item_id": f"l{i}", "publisher": f"P{i % 2}", "title": f"new {i}"} for i in range(40)]
    launched = client.post("/categories", json={"category": category, "items": items}, headers=AUTH)
    assert launched.status_code == 201, launched.text
    query = {"user_id": "u0", "category": category, "k": 5}
    zero_shot = client.get("/recommend", params=query).json()
    assert zero_shot["fallback"] == "zero-shot"
    batch = [
        event(100 + 5 * u + j, f"u{u}", f"l{(7 * j + u) % 20 * 2 + u % 2}", timestamp=1_700_000_000)
        for u in range(60)
        for j in range(5)
    ]
    assert client.post("/events", json={"events": batch}, headers=AUTH).status_code == 200
    accepted = client.post(f"/categories/{category}/adapt", headers=AUTH)
    assert wait_for_job(client, accepted.json()["job_id"])["state"] == "done"
    adapted = client.get("/recommend", params=query).json()
    assert adapted["fallback"] is None and adapted["adaptation_version"] == 1
    # the solve read every positive: the ranker's own count (RidgeRanker.support_used)
    status = client.get(f"/categories/{category}").json()
    assert status["adaptation"]["support_size"] == status["support_size"] == len(batch)
    liked = {b["item_id"] for b in batch if b["user_id"] == "u0"}
    assert not liked & {i["item_id"] for i in adapted["items"]}
    # user 0 liked publisher P0 (even items) elsewhere; their neighbours' support says so here
    assert all(int(i["item_id"][1:]) % 2 == 0 for i in adapted["items"])


def test_a_zero_shot_content_weight_makes_the_first_list_personal(
    known_store: Path, ridge_dir: Path, tmp_path: Path
) -> None:
    """The model's zero-shot content term serves through the same launcher: before any event,
    each user gets the publisher they liked elsewhere (user ``u`` liked ``P{u % 2}``, 90% of
    their items); without the term u0, u1 and u2 got the same list."""
    model = load_model(ridge_dir)
    assert isinstance(model, RidgeModel)
    model.params = {**model.params, "zero_shot_content": torch.tensor(100.0, dtype=torch.float64)}
    folder = save_model(model, tmp_path / "content" / "model")
    category = "Shelf > Launch"
    items = [{"item_id": f"l{i}", "publisher": f"P{i % 2}", "title": f"new {i}"} for i in range(40)]
    with serving(known_store, folder, tmp_path / "live") as client:
        launched = client.post(
            "/categories", json={"category": category, "items": items}, headers=AUTH
        )
        assert launched.status_code == 201, launched.text
        for user in range(4):
            query = {"user_id": f"u{user}", "category": category, "k": 5}
            got = client.get("/recommend", params=query)
            assert got.status_code == 200, got.text
            assert got.json()["fallback"] == "zero-shot"
            publishers = {int(i["item_id"][1:]) % 2 for i in got.json()["items"]}
            assert publishers == {user % 2}


def test_the_bounded_top_k_serves_the_lists_of_every_item_scored(
    known_store: Path, ridge_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library's lists (users with support here and without, dislikes left out) through
    the coarse pass of ``ranking.ridge`` equal those of scoring every item exactly; its blocks
    are shrunk so that the known-answer store's 40-item categories take it."""
    import metarec.ranking.ridge as ridge_ranking

    requests = [(f"u{u}", k) for u in range(0, 60, 3) for k in (1, 5)]

    def lists(store: Store, coarse: bool) -> list[list[tuple[str, float]]]:
        with monkeypatch.context() as patch:
            patch.setattr(ridge_ranking, "BLOCK", 2)
            patch.setattr(ridge_ranking, "COARSE_MIN_ITEMS", 8 if coarse else 10**9)
            if coarse:  # the bounded path never scores every item
                patch.setattr(ridge_ranking.RidgeRanker, "scores64", _refused)
            recommender = Recommender.open(ridge_dir, store)
            out = []
            for category in ("Shelf > C1", "Shelf > C7"):
                recommender.adapt(category)  # zero-shot lists read the content term: exact
                for answer in recommender.recommend_many(category, requests):
                    assert not isinstance(answer, Exception)
                    out.append([(item.item_id, item.score) for item in answer.items])
            return out

    with Store.open(known_store, read_only=True) as store:
        bounded, exact = lists(store, coarse=True), lists(store, coarse=False)
    assert [[i for i, _ in row] for row in bounded] == [[i for i, _ in row] for row in exact]
    for row, want in zip(bounded, exact, strict=True):
        assert [s for _, s in row] == pytest.approx([s for _, s in want], rel=1e-6, abs=0)


def _refused(*_: object) -> None:
    raise AssertionError("scored every item")
