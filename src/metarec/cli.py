"""The ``metarec`` command: thin commands that parse, call the library, and print.

Errors the library raises on purpose (:class:`~metarec.errors.MetarecError`) exit with code 2 and
one line on stderr; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from metarec.errors import MetarecError

app = typer.Typer(
    name="metarec",
    help="Meta-learned recommendations for new categories.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(soft_wrap=True)  # long paths and messages stay on one line
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def command(fn: F) -> F:
    """Register a command whose library errors exit with code 2 and one line on stderr."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MetarecError as exc:
            err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from exc

    app.command()(wrapper)
    return fn


StoreOption = Annotated[Path, typer.Option("--store", help="DuckDB store file.")]
ModelOption = Annotated[Path, typer.Option("--model", help="Model folder (from `metarec train`).")]


@command
def simulate(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the tables into.")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write the simulated bookstore (generic table format) into OUT."""
    from metarec.data.simulate import simulate as run

    summary = run(out, seed=seed)
    console.print(f"[green]wrote[/] {out}: {summary}")


@command
def ingest(
    source: Annotated[list[Path], typer.Argument(help="Folder or files to load.")],
    store: StoreOption,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="table, recbole, movielens, douban, goodreads, amazon-pairs, dbook or auto.",
        ),
    ] = "auto",
    skip_bad_rows: Annotated[
        bool, typer.Option(help="Load the good rows and write a bad-row report beside the store.")
    ] = False,
) -> None:
    """Load data into the store (atomic; re-running the same load changes nothing)."""
    from metarec.data import ingest as run

    report = run(
        source if len(source) > 1 else source[0],
        store,
        fmt=fmt,  # type: ignore[arg-type]  # validated by ingest()
        skip_bad_rows=skip_bad_rows,
        progress=True,
    )
    table = Table("table", "read", "inserted", "unchanged", "updated", "bad", title=str(store))
    for name in ("interactions", "items", "users", "categories"):
        counts = getattr(report, name)
        table.add_row(
            name,
            *(
                f"{getattr(counts, f):,}"
                for f in ("read", "inserted", "unchanged", "updated", "bad")
            ),
        )
    console.print(table)
    for finding in report.findings:
        console.print(f"[yellow]note:[/] {finding}")
    if report.report_path is not None:
        console.print(f"[yellow]bad rows skipped; report written to {report.report_path}[/]")
    console.print(f"loaded in {report.seconds:.1f} s")


@command
def embed(
    store: StoreOption,
    config: Annotated[Path | None, typer.Option(help="TOML training config.")] = None,
) -> None:
    """Embed item and category texts into the store's cache once (text features, pip extra
    `text`); later commands open the store read-only and read the cache."""
    from metarec.config import load_config
    from metarec.data.export import open_store
    from metarec.features.text import fill_text_cache

    features = load_config(config).features
    with open_store(store) as opened:
        table = fill_text_cache(opened, features, progress=True)
    console.print(
        f"[green]text cache[/] {store}: {len(table.items):,} items and "
        f"{len(table.categories):,} categories embedded with {table.model}"
    )


@command
def categories(
    store: StoreOption,
    config: Annotated[
        Path | None, typer.Option(help="TOML config (what counts as a positive).")
    ] = None,
) -> None:
    """List the store's categories: items, users with a positive, positives (what the service's
    GET /categories/{category} reports too)."""
    from metarec.config import load_config
    from metarec.data.catalog import Catalog
    from metarec.data.export import open_store

    feedback = load_config(config).feedback
    with open_store(store, read_only=True) as opened:
        table = Catalog.load(opened, feedback).category_table
    shown = Table("category", "items", "users", "positives")
    for row in table.itertuples(index=False):
        shown.add_row(row.category, f"{row.n_items:,}", f"{row.n_users:,}", f"{row.n_positives:,}")
    console.print(shown)


