"""Minimal reproduction: a client message posted twice in quick succession (two webhooks, the
same msgid) is imported into amojo twice (found by bridge-load at commit 37f6b2f: "client
message cm-4-12 imported 2 times", 4 of 89 in a 20 x 5 run, the 5 % it re-sends).

    tests/load/with-servers .venv/bin/python tests/load/repro-duplicate-import.py

At 37f6b2f, `on_client_message` queues the import again when the msgid is recorded but not yet
linked to a Kommo msgid, which is exactly the state while the first import is on its way: two
imports race. Posts 20 messages twice each (on Dynoxide) and counts the imports per msgid.
Exits 1 when a message is imported more than once.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from datetime import datetime, timezone

from standardwebhooks import Webhook

AMOJO_URL = os.environ["FAKE_AMOJO_URL"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    channel = "dup" + secrets.token_hex(4)
    scope = f"{channel}_acc-1"
    env = {"PATH": os.environ.get("PATH", ""), "PORT": "0", "RUST_LOG": "warn", "KOMMO_CHANNEL_ID": channel,
           "KOMMO_CHANNEL_SECRET": os.environ["FAKE_AMOJO_SECRET"], "KOMMO_AMOJO_URL": AMOJO_URL,
           "CHAT_SERVICE_URL": os.environ["FAKE_CHAT_URL"] + "/events",
           "CHAT_SERVICE_SECRET": os.environ["FAKE_CHAT_SECRET"], "KOMMO_INTEGRATION_SECRET": "repro",
           "KOMMO_ACCOUNTS": "1:acc-1", "DYNAMODB_ENDPOINT": os.environ["TEST_DYNAMODB_ENDPOINT"],
           "TABLE_NAME": channel}
    process = subprocess.Popen([os.path.join(ROOT, "target/debug/dev-server")], env=env,
                               stdout=subprocess.PIPE, text=True)
    base = None
    for line in process.stdout:
        if line.startswith("dev-server: listening on "):
            base = line.strip().removeprefix("dev-server: listening on ")
            break
    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
    webhook = Webhook(os.environ["FAKE_CHAT_SECRET"])

    def post(body: str) -> int:
        webhook_id = "msg_" + secrets.token_hex(8)
        now = int(time.time())
        signature = webhook.sign(webhook_id, datetime.fromtimestamp(now, tz=timezone.utc), body)
        request = urllib.request.Request(f"{base}/chat/events", data=body.encode(), method="POST", headers={
            "content-type": "application/json", "webhook-id": webhook_id,
            "webhook-timestamp": str(now), "webhook-signature": signature})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    try:
        answers = set()
        for n in range(20):
            body = json.dumps({"type": "message.created", "scope_id": scope, "conversation_id": f"conv-{n % 3}",
                               "msgid": f"chat-{n}", "user": {"id": "client-1", "name": "Ann"},
                               "message": {"type": "text", "text": "hello"},
                               "timestamp_ms": int(time.time() * 1000)})
            answers.add((post(body), post(body)))
        time.sleep(2)
        calls = json.loads(urllib.request.urlopen(f"{AMOJO_URL}/__admin/calls?scope={scope}").read())["calls"]
        imports = Counter(c["body"]["payload"]["msgid"] for c in calls if c["path"] == f"/v2/origin/custom/{scope}")
        twice = sorted(msgid for msgid, count in imports.items() if count > 1)
        print(f"answers {sorted(answers)}; {len(imports)} messages imported, {len(twice)} of them more than once")
    finally:
        process.kill()
        process.wait()
    return 1 if twice else 0


if __name__ == "__main__":
    sys.exit(main())
