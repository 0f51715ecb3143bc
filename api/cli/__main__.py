"""``python -m api.cli``: the ``pulse`` command."""

from api.cli import main

main()
