"""Shared machinery of the test fakes: HTTP server, call recording, scripted
responses, fault windows and the /__admin/ API.

Admin routes (scope given as `?scope=`, absent meaning every scope, except
where a body names it):
  GET    /__admin/health
  GET    /__admin/calls     every call recorded, in arrival order; each record
                            has `reply_status` (the status answered, null when
                            the connection was closed unanswered), its
                            `reply_headers`, and `fault` (true when a fault
                            window answered it)
  DELETE /__admin/calls
  POST   /__admin/script    {"scope", "responses": [...], "match"?}: answers
                            used once each, in order
  DELETE /__admin/script
  POST   /__admin/fault     {"scope", "seconds", "reply": {...}, "match"?,
                            "every"?}: for `seconds`, every verified request of
                            the scope whose path contains `match` (one in
                            `every`, the first included) gets `reply` (a
                            scripted response: status, headers, body,
                            delay_ms, close), before any script
  DELETE /__admin/fault

A fake is a `FakeService` (the protocol-specific part: how to find a request's
scope, how to verify it, what to answer) plugged into `run()`, which owns
everything else. Request bodies are never logged: chat message text is private.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

ADMIN_PREFIX = "/__admin/"


@dataclass
class Request:
    method: str
    path: str  # as received, without scheme/host and query string
    query: str  # raw query string, "" if none
    headers: dict[str, str]  # lower-cased names; repeated headers joined by ", "
    raw_body: bytes

    def json_body(self) -> Any:
        """The body parsed as JSON; raises ValueError if it is not JSON."""
        return json.loads(self.raw_body)

    def query_param(self, name: str) -> str | None:
        values = parse_qs(self.query, keep_blank_values=True).get(name)
        return values[0] if values else None


@dataclass
class Reply:
    status: int = 200
    payload: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_ms: int = 0
    # Drop the connection without writing any response (after delay_ms).
    close: bool = False


def json_reply(status: int, value: Any) -> Reply:
    payload = json.dumps(value, separators=(",", ":")).encode()
    return Reply(status, payload, {"Content-Type": "application/json"})


def admin_error(status: int, message: str) -> Reply:
    return json_reply(status, {"error": message})


class BadAdminRequest(Exception):
    """Invalid input to an /__admin/ route; answered with 400."""


def admin_json(req: Request) -> dict:
    try:
        body = req.json_body()
    except ValueError as exc:
        raise BadAdminRequest(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadAdminRequest("body must be a JSON object")
    return body


AdminRoute = Callable[[Request], Reply]


class FakeService:
    """Protocol-specific behaviour; subclasses override the hooks below."""

    def scope_of(self, req: Request) -> str:
        raise NotImplementedError

    def verify(self, req: Request) -> str | None:
        """None if the request is authentic, else why it is not."""
        raise NotImplementedError

    def reject(self, req: Request, error: str) -> Reply:
        """Answer to a request that failed verification."""
        raise NotImplementedError

    def answer(self, req: Request, scope: str) -> Reply:
        """Default answer to a verified request when no script applies."""
        raise NotImplementedError

    def annotate(self, record: dict, req: Request, reply: Reply) -> None:
        """Add service-specific fields to a record before it is stored."""

    def admin_routes(self) -> dict[tuple[str, str], AdminRoute]:
        """Extra (METHOD, path) -> handler routes under /__admin/."""
        return {}


class CallLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[dict] = []

    def add(self, record: dict) -> None:
        with self._lock:
            self._records.append(record)

    def list(self, scope: str | None) -> list[dict]:
        with self._lock:
            return [r for r in self._records if scope is None or r["scope"] == scope]

    def clear(self, scope: str | None) -> None:
        with self._lock:
            self._records = [] if scope is None else [r for r in self._records if r["scope"] != scope]


def _parse_scripted(entry: Any, default_match: str | None) -> tuple[str | None, Reply]:
    """Validate one scripted response; returns (path substring filter, reply)."""
    if not isinstance(entry, dict):
        raise BadAdminRequest("each response must be a JSON object")
    unknown = set(entry) - {"status", "headers", "body", "delay_ms", "close", "match"}
    if unknown:
        raise BadAdminRequest(f"unknown response keys: {sorted(unknown)}")

    status = entry.get("status", 200)
    if type(status) is not int or not 100 <= status <= 599:
        raise BadAdminRequest("status must be an integer in 100..599")
    headers = entry.get("headers", {})
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise BadAdminRequest("headers must map strings to strings")
    if any(k.lower() in ("content-length", "transfer-encoding") for k in headers):
        raise BadAdminRequest("message framing headers are set by the fake")
    delay_ms = entry.get("delay_ms", 0)
    if type(delay_ms) is not int or delay_ms < 0:
        raise BadAdminRequest("delay_ms must be a non-negative integer")
    close = entry.get("close", False)
    if type(close) is not bool:
        raise BadAdminRequest("close must be a boolean")
    match = entry.get("match", default_match)
    if match is not None and not isinstance(match, str):
        raise BadAdminRequest("match must be a string")

    headers = dict(headers)
    has_type = any(k.lower() == "content-type" for k in headers)
    if "body" not in entry:
        payload = b""
    elif isinstance(entry["body"], str):
        # A string is sent verbatim, so tests can script non-JSON answers.
        payload = entry["body"].encode()
        if not has_type:
            headers["Content-Type"] = "text/plain; charset=utf-8"
    else:
        payload = json.dumps(entry["body"], separators=(",", ":")).encode()
        if not has_type:
            headers["Content-Type"] = "application/json"
    return match, Reply(status, payload, headers, delay_ms, close)


class Scripts:
    """Per-scope queues of scripted responses."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[tuple[str | None, Reply]]] = {}

    def extend(self, scope: str, entries: list[tuple[str | None, Reply]]) -> None:
        with self._lock:
            self._queues.setdefault(scope, deque()).extend(entries)

    def take(self, scope: str, path: str) -> Reply | None:
        """Remove and return the first queued reply whose match fits path."""
        with self._lock:
            queue = self._queues.get(scope)
            if not queue:
                return None
            for entry in queue:
                match, reply = entry
                if match is None or match in path:
                    queue.remove(entry)
                    return reply
            return None

    def clear(self, scope: str | None) -> None:
        with self._lock:
            if scope is None:
                self._queues.clear()
            else:
                self._queues.pop(scope, None)


