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
import http.client
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from repro import AMOJO_URL, CHAT_URL, DevServer, calls

DYNAMO = urlsplit(os.environ["TEST_DYNAMODB_ENDPOINT"])
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


def main() -> int:
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{proxy.server_address[1]}"
    lost = 0

    # A. The webhook-id claim (PutItem).
    with DevServer("retry", DYNAMODB_ENDPOINT=endpoint, TABLE_NAME="{channel}") as server:
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

    # B. The manager message record (TransactWriteItems).
    with DevServer("retry", DYNAMODB_ENDPOINT=endpoint, TABLE_NAME="{channel}") as server:
        Proxy.slow_target = "DynamoDB_20120810.TransactWriteItems"
        status, _ = server.manager_message("kommo-b-1")
        Proxy.slow_target = None
        time.sleep(2)
        relayed = [c for c in calls(CHAT_URL, server.scope) if c["body"].get("type") == "message.created"]
        print(f"B. manager message webhook, record answered late: HTTP {status}; "
              f"message.created at the chat service: {len(relayed)}")
        lost += status == 200 and not relayed

    # C. The status register (UpdateItem).
    with DevServer("retry", DYNAMODB_ENDPOINT=endpoint, TABLE_NAME="{channel}") as server:
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
    proxy.shutdown()
    print(f"held answers: {Proxy.held}")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
