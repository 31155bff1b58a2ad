"""A scripted OpenAI-compatible chat completions server on loopback, for tests.

Tests queue replies; every request is recorded. This fakes the LLM only at its HTTP
boundary: BeesTown's real `openai` client talks to it over real HTTP.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Scripted:
    """One reply: a text, or an HTTP error status with a body."""

    content: str = ""
    status: int = 200
    error: str = ""
    prompt_tokens: int = 11
    completion_tokens: int = 7
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    # Faults: extra response headers (Retry-After), a delay before answering (a client
    # timeout), or a connection closed without any answer.
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    close: bool = False


class FakeLLM:
    def __init__(self) -> None:
        self.replies: list[Scripted] = []
        self.requests: list[dict[str, Any]] = []
        self.refuse_json_schema = False
        self.default: Scripted | None = None
        self.routes: list[tuple[str, list[Scripted]]] = []
        # Called first with each request's body; a reply it returns is served instead
        # (fault injection: storms of 429/5xx, timeouts, closed connections; or answers
        # computed from the request).
        self.chaos: Callable[[dict[str, Any]], Scripted | None] | None = None
        # (request body, status) of every answer sent.
        self.answered: list[tuple[dict[str, Any], int]] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fault = fake.chaos(body) if fake.chaos is not None else None
                extra: dict[str, str] = {}
                if fault is not None:
                    with fake._lock:
                        fake.requests.append({"path": self.path, "body": body,
                                              "fault": fault.status})
                    time.sleep(fault.delay_s)
                    if fault.close:
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    status, payload = fake._reply(body, fault)
                    extra = fault.headers
                else:
                    status, payload = fake._answer(self.path, body)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in extra.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (its timeout)
                    return
                with fake._lock:
                    fake.answered.append((body, status))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def script(self, *replies: Scripted | str) -> None:
        with self._lock:
            self.replies.extend(r if isinstance(r, Scripted) else Scripted(r) for r in replies)

    def script_for(self, match: str, *replies: Scripted | str) -> None:
        """Queue replies for requests whose messages contain `match` (concurrent callers)."""
        with self._lock:
            self.routes.append(
                (match, [r if isinstance(r, Scripted) else Scripted(r) for r in replies]))

    def reset(self) -> None:
        with self._lock:
            self.replies.clear()
            self.requests.clear()
            self.routes.clear()
            self.refuse_json_schema = False
            self.default = None
            self.chaos = None
            self.answered.clear()

    def _routed(self, body: dict[str, Any]) -> Scripted | None:
        text = "\n".join(str(m.get("content") or "") for m in body.get("messages", []))
        for match, queue in self.routes:
            if match in text and queue:
                return queue.pop(0)
        return None

    def _answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append({"path": path, "body": body})
            fmt = (body.get("response_format") or {}).get("type")
            if self.refuse_json_schema and fmt == "json_schema":
                return 400, {"error": {"message": "response_format json_schema is not supported",
                                       "type": "invalid_request_error"}}
            routed = self._routed(body)
            if routed is not None:
                reply = routed
            elif self.replies:
                reply = self.replies.pop(0)
            elif self.default is not None:
                reply = self.default
            else:
                return 500, {"error": {"message": "fake LLM: no scripted reply left"}}
        return self._reply(body, reply)

    def _reply(self, body: dict[str, Any], reply: Scripted) -> tuple[int, dict[str, Any]]:
        if reply.status != 200:
            return reply.status, {"error": {"message": reply.error or "scripted error"}}
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = reply.tool_calls
        return 200, {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": message,
                         "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
            "usage": {"prompt_tokens": reply.prompt_tokens,
                      "completion_tokens": reply.completion_tokens,
                      "total_tokens": reply.prompt_tokens + reply.completion_tokens},
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
