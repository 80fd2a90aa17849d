"""The service command: serve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from metarec.cli.app import ModelOption, StoreOption, command, err_console


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
    max_adapt_positives: Annotated[
        int | None,
        typer.Option(
            help="An adaptation trains on at most this many of the category's positives (a "
            "uniform sample), which bounds its memory and time as the category grows "
            "[default: the service's, docs/SERVING.md].",
            show_default=False,
        ),
    ] = None,
    torch_threads: Annotated[
        int,
        typer.Option(
            min=1,
            help="Threads per torch operation; requests already run in parallel, and more "
            "threads per operation make small operations wait on each other.",
        ),
    ] = 1,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
    runs: Annotated[
        Path | None,
        typer.Option(
            help="Folder of evaluation runs (`metarec evaluate --out`) the console lists."
        ),
    ] = None,
    model_root: Annotated[
        list[Path] | None,
        typer.Option(
            help="A folder POST /admin/model may load models from (repeatable; default: the "
            "served model's parent folder)."
        ),
    ] = None,
) -> None:
    """Serve MODEL over HTTP: launch categories, take events, adapt, recommend (docs/SERVING.md).

    One process, one worker: it owns STORE read-write. The token comes from --token-file or the
    METAREC_TOKEN environment variable.
    """
    import os

    import uvicorn
    from pydantic import SecretStr, ValidationError

    from metarec.config import describe
    from metarec.errors import ConfigError
    from metarec.serving.app import create_app
    from metarec.serving.process import freeze_heap
    from metarec.serving.service import Service
    from metarec.serving.settings import MIN_TOKEN_LENGTH, ServeSettings

    if token_file is not None:
        if not token_file.is_file():
            raise ConfigError(f"token file {token_file} does not exist")
        token = token_file.read_text().strip()
    else:
        token = os.environ.get("METAREC_TOKEN", "")
    if len(token) < MIN_TOKEN_LENGTH:  # said here: pydantic's words for it are "8 items"
        found = f"it has {len(token)}" if token else "none was given"
        raise ConfigError(
            "the write and admin endpoints need a token: pass --token-file FILE (a file holding "
            f"a secret of {MIN_TOKEN_LENGTH} or more characters) or set METAREC_TOKEN; {found}"
        )
    try:
        settings = ServeSettings(
            model_dir=model,
            store_path=store,
            token=SecretStr(token),
            host=host,
            port=port,
            readapt_every=readapt_every,
            model_roots=tuple(model_root or ()),
            **({} if max_adapt_positives is None else {"max_adapt_positives": max_adapt_positives}),
        )
    except ValidationError as exc:
        # each field named with the value given, the token's never (SecretStr, and hidden)
        raise ConfigError(f"invalid serve settings: {describe(exc, hide={'token'})}") from exc
    import torch

    torch.set_num_threads(torch_threads)
    service = Service.open(settings)  # a locked store or a damaged model fails here, exit 2
    try:
        err_console.print(
            f"serving {model} (version {service.model_version}) on http://{host}:{port} "
            f"(store {store}); console at /console, API docs at /docs",
            markup=False,  # paths are data (a folder named with brackets)
            highlight=False,
            soft_wrap=True,
        )
        app = create_app(settings, service=service, runs_dir=runs)
        freeze_heap()  # the start-up objects out of the collector's full passes
        uvicorn.run(
            app,
            host=host,
            port=port,
            workers=1,
            access_log=access_log,
            log_level="info" if access_log else "warning",
        )
    finally:
        service.close()