@dataclass
class Fault:
    until: float  # time.monotonic() deadline
    match: str | None
    every: int
    reply: Reply
    seen: int = 0


class Faults:
    """Per-scope fault windows: a reply given to every matching request until a deadline."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[str, list[Fault]] = {}

    def add(self, scope: str, fault: Fault) -> None:
        with self._lock:
            self._faults.setdefault(scope, []).append(fault)

    def take(self, scope: str, path: str) -> Reply | None:
        """The reply of the first live fault window of `scope` that applies to this request."""
        now = time.monotonic()
        with self._lock:
            faults = self._faults.get(scope)
            if not faults:
                return None
            faults[:] = [f for f in faults if f.until > now]
            for fault in faults:
                if fault.match is None or fault.match in path:
                    fault.seen += 1
                    if (fault.seen - 1) % fault.every == 0:
                        return fault.reply
                    return None
            return None

    def clear(self, scope: str | None) -> None:
        with self._lock:
            if scope is None:
                self._faults.clear()
            else:
                self._faults.pop(scope, None)


def _parse_fault(body: dict) -> tuple[str, Fault]:
    unknown = set(body) - {"scope", "seconds", "reply", "match", "every"}
    if unknown:
        raise BadAdminRequest(f"unknown fault keys: {sorted(unknown)}")
    scope = body.get("scope")
    if not isinstance(scope, str):
        raise BadAdminRequest("scope must be a string")
    seconds = body.get("seconds")
    if type(seconds) not in (int, float) or not 0 < seconds <= 3600:
        raise BadAdminRequest("seconds must be a number in (0, 3600]")
    every = body.get("every", 1)
    if type(every) is not int or every < 1:
        raise BadAdminRequest("every must be a positive integer")
    match = body.get("match")
    if match is not None and not isinstance(match, str):
        raise BadAdminRequest("match must be a string")
    reply = body.get("reply")
    if not isinstance(reply, dict) or "match" in reply:
        raise BadAdminRequest("reply must be a scripted response without its own match")
    _, parsed = _parse_scripted(reply, None)
    return scope, Fault(time.monotonic() + seconds, match, every, parsed)


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # parallel tests may open many connections at once

    def __init__(self, port: int, service: FakeService, verbose: bool) -> None:
        self.service = service
        self.verbose = verbose
        self.calls = CallLog()
        self.scripts = Scripts()
        self.faults = Faults()
        super().__init__(("127.0.0.1", port), Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or hang up (tests do this on purpose) are not errors.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeServer

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        # Covers access lines too; they hold method, path and status, no bodies.
        if self.server.verbose:
            super().log_message(format, *args)

    def _dispatch(self) -> None:
        try:
            req = self._read_request()
        except ValueError as exc:
            self.close_connection = True
            self._send(json_reply(400, {"error": f"unreadable request: {exc}"}))
            return
        try:
            if req.path.startswith(ADMIN_PREFIX):
                reply = self._admin(req)
            else:
                reply = self._api(req)
        except Exception as exc:  # a bug in the fake: make it visible to the test
            traceback.print_exc(file=sys.stderr)
            reply = json_reply(500, {"error": f"fake crashed: {type(exc).__name__}"})
        self._send(reply)

    def _read_request(self) -> Request:
        url = urlsplit(self.path)  # also strips scheme/host of an absolute-form target
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return Request(self.command, url.path, url.query, headers, self._read_body())

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after the chunk
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailer fields
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        body = self.rfile.read(length)
        if len(body) < length:
            raise ConnectionAbortedError("client closed the connection mid-body")
        return body

    def _api(self, req: Request) -> Reply:
        server = self.server
        service = server.service
        scope = service.scope_of(req)
        error = service.verify(req)
        try:
            body: Any = req.json_body()
        except ValueError:
            body = req.raw_body.decode("utf-8", "replace")
        record = {
            "scope": scope,
            "method": req.method,
            "path": req.path,
            "query": req.query,
            "headers": req.headers,
            "body": body,
            "signature_ok": error is None,
            "error": error,
            "received_at": time.time(),
        }
        fault = None
        if error is not None:
            reply = service.reject(req, error)
        else:
            fault = server.faults.take(scope, req.path)
            reply = fault or server.scripts.take(scope, req.path) or service.answer(req, scope)
        record["reply_status"] = None if reply.close else reply.status
        record["reply_headers"] = {} if reply.close else dict(reply.headers)
        record["fault"] = fault is not None
        service.annotate(record, req, reply)
        # Stored before answering, so a test that has its answer sees the call.
        server.calls.add(record)
        return reply

    def _admin(self, req: Request) -> Reply:
        server = self.server
        route = (req.method, req.path)
        scope = req.query_param("scope")  # None (absent) means every scope
        try:
            if route == ("GET", "/__admin/health"):
                return json_reply(200, {"ok": True})
            if route == ("GET", "/__admin/calls"):
                return json_reply(200, {"calls": server.calls.list(scope)})
            if route == ("DELETE", "/__admin/calls"):
                server.calls.clear(scope)
                return json_reply(200, {})
            if route == ("POST", "/__admin/script"):
                return self._add_script(admin_json(req))
            if route == ("DELETE", "/__admin/script"):
                server.scripts.clear(scope)
                return json_reply(200, {})
            if route == ("POST", "/__admin/fault"):
                fault_scope, fault = _parse_fault(admin_json(req))
                server.faults.add(fault_scope, fault)
                return json_reply(200, {})
            if route == ("DELETE", "/__admin/fault"):
                server.faults.clear(scope)
                return json_reply(200, {})
            extra = server.service.admin_routes().get(route)
            if extra is not None:
                return extra(req)
        except BadAdminRequest as exc:
            return admin_error(400, str(exc))
        return admin_error(404, f"no admin route {req.method} {req.path}")

    def _add_script(self, body: dict) -> Reply:
        scope = body.get("scope")
        responses = body.get("responses")
        # A top-level "match" is the default for responses without their own.
        default_match = body.get("match")
        if not isinstance(scope, str):
            raise BadAdminRequest("scope must be a string")
        if not isinstance(responses, list):
            raise BadAdminRequest("responses must be a list")
        entries = [_parse_scripted(r, default_match) for r in responses]
        self.server.scripts.extend(scope, entries)
        return json_reply(200, {})

    def _send(self, reply: Reply) -> None:
        if reply.delay_ms:
            time.sleep(reply.delay_ms / 1000)
        if reply.close:
            # No response at all; the server shuts the socket down after this.
            self.close_connection = True
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.payload)))
        self.end_headers()
        self.wfile.write(reply.payload)


def run(description: str, make_service: Callable[[str], FakeService]) -> None:
    """Command-line entry point shared by the fakes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=0, help="0 lets the OS pick")
    parser.add_argument("--secret", required=True)
    parser.add_argument("--verbose", action="store_true", help="log one line per request to stderr")
    args = parser.parse_args()
    try:
        service = make_service(args.secret)
    except ValueError as exc:
        parser.error(f"--secret: {exc}")

    server = FakeServer(args.port, service, args.verbose)
    # SystemExit raised in the main thread unwinds serve_forever() cleanly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # The socket is already listening here, so connections are accepted from now on.
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
