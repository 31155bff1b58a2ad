"""A scripted OpenAI-compatible chat completions server on loopback, for tests.

Tests queue replies; every request is recorded. This fakes the LLM only at its HTTP
boundary: BeesTown's real `openai` client talks to it over real HTTP.
"""

from __future__ import annotations

import json
import threading
import time
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


class FakeLLM:
    def __init__(self) -> None:
        self.replies: list[Scripted] = []
        self.requests: list[dict[str, Any]] = []
        self.refuse_json_schema = False
        self.default: Scripted | None = None
        self.routes: list[tuple[str, list[Scripted]]] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, payload = fake._answer(self.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

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
