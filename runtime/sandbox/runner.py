"""The warm interpreter that runs inside the sandbox (stdlib only; bound read-only).

It is started by the host as ``python -I runner.py`` and never imported by the host.

Protocol: the host writes one JSON request per line on our stdin, which this script
moves to a private fd before any user code runs (fd 0 becomes /dev/null); responses are
JSON lines on the fd named by argv[1], a pipe only this process holds (close-on-exec, so
the user's subprocesses do not inherit it). ``print()`` and subprocess output go to fds 1
and 2, which the host reads as the cell's streams, so nothing the user prints can look
like a response. User code runs in this very process and could write to that fd on
purpose: the host treats malformed or oversized frames as the session breaking, never as
trusted data.

At the end of a cell we write the host's per-cell marker on fds 1 and 2 *before* the
response, so the host knows where the cell's output ends.
"""

from __future__ import annotations

import ast
import base64
import builtins
import contextlib
import io
import json
import linecache
import os
import shutil
import signal
import sys
import time
import traceback
from types import CodeType, FrameType
from typing import Any, BinaryIO

_RUNNER_FILE = __file__
_MAIN_PID = os.getpid()
_WORKDIR = os.getcwd()


class CellTimeout(BaseException):
    """Raised in the cell by SIGALRM; BaseException so ``except Exception`` cannot eat it."""


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise CellTimeout("cell exceeded its wall clock limit")


def _mime_bundle(obj: Any, limit: int) -> dict[str, str]:
    """IPython-like rich representation of one object, each entry capped at ``limit``."""
    data: dict[str, str] = {}
    for method, mime in (("_repr_html_", "text/html"), ("_repr_markdown_", "text/markdown"),
                         ("_repr_svg_", "image/svg+xml"), ("_repr_latex_", "text/latex")):
        fn = getattr(obj, method, None)
        if callable(fn) and not isinstance(obj, type):
            try:
                value = fn()
            except Exception:
                continue
            if isinstance(value, str):
                data[mime] = value[:limit]
    fn = getattr(obj, "_repr_png_", None)
    if callable(fn) and not isinstance(obj, type):
        try:
            png = fn()
            if isinstance(png, bytes) and len(png) <= limit:
                data["image/png"] = base64.b64encode(png).decode()
        except Exception:
            pass
    try:
        text = repr(obj)
    except Exception as e:
        text = f"<repr failed: {type(e).__name__}: {e}>"
    data["text/plain"] = text[:limit]
    return data


