"""``python -m metarec.cli`` (``torchrun -m metarec.cli train ...`` runs it this way)."""

from metarec.cli import main

main()
