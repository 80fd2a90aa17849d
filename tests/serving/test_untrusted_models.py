"""Hot swaps and model folders that cannot be trusted (issue 13): swaps only from folders under
the model roots, never a wedged worker (and /health/ready says when one is), and a damaged
adapted file that affects only its category."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.conftest import KNOWN_HELD_OUT
from tests.serving.test_app import AUTH, service_of, serving, wait_for_job
from tests.serving.test_service import copy_store
from typer.testing import CliRunner

from metarec.cli import app
from metarec.data import Store
from metarec.serving import Recommender
from metarec.serving.jobs import JobQueue
from metarec.serving.metrics import ServiceMetrics

OTHER = "Shelf > C6"


def test_swaps_only_from_folders_under_the_model_roots(
    known_store: Path,
    known_model_dir: Path,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    outside = Path(shutil.copytree(known_model_dir, tmp_path_factory.mktemp("outside") / "m"))
    (tmp_path / "link").symlink_to(outside)  # inside the root by name, outside once resolved
    with serving(known_store, known_model_dir, tmp_path / "live") as client:
        version = client.get("/health/ready").json()["model_version"]
        for path in ("/", "/proc/self", str(outside), str(tmp_path / "link")):
            refused = client.post("/admin/model", json={"path": path}, headers=AUTH)
            assert refused.status_code == 422, (path, refused.text)
            assert "not inside a model root" in refused.json()["detail"]
        not_a_folder = client.post(
            "/admin/model", json={"path": str(known_model_dir / "manifest.json")}, headers=AUTH
        )
        assert not_a_folder.status_code == 422 and "not a folder" in not_a_folder.text
        assert client.get("/health/ready").json()["model_version"] == version
        assert not (outside / "adapted").exists()  # nothing was written there
    with serving(
        known_store, known_model_dir, tmp_path / "rooted", model_roots=(outside.parent,)
    ) as client:
        swapped = client.post("/admin/model", json={"path": str(outside)}, headers=AUTH)
        assert swapped.status_code == 200, swapped.text


def test_a_fifo_in_a_model_folder_never_wedges_the_worker(
    client_dir: tuple[TestClient, Path],
) -> None:
    client, root = client_dir
    candidate = Path(shutil.copytree(service_of(client).snapshot.recommender.model_dir, root / "c"))
    (candidate / "params.safetensors").unlink()
    os.mkfifo(candidate / "params.safetensors")
    refused = client.post("/admin/model", json={"path": str(candidate)}, headers=AUTH)
    assert refused.status_code == 422 and "not a regular file" in refused.json()["detail"]
    job = client.post(f"/categories/{KNOWN_HELD_OUT}/adapt", headers=AUTH).json()
    assert wait_for_job(client, job["job_id"])["state"] == "done"  # the worker still works
    assert client.get("/health/ready").status_code == 200


@pytest.fixture()
def client_dir(known_store: Path, known_model_dir: Path, tmp_path: Path):
    with serving(known_store, known_model_dir, tmp_path / "live") as client:
        yield client, known_model_dir.parent


def test_ready_reports_a_stuck_worker_and_stale_jobs_fail(
    known_store: Path, known_model_dir: Path, tmp_path: Path
) -> None:
    release = threading.Event()
    with serving(
        known_store, known_model_dir, tmp_path / "live", job_timeout_seconds=0.5
    ) as client:
        service = service_of(client)
        run = service._jobs._run_job

        def slow(job):  # a job that hangs until released (a stand-in for a wedged read)
            release.wait(30)
            return run(job)

        service._jobs._run_job = slow
        first = client.post(f"/categories/{KNOWN_HELD_OUT}/adapt", headers=AUTH).json()
        second = client.post(f"/categories/{OTHER}/adapt", headers=AUTH).json()
        time.sleep(1.0)
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "stuck" and first["job_id"] in ready.json()["detail"]
        release.set()
        assert wait_for_job(client, first["job_id"])["state"] == "done"
        stale = wait_for_job(client, second["job_id"])
        assert stale["state"] == "failed" and "deadline" in stale["error"]
        assert client.get("/health/ready").status_code == 200


def test_a_swap_past_its_timeout_is_a_504_naming_its_job_which_still_finishes(
    known_store: Path, known_model_dir: Path, tmp_path: Path
) -> None:
    release = threading.Event()
    with serving(
        known_store, known_model_dir, tmp_path / "live", job_timeout_seconds=0.5
    ) as client:
        service = service_of(client)
        run = service._jobs._run_job

        def slow(job):  # a swap that takes longer than the timeout on the whole swap
            release.wait(30)
            return run(job)

        service._jobs._run_job = slow
        late = client.post("/admin/model", json={"path": str(known_model_dir)}, headers=AUTH)
        assert late.status_code == 504, late.text
        job_id = late.json()["detail"].rpartition("GET /jobs/")[2]
        release.set()
        assert wait_for_job(client, job_id)["state"] == "done"
        # the worker outlived the timed-out request: it runs the next job, and is ready
        adapt = client.post(f"/categories/{KNOWN_HELD_OUT}/adapt", headers=AUTH)
        assert adapt.status_code == 202, adapt.text
        assert wait_for_job(client, adapt.json()["job_id"])["state"] == "done"
        assert client.get("/health/ready").status_code == 200


def _adapted_twice(known_store: Path, model_dir: Path, folder: Path) -> Path:
    """The model with two adapted categories, the first one's file then damaged."""
    store = copy_store(known_store, folder)
    with Store.open(store) as opened:
        recommender = Recommender.open(model_dir, opened)
        recommender.adapt(KNOWN_HELD_OUT)
        recommender.adapt(OTHER)
    damaged = next((model_dir / "adapted").glob("shelf-c7-*.safetensors"))
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    return store


