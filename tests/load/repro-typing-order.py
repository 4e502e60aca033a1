"""Minimal reproduction: a manager's typing.started can reach the chat service after the
typing.stopped that ended its lease, leaving the indicator on (found by bridge-load).

    tests/load/with-servers .venv/bin/python tests/load/repro-typing-order.py

Starts target/debug/dev-server (in-memory store, in-process timers) between the fakes that
with-servers started, then, on fresh scopes:

1. "retried start": the chat service answers 503 twice, so typing.started (sent at once after
   Kommo's typing webhook) is queued for a retry ~1-2 s later (RETRY_BASE_DELAY_MS=2000); the
   manager sends a message 0.5 s after starting to type. The relay sends typing.stopped and
   message.created at once; the retried typing.started arrives after them: the chat service,
   applying events in order, shows the manager typing with no typing.stopped ever to come.
   (shared/src/due.rs now checks the lease before sending a typing.started, so this case
   passes on the working tree of 27 Nov 01:50; cases 2 and 3 do not.)
2. "send then type again": typing, then the manager's message and at once a new typing webhook
   (the manager writes the next message), 20 conversations. The relay's typing.stopped (of the
   first lease) and the new lease's typing.started are two independent queued deliveries; when
   the start wins, the chat service sees started, started, stopped, ..., and hides the
   indicator while the manager is typing.

3. "refresh just after the lapse": Kommo's refresh lands a moment after the lease lapsed
   (expired_at + the 1 s grace), before the expiry timer ended it (in AWS the SQS timer is up to
   ~1 s late by design: delays are rounded up to whole seconds). extend() replaces the lapsed
   lease and answers Started, so a second typing.started goes out, and the lapsed lease's
   typing.stopped never does (the timer then finds a live lease): started, started, stopped.

Prints what the chat service received, in arrival order, and exits 1 when the reordering shows.
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


def start_dev_server(channel: str) -> tuple[subprocess.Popen, str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PORT": "0",
        "RUST_LOG": "warn",
        "KOMMO_CHANNEL_ID": channel,
        "KOMMO_CHANNEL_SECRET": AMOJO_SECRET,
        "KOMMO_AMOJO_URL": AMOJO_URL,
        "CHAT_SERVICE_URL": f"{CHAT_URL}/events",
        "CHAT_SERVICE_SECRET": CHAT_SECRET,
        "KOMMO_INTEGRATION_SECRET": "repro",
        "KOMMO_ACCOUNTS": "1:acc-1",
        "RETRY_BASE_DELAY_MS": "2000",
    }
    process = subprocess.Popen(
        [os.path.join(ROOT, "target/debug/dev-server")], env=env, stdout=subprocess.PIPE, text=True
    )
    for line in process.stdout:
        if line.startswith("dev-server: listening on "):
            base = line.strip().removeprefix("dev-server: listening on ")
            threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
            return process, base
    raise SystemExit("the dev server did not start")


def kommo(base: str, scope: str, payload: dict) -> None:
    body = json.dumps(payload).encode()
    signature = hmac.new(AMOJO_SECRET.encode(), body, hashlib.sha1).hexdigest()
    status, answer = http("POST", f"{base}/kommo/webhook/{scope}", body,
                          {"content-type": "application/json", "x-signature": signature})
    assert status == 200, (status, answer)


def typing(base: str, scope: str, conversation: str) -> None:
    now = int(time.time())
    kommo(base, scope, {"account_id": "acc-1", "time": now,
                        "action": {"typing": {"user": {"id": "manager-1"},
                                              "conversation": {"id": f"k-{conversation}", "client_id": conversation},
                                              "expired_at": now + 5}}})


def message(base: str, scope: str, conversation: str, msgid: str) -> None:
    now = int(time.time())
    kommo(base, scope, {"account_id": "acc-1", "time": now,
                        "message": {"receiver": {"id": "r-1", "client_id": "client-1"},
                                    "sender": {"id": "manager-1"},
                                    "conversation": {"id": f"k-{conversation}", "client_id": conversation},
                                    "timestamp": now, "message": {"id": msgid, "type": "text", "text": "hi"}}})


def accepted_events(scope: str) -> dict[str, list[str]]:
    """Per conversation, the events the chat service accepted (a 2xx), in arrival order."""
    _, body = http("GET", f"{CHAT_URL}/__admin/calls?scope={scope}")
    events: dict[str, list[str]] = {}
    for call in json.loads(body)["calls"]:
        status = call.get("reply_status", 200)  # recorded by the fakes since the fault windows
        if status is None or not 200 <= status < 300:
            continue
        events.setdefault(call["body"]["conversation_id"], []).append(call["body"]["type"])
    return events


def paired(kinds: list[str]) -> bool:
    """Every typing.started is followed by a typing.stopped before the next start, and the last
    word is a stop. (A stop with no start open is redundant and harmless.)"""
    typing_on = False
    for kind in kinds:
        if kind == "typing.started":
            if typing_on:
                return False
            typing_on = True
        elif kind == "typing.stopped":
            typing_on = False
    return not typing_on


def main() -> int:
    channel = "repro" + secrets.token_hex(4)
    scope = f"{channel}_acc-1"
    process, base = start_dev_server(channel)
    failed = False
    try:
        # 1. A typing.started retried after the message's typing.stopped.
        status, _ = http("POST", f"{CHAT_URL}/__admin/script",
                         json.dumps({"scope": scope, "responses": [{"status": 503}, {"status": 503}]}).encode(),
                         {"content-type": "application/json"})
        assert status == 200
        typing(base, scope, "conv-retry")
        time.sleep(0.5)
        message(base, scope, "conv-retry", "kommo-retry-1")
        time.sleep(3.5)
        kinds = accepted_events(scope).get("conv-retry", [])
        print(f"1. retried start: the chat service accepted, in order: {kinds}")
        if not paired(kinds):
            print("   -> typing.started after the typing.stopped that ended it: the indicator stays on")
        else:
            print("   -> ok: no typing.started left after the stop")
            failed = True

        # 2. The manager sends, then at once types the next message.
        for i in range(20):
            conversation = f"conv-race-{i}"
            typing(base, scope, conversation)
        time.sleep(0.5)
        for i in range(20):
            conversation = f"conv-race-{i}"
            message(base, scope, conversation, f"kommo-race-{i}")
            typing(base, scope, conversation)
        time.sleep(8)  # the second leases lapse (5 s + 1 s grace) and stop
        events = accepted_events(scope)
        broken = {c: k for c, k in events.items() if c.startswith("conv-race-") and not paired(k)}
        print(f"2. send then type again: {len(broken)} of 20 conversations saw the typing events out of order")
        for conversation, kinds in sorted(broken.items())[:5]:
            print(f"   {conversation}: {kinds}")
        failed = failed or bool(broken)

        # 3. Kommo's refresh arrives just after the lease lapsed, as its timer runs.
        conversations = [f"conv-lapse-{i}" for i in range(40)]
        now = int(time.time())
        expired_at = now + 2
        for conversation in conversations:
            kommo(base, scope, {"account_id": "acc-1", "time": now,
                                "action": {"typing": {"user": {"id": "manager-1"},
                                                      "conversation": {"id": f"k-{conversation}", "client_id": conversation},
                                                      "expired_at": expired_at}}})
        lease_end = expired_at + 1.0  # MANAGER_TYPING_GRACE_MS
        time.sleep(max(0.0, lease_end - time.time()))
        for conversation in conversations:  # a few ms apart, around the timers' moment
            typing(base, scope, conversation)
        time.sleep(8)
        events = accepted_events(scope)
        broken = {c: k for c, k in events.items() if c.startswith("conv-lapse-") and not paired(k)}
        print(f"3. refresh just after the lapse: {len(broken)} of {len(conversations)} conversations got "
              "typing.started twice without the typing.stopped between")
        for conversation, kinds in sorted(broken.items())[:5]:
            print(f"   {conversation}: {kinds}")
        failed = failed or bool(broken)
    finally:
        process.kill()
        process.wait()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
