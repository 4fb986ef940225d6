"""``python -m docmill`` runs the CLI."""

from docmill.cli import main

main()
