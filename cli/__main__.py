"""`python -m cli ...` is `beestown ...`."""

from cli import main

main()
