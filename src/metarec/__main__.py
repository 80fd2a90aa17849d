"""``python -m metarec``: the ``metarec`` command (also ``torchrun ... -m metarec train ...``)."""

from metarec.cli import main

main()
