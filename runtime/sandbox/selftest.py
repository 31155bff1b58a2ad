"""Prove, on this host, that a real session is isolated before any user code runs in one.

The host sets up things the sandbox must not reach (a TCP listener on all interfaces, an
abstract unix socket, a marker file in the host's /tmp) and runs a probe cell in a real
session, built exactly as user sessions are. Each check the probe reports as anything
but "held" fails the self-test.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Runs inside the sandbox; {params} is a JSON object. Prints one JSON line of results.
_PROBE = r'''
import ctypes, errno, json, os, socket
p = json.loads({params!r})
out = {{}}

def refused(name, fn):
    try:
        fn()
    except OSError as e:
        out[name] = "held"
    else:
        out[name] = "NOT HELD: succeeded"

def tcp(host):
    def go():
        with socket.create_connection((host, p["port"]), timeout=1):
            pass
    return go

refused("tcp to host loopback", tcp("127.0.0.1"))
if p["host_ip"]:
    refused("tcp to host ip " + p["host_ip"], tcp(p["host_ip"]))
refused("dns", lambda: socket.getaddrinfo("pypi.org", 443))

def abstract():
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(p["abstract"])
refused("abstract unix socket", abstract)

for name, path in p["invisible"].items():
    out[name] = "NOT HELD: visible" if os.path.exists(path) else "held"

def shadow():
    open("/etc/shadow", "rb").read()
refused("/etc/shadow unreadable", shadow)

def write_root():
    open("/usr/beestown-probe", "wb")
refused("/usr read-only", write_root)
refused("/ read-only", lambda: open("/beestown-probe", "wb"))
out["uid not root"] = "held" if os.getuid() != 0 and os.geteuid() != 0 else "NOT HELD: root"
caps = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")]
out["no capabilities"] = "held" if caps and int(caps[0], 16) == 0 else "NOT HELD: " + str(caps)
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUSER = 0x10000000
out["no nested user namespace"] = (
    "held" if libc.unshare(CLONE_NEWUSER) != 0 else "NOT HELD: unshare succeeded")
import hashlib
env_leak = sorted(k for k, v in os.environ.items()
                  if p["host_env"].get(k) == hashlib.sha256(v.encode()).hexdigest())
out["host environment cleared"] = "NOT HELD: " + ",".join(env_leak) if env_leak else "held"
print(json.dumps(out))
'''


@dataclass
class Bait:
    """What the host puts out of reach; torn down after the probe."""

    params: dict[str, object]

    def probe_code(self) -> str:
        return _PROBE.format(params=json.dumps(self.params))


def _host_ip() -> str | None:
    # A UDP "connect" sends nothing; it only asks the kernel which source address the
    # default route would use.
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.255.255.255", 1))
        ip = str(s.getsockname()[0])
        return None if ip.startswith("127.") else ip
    return None


@contextlib.contextmanager
def bait(*, sandbox_env: set[str]) -> Iterator[Bait]:
    """Open the listeners and marker files the probe must not reach.

    Args:
        sandbox_env: names of the variables the sandbox sets itself (same value is
            no leak for those).
    """
    with contextlib.ExitStack() as stack:
        tcp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        tcp.bind(("0.0.0.0", 0))  # loopback and every host address
        tcp.listen(1)
        abstract = "\0beestown-selftest-" + secrets.token_hex(8)
        unix = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        unix.bind(abstract)
        unix.listen(1)
        fd, marker = tempfile.mkstemp(prefix="beestown-selftest-")
        os.close(fd)
        os.chmod(marker, 0o644)  # world-readable: only the mount namespace can hide it
        stack.callback(os.unlink, marker)
        # Hashes, not values: the probe must not carry the host's secrets in.
        host_env = {k: hashlib.sha256(v.encode()).hexdigest()
                    for k, v in os.environ.items() if k not in sandbox_env}
        yield Bait({
            "port": tcp.getsockname()[1],
            "host_ip": _host_ip(),
            "abstract": abstract,
            "invisible": {
                "host /tmp file invisible": marker,
                "project files invisible": str(Path(__file__).resolve()),
                "host /root invisible": "/root",
                "host /etc/passwd invisible": "/etc/passwd",
            },
            "host_env": host_env,
        })


def failures(stdout: str) -> dict[str, str]:
    """The probe's checks that did not hold (all of them if it printed no verdict)."""
    for line in reversed(stdout.splitlines()):
        with contextlib.suppress(ValueError):
            verdict = json.loads(line)
            if isinstance(verdict, dict) and verdict:
                return {k: str(v) for k, v in verdict.items() if v != "held"}
    return {"probe": f"no verdict in output {stdout[-500:]!r}"}
