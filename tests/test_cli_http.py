"""The CLI and the HTTP service give the same answer and the same counts for the same state:
both call the one ranker and the one fallback policy (Recommender.recommend)."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient
from tests.conftest import KNOWN_HELD_OUT
from tests.serving.test_service import copy_store, serve_settings
from typer.testing import CliRunner

from metarec.cli import app
from metarec.serving.app import create_app

NOT_ADAPTED = "Shelf > C6"  # trained on, never adapted: zero-shot


def test_cli_and_http_agree_on_lists_fallbacks_and_counts(
    known_store: Path, known_model_dir: Path, tmp_path: Path
) -> None:
    store = copy_store(known_store, tmp_path / "live")
    runner = CliRunner()

    def cli(*args: str) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    common = ["--model", str(known_model_dir), "--store", str(store)]
    cli("adapt", *common, "--category", KNOWN_HELD_OUT)
    cases = [
        ("u0", KNOWN_HELD_OUT, 7),  # known user, adapted category
        ("u1", NOT_ADAPTED, 5),  # known user, zero-shot
        ("nobody", KNOWN_HELD_OUT, 4),  # unknown user: popularity
    ]
    from_cli = {
        case: json.loads(
            cli(
                "recommend",
                *common,
                "--category",
                case[1],
                "--user",
                case[0],
                "-k",
                str(case[2]),
                "--json",
            )
        )
        for case in cases
    }
    counts = {
        row["category"]: row
        for row in map(json.loads, cli("categories", "--store", str(store), "--json").splitlines())
    }

    with TestClient(create_app(serve_settings(store, known_model_dir))) as client:
        for (user, category, k), expected in from_cli.items():
            served = client.get(
                "/recommend", params={"user_id": user, "category": category, "k": k}
            )
            assert served.status_code == 200
            assert served.json() == expected  # ids, scores, fallback, reason, versions
        assert from_cli[cases[0]]["fallback"] is None
        assert from_cli[cases[1]]["fallback"] == "zero-shot"
        assert from_cli[cases[2]]["fallback"] == "popularity"
        for category in (KNOWN_HELD_OUT, NOT_ADAPTED):
            status = client.get(f"/categories/{category}").json()
            row = counts[category]
            assert (status["n_items"], status["n_users"], status["support_size"]) == (
                row["n_items"],
                row["n_users"],
                row["n_positives"],
            )
