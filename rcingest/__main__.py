"""``python -m rcingest``: the command line (how ``rcingest serve`` starts its normaliser)."""

from rcingest.cli import main

main()
