"""Install the sandbox's Python environment ("batteries"): ``python -m runtime.sandbox.setup``.

The sandbox runs code as an unprivileged uid, so its interpreter and libraries must live
somewhere that uid can read: ``/opt/beestown/sandbox-env`` when run as root (root's home
is mode 700), ``$BEESTOWN_STATE_DIR/sandbox-env`` otherwise (the sandbox then runs as the
same user). The environment is a venv of Debian's ``/usr/bin/python3`` so that its base
interpreter sits under ``/usr``, which every sandbox binds read-only anyway.

Idempotent: a second run only checks that the packages import. Matplotlib's font cache
is built once here so that the first plot of every session does not pay for it.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from runtime.sandbox.envs import (
    BATTERIES,
    MPL_CACHE_DIRNAME,
    default_env_dir,
)

logger = logging.getLogger(__name__)

_BASE_PYTHON = "/usr/bin/python3"


def _run(cmd: list[str], *, env: dict[str, str] | None = None) -> None:
    logger.info("running %s", " ".join(cmd))
    subprocess.run(cmd, check=True, env=env)


def _imports_ok(python: Path) -> bool:
    probe = "import " + ", ".join(BATTERIES)
    done = subprocess.run([str(python), "-I", "-c", probe], capture_output=True, check=False)
    return done.returncode == 0


def install(env_dir: Path, *, base_python: str = _BASE_PYTHON, upgrade: bool = False) -> Path:
    """Create (or check) the sandbox venv at ``env_dir``; returns its interpreter path.

    Args:
        env_dir: where the venv lives; must be readable by the sandbox uid.
        base_python: interpreter the venv is made from; it must live under ``/usr``.
        upgrade: reinstall the packages even when they already import.
    """
    python = env_dir / "bin" / "python"
    # World-readable files: the sandbox runs as a uid that owns nothing here.
    os.umask(0o022)
    if not python.exists():
        env_dir.parent.mkdir(parents=True, exist_ok=True)
        _run([base_python, "-m", "venv", str(env_dir)])
    if upgrade or not _imports_ok(python):
        _run([str(python), "-m", "pip", "install", "--disable-pip-version-check",
              "--no-input", *(["--upgrade"] if upgrade else []), *BATTERIES])
    cache = env_dir / MPL_CACHE_DIRNAME
    cache.mkdir(exist_ok=True)
    env = {"PATH": "/usr/bin:/bin", "MPLCONFIGDIR": str(cache), "MPLBACKEND": "Agg"}
    _run([str(python), "-I", "-c", "import matplotlib.pyplot"], env=env)
    if not _imports_ok(python):
        raise RuntimeError(f"{python} cannot import {', '.join(BATTERIES)} after install")
    return python


def main(argv: list[str] | None = None) -> int:
    """Command line entry: install the batteries env and print nothing but logs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--env-dir", type=Path, default=None,
                        help="where to create the venv (default: %(default)s → per-user choice)")
    parser.add_argument("--base-python", default=_BASE_PYTHON)
    parser.add_argument("--upgrade", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    env_dir: Path = args.env_dir or default_env_dir()
    python = install(env_dir, base_python=args.base_python, upgrade=args.upgrade)
    logger.info("sandbox python ready: %s", python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
