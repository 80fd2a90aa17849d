"""The ``metarec`` command: thin commands that parse, call the library, and print.

Errors the library raises on purpose (:class:`~metarec.errors.MetarecError`) exit with code 2 and
one line on stderr; anything else is a bug and keeps its traceback. Commands are grouped by what
they work on (data, model, bench, serve) and import the library inside their bodies, so that
``metarec --help`` does not pay for torch.
"""

import importlib
import os

from metarec.cli.app import app

# registers the commands, in --help's order
for _group in ("data", "model", "bench", "serve", "check"):
    importlib.import_module(f"metarec.cli.{_group}")


def main() -> None:
    """Entry point of the ``metarec`` script."""
    # OpenMP threads that wait by sleeping, not spinning (unless the caller chose): torch's
    # threads otherwise spin at every barrier for a peer that another process holds off the
    # core. On the shared 2-core machine, batch scoring with 2 threads took 3 to 4x the wall
    # time of 1 thread at load 6 to 7, and as long as 1 thread with passive waiting
    # (docs/BENCHMARKS.md). Read when torch loads OpenMP: set here, before any command imports
    # torch; library users set it themselves.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app()


__all__ = ["app", "main"]