@command
def train(
    store: Annotated[
        Path,
        typer.Option("--store", help="DuckDB store file, or a folder written by `metarec export`."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Model folder to write.")],
    config: Annotated[Path | None, typer.Option(help="TOML config file.")] = None,
    hold_out: Annotated[
        list[str] | None, typer.Option("--hold-out", help="Category sealed from training.")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Meta-training steps.")] = None,
    first_order: Annotated[
        bool | None, typer.Option("--first-order/--second-order", help="MAML order.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    algorithm: Annotated[
        str | None,
        typer.Option(
            "--algorithm",
            help="Meta-learning algorithm (meta.algorithm): maml, fomaml, meta_sgd, reptile, "
            "anil or melu_local (docs/META.md).",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    checkpoint_dir: Annotated[
        Path | None,
        typer.Option(help="Folder for resumable checkpoints (docs/SCALING.md)."),
    ] = None,
    checkpoint_every: Annotated[
        int, typer.Option(help="Meta-steps between checkpoints.", min=1)
    ] = 50,
    resume: Annotated[
        bool, typer.Option(help="Continue the run checkpointed in --checkpoint-dir.")
    ] = False,
    distributed: Annotated[
        bool,
        typer.Option(
            help="Share each meta-batch across the ranks torchrun started: "
            "`torchrun --nproc-per-node 2 -m metarec.cli train ... --distributed`."
        ),
    ] = False,
) -> None:
    """Meta-train on the store's categories and write the model folder."""
    import os

    from pydantic import ValidationError

    from metarec.config import MetaConfig, load_config
    from metarec.data.export import open_export, open_store
    from metarec.errors import ConfigError
    from metarec.meta.checkpoint import Checkpointing
    from metarec.meta.distributed import World
    from metarec.meta.model import save_model
    from metarec.training import train as run

    if checkpoint_dir is None and resume:
        raise ConfigError("--resume needs --checkpoint-dir, the folder of the run to continue")
    if not distributed and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            f"launched on {os.environ['WORLD_SIZE']} ranks without --distributed: every rank "
            f"would train alone and write {out}; add --distributed"
        )
    resolved = load_config(config, seed=seed)
    options = {"meta_steps": steps, "first_order": first_order, "algorithm": algorithm}
    try:  # validated (model_copy would not be), so an unknown algorithm names the valid ones
        meta = MetaConfig.model_validate(
            {**resolved.meta.model_dump(), **{k: v for k, v in options.items() if v is not None}}
        )
    except ValidationError as exc:
        raise ConfigError(f"invalid training option:\n{exc}") from exc
    resolved = resolved.model_copy(
        update={"hold_out": tuple(hold_out) if hold_out else resolved.hold_out, "meta": meta}
    )
    checkpoint = (
        None
        if checkpoint_dir is None
        else Checkpointing(checkpoint_dir, every=checkpoint_every, resume=resume)
    )
    with World.from_torchrun() if distributed else World() as world:
        # An export is read per category: the sealed categories' interactions are never opened.
        opened = (
            open_export(store, exclude=resolved.hold_out)
            if store.is_dir()
            else open_store(store, read_only=True)
        )
        with opened:
            model = run(opened, resolved, progress=not quiet, checkpoint=checkpoint, world=world)
        if not world.is_main:
            return  # rank 0 writes the model and reports
    save_model(model, out)
    last = model.history[-1] if model.history else {}
    val = [h["val"] for h in model.history if "val" in h]
    console.print(
        f"[green]wrote[/] {out}: {len(model.splits['train'])} training categories, "
        f"{len(model.splits['validation'])} validation, {len(model.splits['hold_out'])} held out; "
        f"final meta-loss {last.get('loss', float('nan')):.4f}"
        + (f", best validation NDCG@10 {max(val):.4f}" if val else "")
        + (f"; {world.size} ranks" if world.size > 1 else "")
    )


@command
def export(
    store: StoreOption,
    out: Annotated[Path, typer.Option("--out", help="Folder to create (must not exist).")],
) -> None:
    """Write the store as Parquet partitioned by category, for training elsewhere or at scale."""
    from metarec.data.export import export_store

    summary = export_store(store, out)
    console.print(f"[green]wrote[/] {out}: {summary}")


@command
def evaluate(
    store: StoreOption,
    out: Annotated[Path, typer.Option("--out", help="Run folder to write.")],
    protocol: Annotated[
        str,
        typer.Option(
            help="loco (leave categories out), launch (launch window), or melu (DBook's "
            "shipped user splits, ranking within each user's query items: not full ranking)."
        ),
    ] = "loco",
    methods: Annotated[str, typer.Option(help="Comma-separated method names, or all.")] = "all",
    shots: Annotated[str, typer.Option(help="Comma-separated shot counts.")] = "0,1,3,5,10",
    folds: Annotated[int, typer.Option(help="Rotating folds of test categories.")] = 5,
    test_category: Annotated[
        list[str] | None,
        typer.Option(help="Fixed test category (repeatable): one fold instead of rotating ones."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    quick: Annotated[
        bool, typer.Option(help="One fold, short training, default settings: a smoke run.")
    ] = False,
    ks: Annotated[str, typer.Option(help="Comma-separated cutoffs.")] = "5,10,20",
    min_users: Annotated[int, typer.Option(help="Eligible categories need this many users.")] = 20,
    config: Annotated[Path | None, typer.Option(help="TOML training config.")] = None,
) -> None:
    """Benchmark every method on sealed categories (PROTOCOL.md); write metrics, report, plots."""
    import time

    from metarec.config import EvalConfig, load_config
    from metarec.data.export import open_store
    from metarec.evaluation.harness import evaluate as run
    from metarec.evaluation.report import main_table, write_run
    from metarec.features import load_catalog

    started = time.perf_counter()
    train_config = load_config(config, seed=seed)
    eval_config = EvalConfig(
        protocol=protocol,  # type: ignore[arg-type]  # validated by pydantic
        methods=None if methods == "all" else tuple(m.strip() for m in methods.split(",")),
        shots=tuple(int(s) for s in shots.split(",")),
        folds=folds,
        test_categories=tuple(test_category) if test_category else None,
        seed=seed,
        quick=quick,
        ks=tuple(int(k) for k in ks.split(",")),
        min_users=min_users,
    )
    if eval_config.protocol == "melu":
        _evaluate_melu(store, out, eval_config, started)
        return
    with open_store(store, read_only=True) as opened:
        catalog = load_catalog(opened, train_config)
    result = run(catalog, train_config, eval_config, log=console.print)
    write_run(
        result,
        out,
        eval_config=eval_config,
        train_config=train_config,
        source=str(store),
        user_ids=catalog.users["user_id"],
        item_ids=catalog.items["item_id"],
    )
    header, rows = main_table(result.records)
    table = Table(title="NDCG@10 on sealed categories (pooled users, 95% CI)")
    table.add_column(header[0], no_wrap=True)
    for name in header[1:]:
        table.add_column(name)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for c in result.comparisons:
        if c["family"] == "metarec":
            change = "" if c["relative_change"] is None else f"{c['relative_change']:+.1%}"
            console.print(
                f"{c['method']} vs {c['baseline']} at {c['shots']} shots: {change} "
                f"(p = {c['p_value']:.2g}, {c['n_users']} users)"
            )
    console.print(f"[green]wrote[/] {out} in {time.perf_counter() - started:.0f} s")


def _evaluate_melu(store: Path, out: Path, eval_config: Any, started: float) -> None:
    """The MeLU-line protocol on DBook (docs/MELU_PROTOCOL.md): its own records and table."""
    import time

    from metarec.evaluation.melu_protocol import evaluate_melu, melu_table

    records = evaluate_melu(
        store, methods=eval_config.methods, seed=eval_config.seed, quick=eval_config.quick
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({"records": records}, indent=1, sort_keys=True))
    table = melu_table(records)
    (out / "report.md").write_text(
        "# MeLU-line protocol on DBook (within each user's query items, NOT full ranking)\n\n"
        + table
        + "\n"
    )
    console.print(table)
    console.print(f"[green]wrote[/] {out} in {time.perf_counter() - started:.0f} s")


def _parse_time(value: str | None) -> int | None:
    if value is None:
        return None
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        return int(datetime.fromisoformat(value).timestamp())
    except ValueError as exc:
        raise typer.BadParameter(f"expected unix seconds or ISO-8601, got {value!r}") from exc


@command
def adapt(
    model: ModelOption,
    store: StoreOption,
    category: Annotated[
        str, typer.Option(help="Category path, e.g. 'Books > Literature > Poetry'.")
    ],
    as_of: Annotated[
        str | None,
        typer.Option(help="Use interactions up to this time only (unix seconds or ISO-8601)."),
    ] = None,
) -> None:
    """Adapt the meta-model to CATEGORY from its interactions so far."""
    from metarec.data.export import open_store
    from metarec.serving.recommender import Recommender

    with open_store(store, read_only=True) as opened:
        adaptation = Recommender.open(model, opened).adapt(category, as_of=_parse_time(as_of))
    console.print(
        f"[green]adapted[/] {category!r} version {adaptation.version} from "
        f"{adaptation.support_size} interactions of {adaptation.n_users} users "
        f"in {adaptation.seconds * 1000:.1f} ms"
    )


@command
def recommend(
    model: ModelOption,
    store: StoreOption,
    category: Annotated[str, typer.Option(help="Category path.")],
    user: Annotated[str, typer.Option(help="External user id.")],
    k: Annotated[int, typer.Option("-k", "--k", help="How many items.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Top-K items of CATEGORY for USER."""
    from metarec.data.export import open_store
    from metarec.serving.recommender import Recommender

    with open_store(store, read_only=True) as opened:
        result = Recommender.open(model, opened).recommend(user, category, k)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    title = f"top {k} in {category} for user {user}"
    if result.fallback:
        title += f"  [yellow](fallback: {result.fallback})[/]"
    table = Table("rank", "item", "title", "score", title=title)
    for rank, item in enumerate(result.items, 1):
        table.add_row(str(rank), item.item_id, item.title or "", f"{item.score:.4f}")
    console.print(table)


@command
def demo(
    workdir: Annotated[
        Path, typer.Option(help="Where the demo writes data, store and model.")
    ] = Path("demo-run"),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    steps: Annotated[int | None, typer.Option(help="Meta-training steps.")] = None,
) -> None:
    """Simulate a bookstore, meta-train, launch a held-out category, adapt and recommend."""
    from metarec.demo import run_demo

    run_demo(workdir, seed=seed, steps=steps, console=console)


@command
def serve(
    model: ModelOption,
    store: StoreOption,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    token_file: Annotated[
        Path | None,
        typer.Option(help="File holding the bearer token of the write and admin endpoints."),
    ] = None,
    readapt_every: Annotated[
        int, typer.Option(help="Re-adapt an adapted category after this many new events (0: off).")
    ] = 0,
    torch_threads: Annotated[
        int,
        typer.Option(
            help="Threads per torch operation; requests already run in parallel, and more "
            "threads per operation make small operations wait on each other."
        ),
    ] = 1,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Serve MODEL over HTTP: launch categories, take events, adapt, recommend (docs/SERVING.md).

    One process, one worker: it owns STORE read-write. The token comes from --token-file or the
    METAREC_TOKEN environment variable.
    """
    import os

    import uvicorn
    from pydantic import SecretStr, ValidationError

    from metarec.errors import ConfigError
    from metarec.serving.app import create_app
    from metarec.serving.service import Service
    from metarec.serving.settings import ServeSettings

    if token_file is not None:
        if not token_file.is_file():
            raise ConfigError(f"token file {token_file} does not exist")
        token = token_file.read_text().strip()
    else:
        token = os.environ.get("METAREC_TOKEN", "")
    if not token:
        raise ConfigError(
            "the write and admin endpoints need a token: pass --token-file FILE (a file holding "
            "a secret of 8 or more characters) or set METAREC_TOKEN"
        )
    try:
        settings = ServeSettings(
            model_dir=model,
            store_path=store,
            token=SecretStr(token),
            host=host,
            port=port,
            readapt_every=readapt_every,
        )
    except ValidationError as exc:
        # the message names the field; the token's value is never echoed (SecretStr)
        raise ConfigError(
            f"invalid serve settings: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
        ) from exc
    import torch

    torch.set_num_threads(torch_threads)
    service = Service.open(settings)  # a locked store or a damaged model fails here, exit 2
    try:
        err_console.print(
            f"serving {model} (version {service.model_version}) on http://{host}:{port} "
            f"(store {store}); docs at /docs",
            highlight=False,
            soft_wrap=True,
        )
        uvicorn.run(
            create_app(settings, service=service),
            host=host,
            port=port,
            workers=1,
            access_log=access_log,
            log_level="info" if access_log else "warning",
        )
    finally:
        service.close()


def main() -> None:
    """Entry point of the ``metarec`` script."""
    app()


if __name__ == "__main__":  # `python -m metarec.cli`, as `torchrun -m metarec.cli` runs it
    main()
