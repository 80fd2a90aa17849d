"""The service without HTTP: the same rankings as the library, writes that are durable and
idempotent, background adaptation, and hot swaps that refuse bad models."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import KNOWN_HELD_OUT

from metarec.errors import ArtifactError, DataError, UnknownCategoryError
from metarec.meta.model import MetaModel, save_model
from metarec.ranking import RetrievalSettings
from metarec.serving import Recommender, schemas
from metarec.serving.service import EventsRejectedError, Service, ServiceBusyError
from metarec.serving.settings import ServeSettings

TOKEN = "test-token-0123"


def serve_settings(store: Path, model_dir: Path, **overrides: object) -> ServeSettings:
    return ServeSettings(model_dir=model_dir, store_path=store, token=TOKEN, **overrides)


def copy_store(known_store: Path, folder: Path) -> Path:
    """A private copy of the session's known-answer store (the service writes to it)."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(known_store, folder / "store.duckdb"))


def perturbed_model(model: MetaModel, folder: Path, scale: float = 0.05) -> Path:
    """Another version of the model: same features, different parameters."""
    generator = torch.Generator().manual_seed(1)
    params = {
        k: v + scale * torch.randn(v.shape, generator=generator) for k, v in model.params.items()
    }
    return save_model(dataclasses.replace(model, params=params), folder)


def events(pairs: list[tuple[str, str]], prefix: str = "e") -> list[schemas.Event]:
    return [
        schemas.Event(
            event_id=f"{prefix}{n}",
            user_id=u,
            item_id=i,
            timestamp=1_700_000_000 + n,
            event="order",
        )
        for n, (u, i) in enumerate(pairs)
    ]


def count_interactions(service: Service) -> int:
    return service.with_store(lambda store: store.stats()["n_interactions"])


def library_recommend(service: Service, user: str, category: str, k: int):
    """The library's answer on the service's data (it reads the store: under the store lock)."""
    recommender = service.snapshot.recommender
    return service.with_store(lambda _: recommender.recommend(user, category, k))


@pytest.fixture()
def service(known_store: Path, known_model_dir: Path, tmp_path: Path) -> Iterator[Service]:
    store = copy_store(known_store, tmp_path / "live")
    opened = Service.open(serve_settings(store, known_model_dir, refresh_seconds=0.0))
    opened.start()
    yield opened
    opened.close()


def test_rankings_equal_the_library(service: Service) -> None:
    zero_shot = service.recommend("u0", KNOWN_HELD_OUT, 5)
    assert zero_shot.fallback == "zero-shot" and zero_shot.adaptation_version is None

    adaptation = service.submit_adapt(KNOWN_HELD_OUT).future.result(timeout=60)
    assert adaptation.version == 1
    served = service.recommend("u0", KNOWN_HELD_OUT, 5)
    library = library_recommend(service, "u0", KNOWN_HELD_OUT, 5)
    assert served.fallback is None and served.adaptation_version == 1
    assert served.model_version == library.model_version
    assert np.allclose([i.score for i in served.items], [i.score for i in library.items], atol=1e-5)
    assert [i.score for i in served.items] != [i.score for i in zero_shot.items]

    unknown = service.recommend("never-seen", KNOWN_HELD_OUT, 3)
    library_unknown = library_recommend(service, "never-seen", KNOWN_HELD_OUT, 3)
    assert unknown.fallback == "popularity"
    assert [i.score for i in unknown.items] == [i.score for i in library_unknown.items]
    # by support count, best first; ties in the seeded order popularity_scores gives them
    counts = [i.score for i in unknown.items]
    assert counts == sorted(counts, reverse=True)

    with pytest.raises(UnknownCategoryError, match="did you mean"):
        service.recommend("u0", "C7", 5)
    with pytest.raises(DataError, match="k must be"):
        service.recommend("u0", KNOWN_HELD_OUT, 0)


def test_finished_adapt_jobs_hold_no_parameters(service: Service) -> None:
    """GET /jobs remembers up to 1,000 jobs: each used to hold its adaptation's parameters (a
    ridge model's item vectors: 26 MB at 1e5 items), so memory grew with every adaptation."""
    jobs = [service.submit_adapt(KNOWN_HELD_OUT) for _ in range(3)]
    for job in jobs:
        job.future.result(timeout=60)
    versions = []
    for job in jobs:
        remembered = service.job(job.job_id)
        assert remembered is not None and remembered.state == "done"
        record = remembered.future.result(timeout=0)
        assert isinstance(record, schemas.AdaptationInfo)  # a record: no parameters held
        assert not any(isinstance(v, torch.Tensor | dict) for v in vars(record).values())
        versions.append(record.version)
    assert versions == sorted(versions) and versions[-1] >= 1
    served = service.snapshot.recommender.adaptation(KNOWN_HELD_OUT)
    assert served is not None and served.version == versions[-1] and served.params


