"""``python -m chaos``: see :mod:`chaos.cli`."""

from chaos.cli import main

main()
