"""What the reproductions in tests/load share: the fakes `tests/load/with-servers` started (named
by the variables it exports), a dev server of each reproduction's own, and calls signed as Kommo
and the chat service sign them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import subprocess
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

from standardwebhooks import Webhook

AMOJO_URL = os.environ["FAKE_AMOJO_URL"]
AMOJO_SECRET = os.environ["FAKE_AMOJO_SECRET"]
CHAT_URL = os.environ["FAKE_CHAT_URL"]
CHAT_SECRET = os.environ["FAKE_CHAT_SECRET"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    """One request; the status and body, whatever the status."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def calls(fake_url: str, scope: str) -> list[dict]:
    """What a fake recorded for `scope`, in arrival order."""
    return json.loads(http("GET", f"{fake_url}/__admin/calls?scope={scope}")[1])["calls"]


def script(fake_url: str, scope: str, responses: list[dict]) -> None:
    """The fake answers the next calls for `scope` with `responses`, in order."""
    status, answer = http("POST", f"{fake_url}/__admin/script",
                          json.dumps({"scope": scope, "responses": responses}).encode(),
                          {"content-type": "application/json"})
    assert status == 200, (status, answer)


class DevServer:
    """target/debug/dev-server on a channel of its own (scope `{channel}_acc-1`), between the
    fakes; `env` adds configuration (e.g. DYNAMODB_ENDPOINT, RETRY_BASE_DELAY_MS)."""

    def __init__(self, prefix: str, **env: str) -> None:
        self.channel = prefix + secrets.token_hex(4)
        self.scope = f"{self.channel}_acc-1"
        environment = {
            "PATH": os.environ.get("PATH", ""), "PORT": "0", "RUST_LOG": "warn",
            "KOMMO_CHANNEL_ID": self.channel, "KOMMO_CHANNEL_SECRET": AMOJO_SECRET, "KOMMO_AMOJO_URL": AMOJO_URL,
            "CHAT_SERVICE_URL": f"{CHAT_URL}/events", "CHAT_SERVICE_SECRET": CHAT_SECRET,
            "KOMMO_INTEGRATION_SECRET": "repro", "KOMMO_ACCOUNTS": "1:acc-1",
        }
        environment.update({name: value.replace("{channel}", self.channel) for name, value in env.items()})
        self.process = subprocess.Popen([os.path.join(ROOT, "target/debug/dev-server")], env=environment,
                                        stdout=subprocess.PIPE, text=True)
        for line in self.process.stdout:
            if line.startswith("dev-server: listening on "):
                self.base = line.strip().removeprefix("dev-server: listening on ")
                threading.Thread(target=lambda: [None for _ in self.process.stdout], daemon=True).start()
                return
        raise SystemExit("the dev server did not start")

    def __enter__(self) -> DevServer:
        return self

    def __exit__(self, *_) -> None:
        self.process.kill()
        self.process.wait()

    def kommo(self, payload: dict) -> tuple[int, bytes]:
        """A Kommo webhook, signed with the channel secret."""
        body = json.dumps(payload).encode()
        signature = hmac.new(AMOJO_SECRET.encode(), body, hashlib.sha1).hexdigest()
        return http("POST", f"{self.base}/kommo/webhook/{self.scope}", body,
                    {"content-type": "application/json", "x-signature": signature})

    def chat_event(self, event: dict) -> tuple[int, bytes]:
        """A chat-service event under a fresh webhook-id, signed as Standard Webhooks sign."""
        body = json.dumps(event)
        webhook_id = "msg_" + secrets.token_hex(8)
        now = int(time.time())
        signature = Webhook(CHAT_SECRET).sign(webhook_id, datetime.fromtimestamp(now, tz=timezone.utc), body)
        return http("POST", f"{self.base}/chat/events", body.encode(), {
            "content-type": "application/json", "webhook-id": webhook_id,
            "webhook-timestamp": str(now), "webhook-signature": signature})

    def manager_message(self, msgid: str, conversation: str = "conv-1", manager: str = "m-1") -> tuple[int, bytes]:
        now = int(time.time())
        return self.kommo({"account_id": "acc-1", "time": now,
                           "message": {"receiver": {"id": "r-1", "client_id": "client-1"},
                                       "sender": {"id": manager},
                                       "conversation": {"id": f"k-{conversation}", "client_id": conversation},
                                       "timestamp": now, "message": {"id": msgid, "type": "text", "text": "hi"}}})

    def manager_typing(self, conversation: str, manager: str = "m-1") -> tuple[int, bytes]:
        now = int(time.time())
        return self.kommo({"account_id": "acc-1", "time": now,
                           "action": {"typing": {"user": {"id": manager},
                                                 "conversation": {"id": f"k-{conversation}",
                                                                  "client_id": conversation},
                                                 "expired_at": now + 5}}})