def test_events_are_idempotent_and_bad_batches_change_nothing(service: Service) -> None:
    before = count_interactions(service)
    batch = events([("u1", "c7-i3"), ("u2", "c7-i4"), ("new-user", "c7-i5")])
    first = service.post_events(batch)
    assert (first.inserted, first.duplicates) == (3, 0)
    again = service.post_events(batch)
    assert (again.inserted, again.duplicates) == (0, 3)
    assert count_interactions(service) == before + 3

    bad = [*events([("u1", "c7-i6")], prefix="ok"), *events([("u1", "no-such-item")], "bad")]
    with pytest.raises(EventsRejectedError) as refused:
        service.post_events(bad)
    assert [(r.index, r.column) for r in refused.value.rows] == [(1, "item_id")]
    assert count_interactions(service) == before + 3  # nothing of the bad batch was stored

    partial = service.post_events(bad, skip_bad_rows=True)
    assert partial.inserted == 1 and [r.index for r in partial.rejected] == [1]
    assert count_interactions(service) == before + 4
    # only stored events count towards a re-adaptation: not duplicates, not rejected rows
    assert service.category_status(KNOWN_HELD_OUT).events_since_adaptation == 4

    # the new user is known once the snapshot catches up, and is personalised from then on
    service.wait_for_refresh()
    assert service.recommend("new-user", KNOWN_HELD_OUT, 3).fallback == "zero-shot"


def test_an_item_disliked_through_events_leaves_the_users_list(service: Service) -> None:
    """A low rating posted to the service counts as an interaction from the next snapshot on:
    the item leaves the user's list (the refresh after events kept the dislikes of start-up)."""
    every = 40  # the category's items
    shown = [item.item_id for item in service.recommend("u0", KNOWN_HELD_OUT, every).items]
    disliked = shown[0]
    low = schemas.Event(
        event_id="low-1",
        user_id="u0",
        item_id=disliked,
        timestamp=1_700_000_000,
        event="rating",
        rating=1.0,
    )
    assert service.post_events([low]).inserted == 1
    service.wait_for_refresh()
    after = [item.item_id for item in service.recommend("u0", KNOWN_HELD_OUT, every).items]
    assert disliked not in after
    assert after == [item for item in shown if item != disliked]


def test_new_events_trigger_a_readaptation(
    known_store: Path, known_model_dir: Path, tmp_path: Path
) -> None:
    store = copy_store(known_store, tmp_path / "live")
    settings = serve_settings(store, known_model_dir, readapt_every=4, refresh_seconds=0.0)
    service = Service.open(settings)
    service.start()
    try:
        service.submit_adapt(KNOWN_HELD_OUT).future.result(timeout=60)
        support = service.category_status(KNOWN_HELD_OUT).support_size
        service.post_events(events([(f"u{u}", f"c7-i{u % 40}") for u in range(3)]))
        assert service.category_status(KNOWN_HELD_OUT).job.adaptation_version == 1
        service.post_events(events([("u7", "c7-i9"), ("u9", "c7-i11")], prefix="more"))
        job = service.category_status(KNOWN_HELD_OUT).job
        assert job is not None and job.kind == "adapt"
        service.job(job.job_id).future.result(timeout=60)
        status = service.category_status(KNOWN_HELD_OUT)
        assert status.adaptation.version == 2
        assert status.support_size > support and status.events_since_adaptation == 0
    finally:
        service.close()


