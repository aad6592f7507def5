"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol, with scripted answers.

    server.script({"content": "{...}"}, {"status": 500}, {"sleep": 3, "content": "..."}, default={...})

Each POST to /v1/chat/completions takes the next scripted behaviour (then `default`):
    content          the assistant message's text
    status, error    answer with this HTTP status and an OpenAI-style error body
    sleep            seconds to wait before answering (a slow endpoint)
    usage            False: leave `usage` out of the response
Usage is counted from the request (characters / 4), never a fixed figure. Every request body is kept in
`server.requests`. Run standalone (`python tests/support/openai_server.py SCRIPT.json`) it serves a script file and
prints its base URL: the README's example uses that.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

__all__ = ["ScriptedOpenAI", "dead_base_url", "openai_server"]


class ScriptedOpenAI:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._steps: list[dict[str, Any]] = []
        self._default: dict[str, Any] = {"status": 500, "error": "no scripted answer"}
        self._lock = threading.Lock()
        handler = self._handler()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def script(self, *steps: dict[str, Any], default: dict[str, Any] | None = None) -> None:
        with self._lock:
            self._steps = list(steps)
            if default is not None:
                self._default = default

    def _next(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.requests.append(body)
            return self._steps.pop(0) if self._steps else self._default

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet test output
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                    return
                step = server._next(body)
                if step.get("sleep"):
                    time.sleep(step["sleep"])
                if "status" in step:
                    self._send(step["status"], {"error": {"message": step.get("error", "scripted error"),
                                                          "type": "invalid_request_error", "code": None}})
                    return
                prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4
                completion = len(step["content"]) // 4
                payload: dict[str, Any] = {
                    "id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", ""),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": step["content"]}}]}
                if step.get("usage", True):
                    payload["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion,
                                        "total_tokens": prompt + completion}
                try:
                    self._send(200, payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        return Handler

    def __enter__(self) -> ScriptedOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def dead_base_url() -> str:
    """A URL on a port where nothing listens (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def openai_server():
    with ScriptedOpenAI() as server:
        yield server


if __name__ == "__main__":  # serve a script file: {"steps": [...], "default": {...}}
    plan = json.loads(open(sys.argv[1]).read()) if len(sys.argv) > 1 else {}
    with ScriptedOpenAI() as srv:
        srv.script(*plan.get("steps", []), default=plan.get("default"))
        print(srv.base_url, flush=True)
        try:
            srv.thread.join()
        except KeyboardInterrupt:
            pass
