"""Run tracking: ``metarec evaluate --mlflow URI`` logs the run folder to MLflow (a local store
here); without MLflow installed the tests that need it are skipped, and asking for tracking
fails with the extra to install."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metarec.cli import app
from metarec.errors import DataError, MissingExtraError
from metarec.tracking import evaluation_metrics, flatten, log_evaluation, log_run

runner = CliRunner()

RECORDS = [
    {"category": "all", "method": "popularity", "metric": "ndcg", "k": 10, "shots": 3,
     "mean": 0.25},
    {"category": "all", "method": "metarec-maml", "metric": "ndcg", "k": 10, "shots": None,
     "mean": 0.5},
    {"category": "Poetry", "method": "popularity", "metric": "ndcg", "k": 10, "shots": 3,
     "mean": 0.75},
]  # fmt: skip


def _run_folder(folder: Path) -> Path:
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"records": RECORDS}))
    config = {"evaluation": {"protocol": "loco", "shots": [0, 3]}, "train": {"seed": 0}}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "report.md").write_text("# report\n")
    (folder / "ndcg10_vs_shots.png").write_bytes(b"\x89PNG\r\n")
    return folder


@pytest.fixture()
def store_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    pytest.importorskip("mlflow", reason="the tracking extra is not installed")
    # MLflow 3 keeps its file store for local use only on request (a database otherwise)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()


def test_pooled_metrics_and_flat_params() -> None:
    assert evaluation_metrics(RECORDS) == {
        "popularity.ndcg_at_10.shots_3": 0.25,
        "metarec-maml.ndcg_at_10.shots_launch": 0.5,
    }
    assert evaluation_metrics(RECORDS[2:]) == {"popularity.ndcg_at_10.shots_3": 0.75}
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None, "e": "x"}) == {
        "a.b": "1",
        "a.c": "[1, 2]",
        "d": "null",
        "e": "x",
    }


def test_tracking_without_mlflow_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    with pytest.raises(MissingExtraError, match=r"metarec\[tracking\]"):
        log_run("file:///nowhere", name="x", params={}, metrics={})
    with pytest.raises(DataError, match="not an evaluation run folder"):
        log_evaluation(tmp_path, "file:///nowhere")


def test_an_evaluation_folder_is_logged(tmp_path: Path, store_uri: str) -> None:
    from mlflow.tracking import MlflowClient

    run_id = log_evaluation(_run_folder(tmp_path / "run"), store_uri)
    client = MlflowClient(store_uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "run"
    assert run.data.params["evaluation.protocol"] == "loco"
    assert run.data.params["evaluation.shots"] == "[0, 3]"
    assert run.data.metrics == {
        "popularity.ndcg_at_10.shots_3": 0.25,
        "metarec-maml.ndcg_at_10.shots_launch": 0.5,
    }
    files = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.md", "metrics.json", "config.json", "ndcg10_vs_shots.png"} <= files


def test_evaluate_logs_to_the_uri_of_the_environment(
    known_store: Path, tmp_path: Path, store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    done = runner.invoke(
        app,
        [
            "evaluate", "--store", str(known_store), "--out", str(tmp_path / "run"),
            "--methods", "popularity", "--shots", "1", "--folds", "2", "--min-users", "10",
            "--ks", "10", "--jobs", "1", "--json", "--quiet",
        ],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    run_id = json.loads(done.stdout)["mlflow_run_id"]
    run = MlflowClient(store_uri).get_run(run_id)
    assert run.data.params["evaluation.protocol"] == "loco"
    assert "popularity.ndcg_at_10.shots_1" in run.data.metrics