def test_launch_then_serve_a_large_category_with_retrieval(
    known_store: Path, known_model_dir: Path, tmp_path: Path
) -> None:
    """A launched 1,500-item category is ranked through the index; the 100-item short list
    finds the library's exact top 10."""
    store = copy_store(known_store, tmp_path / "live")
    service = Service.open(serve_settings(store, known_model_dir, short_list=100))
    service.start()
    try:
        category = "Shelf > Big"
        items = [
            schemas.Item(item_id=f"big-{i}", publisher=f"P{i % 2}", title=f"big {i}")
            for i in range(1_500)
        ]
        launched = service.launch(schemas.LaunchRequest(category=category, items=items))
        assert (launched.n_items, launched.inserted) == (1_500, 1_500)
        assert (
            service.launch(schemas.LaunchRequest(category=category, items=items)).unchanged == 1_500
        )
        rng = np.random.default_rng(0)
        pairs = [
            (f"u{u}", f"big-{2 * int(rng.zipf(1.5)) % 1_500 + u % 2}")
            for u in range(0, 200, 2)
            for _ in range(4)
        ]
        service.post_events(events(sorted(set(pairs))))
        service.submit_adapt(category).future.result(timeout=120)
        recommender = service.snapshot.recommender
        assert category in recommender.viewed_categories()  # built before any request
        assert recommender.serving_view(category).index is not None
        exact_ranking = Recommender(
            recommender.model,
            recommender.model_dir,
            recommender.store,
            catalog=recommender.catalog,
            retrieval=RetrievalSettings(short_list=10**9),  # every item scored exactly
        )
        recalls = []
        for user in range(0, 40, 2):
            served = [i.score for i in service.recommend(f"u{user}", category, 10).items]
            exact = [i.score for i in exact_ranking.recommend(f"u{user}", category, 10).items]
            # many items tie (same attributes, no support): count by score, not by id
            recalls.append(np.mean(np.array(served) >= exact[-1] - 1e-5))
        assert np.mean(recalls) >= 0.95, recalls

        with pytest.raises(DataError, match="unique across categories"):
            service.launch(
                schemas.LaunchRequest(
                    category="Shelf > Other", items=[schemas.Item(item_id="c7-i1")]
                )
            )
        with pytest.raises(UnknownCategoryError):
            service.category_status("Shelf > Other")
    finally:
        service.close()


def test_a_full_queue_is_busy_and_queued_jobs_are_shared(
    known_store: Path, known_model_dir: Path, tmp_path: Path
) -> None:
    store = copy_store(known_store, tmp_path / "live")
    service = Service.open(serve_settings(store, known_model_dir, queue_size=2))
    try:  # not started: jobs stay queued
        first = service.submit_adapt("Shelf > C0")
        assert service.submit_adapt("Shelf > C0") is first
        service.submit_adapt("Shelf > C1")
        with pytest.raises(ServiceBusyError, match="retry"):
            service.submit_adapt("Shelf > C2")
        with pytest.raises(UnknownCategoryError):
            service.submit_adapt("Shelf > Nope")
    finally:
        service.close()
    with pytest.raises(ServiceBusyError, match="stopped"):
        first.future.result(timeout=1)


def test_hot_swap_and_refusals(
    service: Service, known_model: MetaModel, known_model_dir: Path, tmp_path: Path
) -> None:
    service.submit_adapt(KNOWN_HELD_OUT).future.result(timeout=60)
    old_version = service.model_version

    def refused(path: Path, match: str) -> None:
        with pytest.raises(ArtifactError, match=match):
            service.submit_swap(path).future.result(timeout=60)
        assert service.model_version == old_version
        assert service.recommend("u0", KNOWN_HELD_OUT, 3).fallback is None

    tampered = perturbed_model(known_model, tmp_path / "tampered")
    params = tampered / "params.safetensors"
    data = bytearray(params.read_bytes())
    data[-1] ^= 1
    params.write_bytes(bytes(data))
    refused(tampered, "params.safetensors")

    truncated = perturbed_model(known_model, tmp_path / "truncated")
    (truncated / "factors.safetensors").write_bytes(b"\0" * 8)
    refused(truncated, "factors.safetensors")

    future = perturbed_model(known_model, tmp_path / "future")
    manifest = json.loads((future / "manifest.json").read_text())
    manifest["format_version"] = 99
    (future / "manifest.json").write_text(json.dumps(manifest))
    refused(future, "format_version|version")

    mixed = save_model(
        dataclasses.replace(
            known_model,
            encoder=dataclasses.replace(
                known_model.encoder, factors=known_model.encoder.factors[:, :2]
            ),
        ),
        tmp_path / "mixed",
    )
    refused(mixed, "inconsistent")
    refused(tmp_path / "missing", "missing|does not exist|no model")

    swapped = service.submit_swap(perturbed_model(known_model, tmp_path / "v2")).future.result(60)
    assert swapped.previous_version == old_version != swapped.model_version
    assert swapped.readapting == [KNOWN_HELD_OUT]  # the new model had no adaptation of it yet
    assert service.model_version == swapped.model_version
    service.job(service.category_status(KNOWN_HELD_OUT).job.job_id).future.result(timeout=60)
    after = service.recommend("u0", KNOWN_HELD_OUT, 3)
    assert after.fallback is None and after.model_version == swapped.model_version

    back = service.submit_swap(known_model_dir).future.result(timeout=60)
    assert back.model_version == old_version and back.readapting == []
