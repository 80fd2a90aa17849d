"""The README's library example runs as written (on the simulated bookstore, few meta-steps)."""

from __future__ import annotations

import ast
import contextlib
import io
import re
from pathlib import Path

import pytest

from metarec.data.simulate import simulate

README = Path(__file__).resolve().parents[1] / "README.md"


def library_example() -> str:
    """The README's first ``python`` block: the library tour."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    return blocks[0]


def test_readme_library_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = library_example()
    assert "to_json()" in code
    monkeypatch.chdir(tmp_path)
    simulate(Path("data"), seed=0)
    # the example as written; only meta-training is shortened (the README's data/metarec.toml
    # is the simulator's, plus these lines)
    with Path("data/metarec.toml").open("a") as config:
        config.write("\n[meta]\nmeta_steps = 4\nmeta_batch_size = 4\n")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    result = ast.literal_eval(printed.getvalue().strip())  # a dict, printed as Python shows it
    assert result["user_id"] == "u00042"
    assert result["category"] == "Books > Literature > Poetry"
    assert result["adaptation_version"] == 1 and result["fallback"] is None
    assert len(result["items"]) == 10
    assert all(set(item) == {"item_id", "score", "title"} for item in result["items"])
    assert Path("model/manifest.json").is_file()
