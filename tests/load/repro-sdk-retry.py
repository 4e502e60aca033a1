"""Minimal reproduction: a conditional DynamoDB write that succeeds but answers after the SDK's
1 s attempt timeout is retried by the SDK, the retry fails its own condition, and the bridge
takes its own first write for someone else's (found by bridge-load at 200 conversations, where
Dynoxide answered in over a second).

    tests/load/with-servers .venv/bin/python tests/load/repro-sdk-retry.py

A small proxy stands between the dev server and Dynoxide (TEST_DYNAMODB_ENDPOINT). For the
operation under test it forwards the first request at once (so Dynoxide applies it) and holds
the answer 1.5 s; a repeat of the same body (the SDK's retry) is forwarded and answered at once.
Three cases, each on a fresh dev server:

A. PutItem (the webhook-id claim of POST /chat/events): a client message.created with a new
   webhook-id is answered 409 replayed_webhook, and the message never reaches amojo.
B. TransactWriteItems (the manager message record): Kommo's message webhook is answered 200 and
   the message never reaches the chat service (unless the server honours ClientRequestToken).
C. UpdateItem (the status register): message.status delivered is answered 200 and Kommo never
   gets delivery_status 1.

Exits 1 when any case shows the loss.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from datetime import datetime, timezone
from urllib.parse import urlsplit

from standardwebhooks import Webhook

DYNAMO = urlsplit(os.environ["TEST_DYNAMODB_ENDPOINT"])
AMOJO_URL = os.environ["FAKE_AMOJO_URL"]
AMOJO_SECRET = os.environ["FAKE_AMOJO_SECRET"]
CHAT_URL = os.environ["FAKE_CHAT_URL"]
CHAT_SECRET = os.environ["FAKE_CHAT_SECRET"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOLD_S = 1.5


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    slow_target: str | None = None  # e.g. "DynamoDB_20120810.PutItem"
    seen: set[str] = set()
    held: list[str] = []
    lock = threading.Lock()

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        target = self.headers.get("X-Amz-Target", "")
        digest = hashlib.sha256(body).hexdigest()
        hold = False
        with Proxy.lock:
            if target == Proxy.slow_target and b"ConditionExpression" in body and digest not in Proxy.seen:
                Proxy.seen.add(digest)
                Proxy.held.append(target)
                hold = True
        upstream = http.client.HTTPConnection(DYNAMO.hostname, DYNAMO.port, timeout=10)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        upstream.request("POST", self.path, body, headers)
        answer = upstream.getresponse()
        payload = answer.read()
        if hold:
            time.sleep(HOLD_S)
        try:
            self.send_response(answer.status)
            for name, value in answer.getheaders():
                if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            pass  # the SDK gave up on this attempt and closed the connection


def http_call(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class DevServer:
    def __init__(self, dynamodb: str) -> None:
        self.channel = "retry" + secrets.token_hex(4)
        self.scope = f"{self.channel}_acc-1"
        env = {
            "PATH": os.environ.get("PATH", ""), "PORT": "0", "RUST_LOG": "warn",
            "KOMMO_CHANNEL_ID": self.channel, "KOMMO_CHANNEL_SECRET": AMOJO_SECRET,
            "KOMMO_AMOJO_URL": AMOJO_URL, "CHAT_SERVICE_URL": f"{CHAT_URL}/events",
            "CHAT_SERVICE_SECRET": CHAT_SECRET, "KOMMO_INTEGRATION_SECRET": "repro",
            "KOMMO_ACCOUNTS": "1:acc-1", "DYNAMODB_ENDPOINT": dynamodb, "TABLE_NAME": self.channel,
        }
        self.process = subprocess.Popen([os.path.join(ROOT, "target/debug/dev-server")], env=env,
                                        stdout=subprocess.PIPE, text=True)
        for line in self.process.stdout:
            if line.startswith("dev-server: listening on "):
                self.base = line.strip().removeprefix("dev-server: listening on ")
                threading.Thread(target=lambda: [None for _ in self.process.stdout], daemon=True).start()
                return
        raise SystemExit("the dev server did not start")

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()

    def chat_event(self, event: dict) -> tuple[int, bytes]:
        body = json.dumps(event)
        webhook_id = "msg_" + secrets.token_hex(8)
        now = int(time.time())
        signature = Webhook(CHAT_SECRET).sign(webhook_id, datetime.fromtimestamp(now, tz=timezone.utc), body)
        return http_call("POST", f"{self.base}/chat/events", body.encode(), {
            "content-type": "application/json", "webhook-id": webhook_id,
            "webhook-timestamp": str(now), "webhook-signature": signature})

    def kommo(self, payload: dict) -> tuple[int, bytes]:
        body = json.dumps(payload).encode()
        signature = hmac.new(AMOJO_SECRET.encode(), body, hashlib.sha1).hexdigest()
        return http_call("POST", f"{self.base}/kommo/webhook/{self.scope}", body,
                         {"content-type": "application/json", "x-signature": signature})

    def manager_message(self, msgid: str) -> tuple[int, bytes]:
        now = int(time.time())
        return self.kommo({"account_id": "acc-1", "time": now,
                           "message": {"receiver": {"id": "r-1", "client_id": "client-1"}, "sender": {"id": "m-1"},
                                       "conversation": {"id": "k-1", "client_id": "conv-1"}, "timestamp": now,
                                       "message": {"id": msgid, "type": "text", "text": "hi"}}})


def calls(fake: str, scope: str) -> list[dict]:
    return json.loads(http_call("GET", f"{fake}/__admin/calls?scope={scope}")[1])["calls"]


def main() -> int:
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{proxy.server_address[1]}"
    lost = 0

    # A. The webhook-id claim (PutItem).
    server = DevServer(endpoint)
    try:
        Proxy.slow_target = "DynamoDB_20120810.PutItem"
        status, answer = server.chat_event({"type": "message.created", "scope_id": server.scope,
                                            "conversation_id": "conv-1", "msgid": "chat-1",
                                            "user": {"id": "client-1", "name": "Ann"},
                                            "message": {"type": "text", "text": "hello"},
                                            "timestamp_ms": int(time.time() * 1000)})
        Proxy.slow_target = None
        time.sleep(2)
        imported = [c for c in calls(AMOJO_URL, server.scope) if c["path"].endswith(server.scope)]
        print(f"A. client message.created, new webhook-id, claim answered late: HTTP {status} {answer.decode()[:90]}; "
              f"imported into amojo: {len(imported)}")
        lost += status != 200 and not imported
    finally:
        server.stop()

    # B. The manager message record (TransactWriteItems).
    server = DevServer(endpoint)
    try:
        Proxy.slow_target = "DynamoDB_20120810.TransactWriteItems"
        status, _ = server.manager_message("kommo-b-1")
        Proxy.slow_target = None
        time.sleep(2)
        relayed = [c for c in calls(CHAT_URL, server.scope) if c["body"].get("type") == "message.created"]
        print(f"B. manager message webhook, record answered late: HTTP {status}; "
              f"message.created at the chat service: {len(relayed)}")
        lost += status == 200 and not relayed
    finally:
        server.stop()

    # C. The status register (UpdateItem).
    server = DevServer(endpoint)
    try:
        status, _ = server.manager_message("kommo-c-1")
        time.sleep(1)
        Proxy.slow_target = "DynamoDB_20120810.UpdateItem"
        status, answer = server.chat_event({"type": "message.status", "scope_id": server.scope,
                                            "reference": "kommo-c-1", "status": "delivered"})
        Proxy.slow_target = None
        time.sleep(2)
        reported = [c for c in calls(AMOJO_URL, server.scope) if c["path"].endswith("/delivery_status")]
        print(f"C. message.status delivered, register answered late: HTTP {status}; "
              f"delivery_status calls at amojo: {[c['body'] for c in reported]}")
        lost += status == 200 and not reported
    finally:
        server.stop()
        proxy.shutdown()
    print(f"held answers: {Proxy.held}")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
