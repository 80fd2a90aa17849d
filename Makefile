# Two commands a newcomer needs: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow screenshots lint format typecheck clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned to the version docs/ was measured with (README, "Installing"):
	# pyproject accepts any torch>=2.3,<3, and an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# core (serve, train) + eval (baselines, plots) + dev (tests, linters, deptry, playwright)
	# + tracking (MLflow's client: the --mlflow tests run instead of being skipped)
	$(BIN)/python -m pip install --quiet -e '.[eval,dev,tracking]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/metarec demo --workdir demo-run

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/deptry src
	$(BIN)/mypy
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[crosscheck]'  # ranx, for the metrics cross-check
	$(BIN)/python -m pytest -m slow -q
	$(BIN)/python -m pytest -q tests/ranking/test_metrics.py -k ranx

# the console's pages in Debian's chromium (apt-get install chromium), written to docs/img/
screenshots: $(STAMP)
	METAREC_REQUIRE_BROWSER=1 METAREC_SCREENSHOTS=docs/img \
		$(BIN)/python -m pytest -q tests/serving/test_console_browser.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf demo-run .pytest_cache .mypy_cache .ruff_cache
