"""Start a BeesTown task and, with --wait, follow it to the end: `beestown run` as a script.

    python starter.py "Summarise the three largest files in this repo"
    python starter.py --plan examples/demo.yaml --wait
    python starter.py --plan examples/demo.yaml --wait --json

The work is done in `cli/run.py`; exit codes are the CLI's (0 completed, 1 failed,
2 bad usage, configuration, or a server that cannot be reached).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import cli


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(["run", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