def test_a_damaged_adapted_file_affects_only_its_category(
    known_store: Path, known_model_dir: Path, tmp_path: Path
) -> None:
    store = _adapted_twice(known_store, known_model_dir, tmp_path / "data")
    with Store.open(store, read_only=True) as opened:
        recommender = Recommender.open(known_model_dir, opened)  # opens; used to refuse
        hit = recommender.recommend("u1", KNOWN_HELD_OUT, 5)
        assert hit.fallback == "zero-shot" and "damaged" in (hit.fallback_reason or "")
        assert hit.adaptation_version is None
        fine = recommender.recommend("u1", OTHER, 5)
        assert fine.fallback is None and fine.adaptation_version == 1
    result = CliRunner().invoke(
        app,
        [
            "recommend",
            "--model",
            str(known_model_dir),
            "--store",
            str(store),
            "--category",
            OTHER,
            "--user",
            "u1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output

    with serving(known_store, known_model_dir, tmp_path / "live") as client:
        job = client.get(f"/categories/{KNOWN_HELD_OUT}").json()["job"]
        assert job is not None  # queued for re-adaptation at start
        assert wait_for_job(client, job["job_id"])["state"] == "done"
        again = client.get("/recommend", params={"user_id": "u1", "category": KNOWN_HELD_OUT})
        assert again.json()["fallback"] is None and again.json()["adaptation_version"] == 2
        other = client.get("/recommend", params={"user_id": "u1", "category": OTHER}).json()
        assert other["fallback"] is None and other["adaptation_version"] == 1


def test_a_job_cancelled_while_queued_is_skipped_and_the_worker_goes_on() -> None:
    """Whoever cancels a job's future, the worker neither runs nor dies of it."""
    release, ran = threading.Event(), []

    def run(job) -> str:
        release.wait(30)
        ran.append(job.job_id)
        return job.job_id

    jobs = JobQueue(
        run=run,
        refresh=lambda changed: 0,
        current_version=lambda: 0,
        queue_size=8,
        refresh_seconds=0.0,
        metrics=ServiceMetrics(),
    )
    jobs.start()
    try:
        first = jobs.submit("adapt", category="a")
        for _ in range(500):  # until the worker has taken it
            if first.state == "running":
                break
            time.sleep(0.01)
        second = jobs.submit("adapt", category="b")
        assert not first.future.cancel()  # running: no longer cancellable
        assert second.future.cancel()  # queued: its waiter gives up
        release.set()
        assert first.future.result(timeout=30) == first.job_id
        third = jobs.submit("adapt", category="c")
        assert third.future.result(timeout=30) == third.job_id
        assert ran == [first.job_id, third.job_id]
        assert second.state == "failed" and "cancelled before it ran" in (second.error or "")
        assert jobs.running
    finally:
        release.set()
        jobs.stop()
