"""`python -m prosemc` runs the CLI."""

from prosemc.cli import main

main()
