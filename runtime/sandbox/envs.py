"""Where the sandbox's interpreter lives, and what a sandbox must bind to run it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

BATTERIES = ("numpy", "pandas", "matplotlib")
# Built by setup.py inside the env; each session copies it into its own home so that
# matplotlib's first import does not rescan every font (~1 s).
MPL_CACHE_DIRNAME = "mplcache"
SYSTEM_ENV_DIR = Path("/opt/beestown/sandbox-env")
SYSTEM_PYTHON = "/usr/bin/python3"


def default_env_dir() -> Path:
    """Return where setup installs the env: a world-readable place when root."""
    if os.geteuid() == 0:
        return SYSTEM_ENV_DIR
    from runtime.settings import Settings  # deferred: only the non-root path needs it

    return Settings().state_dir / "sandbox-env"


@dataclass(frozen=True)
class SandboxPython:
    """An interpreter as seen from inside the sandbox (paths are the same as on the host)."""

    executable: str
    # Directories bound read-only into the sandbox besides /usr.
    binds: tuple[str, ...]
    # The env root, when the interpreter is a venv (its mplcache lives there).
    env_dir: str | None
    batteries: bool


def _venv_root(python: Path) -> Path | None:
    root = python.parent.parent
    return root if (root / "pyvenv.cfg").is_file() else None


def _base_home(env_dir: Path) -> str | None:
    for line in (env_dir / "pyvenv.cfg").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home":
            return value.strip()
    return None


def resolve_python(python: str | None) -> SandboxPython:
    """Find the interpreter the sandbox will run, and what it needs bound.

    Args:
        python: an explicit interpreter (a venv's ``bin/python`` or one under ``/usr``);
            ``None`` looks for the env installed by ``python -m runtime.sandbox.setup``
            and falls back to Debian's ``/usr/bin/python3`` without batteries.

    Raises:
        ValueError: the interpreter cannot work inside the sandbox (explains why).
    """
    if python is None:
        candidates = [SYSTEM_ENV_DIR]
        if os.geteuid() != 0:
            candidates.append(default_env_dir())
        for candidate in candidates:
            exe = candidate / "bin" / "python"
            if exe.exists():
                return resolve_python(str(exe))
        logger.warning(
            "sandbox batteries env not found (looked in %s): sessions run %s without "
            "numpy/pandas/matplotlib; install them with `python -m runtime.sandbox.setup`",
            ", ".join(map(str, candidates)), SYSTEM_PYTHON)
        return SandboxPython(SYSTEM_PYTHON, (), None, batteries=False)

    exe = Path(python)
    if not exe.exists():
        raise ValueError(f"sandbox python {python} does not exist")
    env_dir = _venv_root(exe)
    if env_dir is None:
        if not str(exe.resolve()).startswith("/usr/"):
            raise ValueError(f"sandbox python {python} must be a venv or live under /usr")
        return SandboxPython(str(exe), (), None, batteries=False)
    home = _base_home(env_dir)
    if home is None or not home.startswith("/usr/"):
        raise ValueError(
            f"the venv {env_dir} is based on {home}, which the sandbox cannot see; "
            "create it from /usr/bin/python3 (python -m runtime.sandbox.setup does)")
    site = list(env_dir.glob("lib/python3*/site-packages"))
    batteries = bool(site) and all((site[0] / name).is_dir() for name in BATTERIES)
    if not batteries:
        logger.warning("sandbox env %s lacks some of %s", env_dir, ", ".join(BATTERIES))
    return SandboxPython(str(exe), (str(env_dir),), str(env_dir), batteries=batteries)