class Runner:
    def __init__(self, proto_in: BinaryIO, proto_out: int) -> None:
        self.proto_in = proto_in
        self.proto_out = proto_out
        self.count = 0
        self.results: list[dict[str, str]] = []
        self.result_limit = 10_000_000
        self.ns: dict[str, Any] = {
            "__name__": "__main__",
            "__builtins__": builtins,
            "display": self.display,
        }

    def send(self, msg: dict[str, Any]) -> None:
        data = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
        view = memoryview(data)
        while view:
            n = os.write(self.proto_out, view)
            view = view[n:]

    def display(self, *objs: Any) -> None:
        """Show objects as rich results of the current cell (like IPython's display)."""
        for obj in objs:
            self.results.append(_mime_bundle(obj, self.result_limit))

    def _figures(self) -> None:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None:
            return
        for num in pyplot.get_fignums():
            fig = pyplot.figure(num)
            buf = io.BytesIO()
            try:
                fig.savefig(buf, format="png", bbox_inches="tight")
            except Exception as e:
                print(f"could not render figure {num}: {e}", file=sys.stderr)
                continue
            png = buf.getvalue()
            if len(png) <= self.result_limit:
                self.results.append({"image/png": base64.b64encode(png).decode(),
                                     "text/plain": f"<Figure {num}>"})
        pyplot.close("all")

    def _compile(self, code: str) -> tuple[CodeType | None, CodeType | None]:
        self.count += 1
        filename = f"<cell-{self.count}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        tree = ast.parse(code, filename, "exec")
        last = None
        # IPython convention: a trailing ';' silences the last expression.
        if tree.body and isinstance(tree.body[-1], ast.Expr) and not code.rstrip().endswith(";"):
            last_node = tree.body.pop()
            assert isinstance(last_node, ast.Expr)
            last = compile(ast.Expression(last_node.value), filename, "eval")
        body = compile(tree, filename, "exec") if tree.body else None
        return body, last

    def _error(self, exc: BaseException) -> dict[str, str]:
        te = traceback.TracebackException(type(exc), exc, exc.__traceback__)
        # Hide this script's own frames: the user should see only their cell.
        te.stack = traceback.StackSummary.from_list(
            [f for f in te.stack if f.filename != _RUNNER_FILE])
        return {"name": type(exc).__name__, "value": str(exc), "traceback": "".join(te.format())}

    def run(self, req: dict[str, Any]) -> dict[str, Any]:
        self.results = []
        self.result_limit = int(req.get("result_limit", self.result_limit))
        error = None
        timed_out = False
        started = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, float(req["timeout"]))
        try:
            try:
                body, last = self._compile(req["code"])
                if body is not None:
                    exec(body, self.ns)
                if last is not None:
                    value = eval(last, self.ns)
                    if value is not None:
                        self.ns["_"] = value
                        self.results.append(_mime_bundle(value, self.result_limit))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except CellTimeout as e:
            timed_out = True
            error = self._error(e)
            error["name"] = "CellTimeout"
        except BaseException as e:  # the user's SystemExit and KeyboardInterrupt are results too
            error = self._error(e)
        if os.getpid() != _MAIN_PID:
            # A child the cell forked got here (its exception left the cell): it must
            # never answer or read requests in place of the real interpreter.
            os._exit(1)
        duration = (time.perf_counter() - started) * 1000
        try:
            self._figures()
        except BaseException as e:
            error = error or self._error(e)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        marker = req["marker"].encode()
        for fd in (1, 2):
            # The user may have closed it; the host then stops waiting for this marker.
            with contextlib.suppress(OSError):
                os.write(fd, marker)
        return {"results": self.results, "error": error, "timed_out": timed_out,
                "duration_ms": duration}

    def _path(self, rel: str) -> str:
        return os.path.join(_WORKDIR, rel)

    def write(self, req: dict[str, Any]) -> dict[str, Any]:
        path = self._path(req["path"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "ab" if req.get("append") else "wb") as f:
            f.write(base64.b64decode(req["data"]))
        return {}

    def read(self, req: dict[str, Any]) -> dict[str, Any]:
        with open(self._path(req["path"]), "rb") as f:
            f.seek(int(req["offset"]))
            data = f.read(int(req["size"]))
        return {"data": base64.b64encode(data).decode(), "eof": len(data) < int(req["size"])}

    def list(self, req: dict[str, Any]) -> dict[str, Any]:
        files = []
        for root, _dirs, names in os.walk(_WORKDIR):
            for name in names:
                full = os.path.join(root, name)
                if os.path.isfile(full) and not os.path.islink(full):
                    files.append(os.path.relpath(full, _WORKDIR))
        return {"files": sorted(files)}

    def serve(self) -> None:
        ops = {"run": self.run, "write": self.write, "read": self.read, "list": self.list}
        self.send({"op": "ready", "python": sys.version.split()[0]})
        for line in self.proto_in:
            req = json.loads(line)
            try:
                reply = ops[req["op"]](req)
                reply["ok"] = True
            except Exception as e:
                reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            reply["id"] = req.get("id")
            self.send(reply)


def _seed_matplotlib_cache() -> None:
    src = os.environ.pop("BEESTOWN_MPLCACHE", "")
    dst = os.environ.get("MPLCONFIGDIR", "")
    if src and dst and os.path.isdir(src):
        # On failure matplotlib rebuilds its cache: a slower first plot, nothing worse.
        with contextlib.suppress(OSError):
            shutil.copytree(src, dst, dirs_exist_ok=True)


def main() -> None:
    # Take the protocol off fds 0 and 3 before anything the user controls can run.
    proto_in = os.fdopen(os.dup(0), "rb", buffering=1 << 16)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    proto_out = int(sys.argv[1])  # the host's response pipe, inherited through bwrap
    os.set_inheritable(proto_in.fileno(), False)
    os.set_inheritable(proto_out, False)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - lives as long as the process
    for stream in (sys.stdout, sys.stderr):
        assert isinstance(stream, io.TextIOWrapper)
        stream.reconfigure(line_buffering=True, errors="backslashreplace")
    os.makedirs(_WORKDIR, exist_ok=True)
    _seed_matplotlib_cache()
    signal.signal(signal.SIGALRM, _on_alarm)
    sys.argv = [""]
    sys.path.insert(0, _WORKDIR)
    Runner(proto_in, proto_out).serve()


if __name__ == "__main__":
    main()
