"""Minimal reproduction: delivered then read, reported back to back by the chat service, can
reach Kommo as read then delivered (found by bridge-load: "statuses of km-2-63 arrived at amojo
in the order [2, 1]").

    tests/load/with-servers .venv/bin/python tests/load/repro-status-order.py

Each status that moves the register queues its own ReportDeliveryStatus; nothing orders two
reports of one message, so the later (higher) one can overtake the earlier one, and a retried
report always arrives after a report queued behind it. Kommo, applying them in arrival order,
shows the message delivered after it was read.

1. "retried delivered": amojo answers the first delivery_status call 503; delivered is retried
   and lands after read.
2. "race": 40 manager messages, each reported delivered and read back to back (each request
   acknowledged before the next); counts the messages whose calls reached amojo out of order.

Exits 1 when the order goes backwards.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timezone

from standardwebhooks import Webhook

AMOJO_URL = os.environ["FAKE_AMOJO_URL"]
AMOJO_SECRET = os.environ["FAKE_AMOJO_SECRET"]
CHAT_URL = os.environ["FAKE_CHAT_URL"]
CHAT_SECRET = os.environ["FAKE_CHAT_SECRET"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def main() -> int:
    channel = "status" + secrets.token_hex(4)
    scope = f"{channel}_acc-1"
    env = {"PATH": os.environ.get("PATH", ""), "PORT": "0", "RUST_LOG": "warn", "KOMMO_CHANNEL_ID": channel,
           "KOMMO_CHANNEL_SECRET": AMOJO_SECRET, "KOMMO_AMOJO_URL": AMOJO_URL,
           "CHAT_SERVICE_URL": f"{CHAT_URL}/events", "CHAT_SERVICE_SECRET": CHAT_SECRET,
           "KOMMO_INTEGRATION_SECRET": "repro", "KOMMO_ACCOUNTS": "1:acc-1"}
    process = subprocess.Popen([os.path.join(ROOT, "target/debug/dev-server")], env=env,
                               stdout=subprocess.PIPE, text=True)
    base = None
    for line in process.stdout:
        if line.startswith("dev-server: listening on "):
            base = line.strip().removeprefix("dev-server: listening on ")
            break
    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
    webhook = Webhook(CHAT_SECRET)

    def manager_message(msgid: str) -> None:
        now = int(time.time())
        body = json.dumps({"account_id": "acc-1", "time": now,
                           "message": {"receiver": {"id": "r-1", "client_id": "client-1"}, "sender": {"id": "m-1"},
                                       "conversation": {"id": "k-1", "client_id": "conv-1"}, "timestamp": now,
                                       "message": {"id": msgid, "type": "text", "text": "hi"}}}).encode()
        signature = hmac.new(AMOJO_SECRET.encode(), body, hashlib.sha1).hexdigest()
        status, _ = http("POST", f"{base}/kommo/webhook/{scope}", body,
                         {"content-type": "application/json", "x-signature": signature})
        assert status == 200

    def status(msgid: str, value: str) -> None:
        body = json.dumps({"type": "message.status", "scope_id": scope, "reference": msgid, "status": value})
        webhook_id = "msg_" + secrets.token_hex(8)
        now = int(time.time())
        signature = webhook.sign(webhook_id, datetime.fromtimestamp(now, tz=timezone.utc), body)
        code, answer = http("POST", f"{base}/chat/events", body.encode(),
                            {"content-type": "application/json", "webhook-id": webhook_id,
                             "webhook-timestamp": str(now), "webhook-signature": signature})
        assert code == 200, (code, answer)

    def arrivals() -> dict[str, list[int]]:
        calls = json.loads(http("GET", f"{AMOJO_URL}/__admin/calls?scope={scope}")[1])["calls"]
        order: dict[str, list[int]] = {}
        for call in calls:
            if call["path"].endswith("/delivery_status") and call.get("reply_status", 200) == 200:
                order.setdefault(call["body"]["msgid"], []).append(call["body"]["delivery_status"])
        return order

    backwards = 0
    try:
        # 1. The delivered report fails once at amojo.
        manager_message("kommo-retry")
        time.sleep(0.3)
        http("POST", f"{AMOJO_URL}/__admin/script",
             json.dumps({"scope": scope, "responses": [{"status": 503, "match": "delivery_status"}]}).encode(),
             {"content-type": "application/json"})
        status("kommo-retry", "delivered")
        status("kommo-retry", "read")
        time.sleep(3)
        order = arrivals().get("kommo-retry", [])
        print(f"1. retried delivered: amojo accepted, in order: {order}")
        backwards += order != sorted(order)

        # 2. The race, without faults.
        msgids = [f"kommo-race-{i}" for i in range(40)]
        for msgid in msgids:
            manager_message(msgid)
        time.sleep(1)
        for msgid in msgids:
            status(msgid, "delivered")
            status(msgid, "read")
        time.sleep(2)
        order = arrivals()
        reversed_ = [m for m in msgids if order.get(m, []) != sorted(order.get(m, []))]
        print(f"2. race: {len(reversed_)} of {len(msgids)} messages reached amojo as read before delivered")
        backwards += len(reversed_)
    finally:
        process.kill()
        process.wait()
    return 1 if backwards else 0


if __name__ == "__main__":
    sys.exit(main())
