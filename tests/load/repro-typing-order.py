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
   (shared/src/flows/chat_delivery.rs checks the lease before sending a typing.started since 27 Nov 01:50.)
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

Fixed since 27 Nov (the typing lane, shared/src/rules/lanes.rs; a lapsed lease not yet ended is
extended): every case now shows 0. Prints what the chat service received, in arrival order, and
exits 1 when the reordering shows.
"""

from __future__ import annotations

import sys
import time

from repro import CHAT_URL, DevServer, calls, script


def accepted_events(scope: str) -> dict[str, list[str]]:
    """Per conversation, the events the chat service accepted (a 2xx), in arrival order."""
    events: dict[str, list[str]] = {}
    for call in calls(CHAT_URL, scope):
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


def report(case: str, conversations: list[str], scope: str) -> bool:
    """Prints the conversations whose typing events are not paired; true if there are any."""
    events = accepted_events(scope)
    broken = {c: events.get(c, []) for c in conversations if not paired(events.get(c, []))}
    print(f"{case}: {len(broken)} of {len(conversations)} conversations saw typing.started twice "
          "without the typing.stopped between, or no stop last")
    for conversation, kinds in sorted(broken.items())[:5]:
        print(f"   {conversation}: {kinds}")
    return bool(broken)


def main() -> int:
    with DevServer("repro", RETRY_BASE_DELAY_MS="2000") as server:
        # 1. A typing.started retried after the message's typing.stopped.
        script(CHAT_URL, server.scope, [{"status": 503}, {"status": 503}])
        assert server.manager_typing("conv-retry")[0] == 200
        time.sleep(0.5)
        assert server.manager_message("kommo-retry-1", "conv-retry")[0] == 200
        time.sleep(3.5)
        print(f"1. retried start: the chat service accepted, in order: {accepted_events(server.scope).get('conv-retry', [])}")
        failed = report("1. retried start", ["conv-retry"], server.scope)

        # 2. The manager sends, then at once types the next message.
        racing = [f"conv-race-{i}" for i in range(20)]
        for conversation in racing:
            assert server.manager_typing(conversation)[0] == 200
        time.sleep(0.5)
        for i, conversation in enumerate(racing):
            assert server.manager_message(f"kommo-race-{i}", conversation)[0] == 200
            assert server.manager_typing(conversation)[0] == 200
        time.sleep(8)  # the second leases lapse (5 s + 1 s grace) and stop
        failed |= report("2. send then type again", racing, server.scope)

        # 3. Kommo's refresh arrives just after the lease lapsed, as its timer runs.
        lapsing = [f"conv-lapse-{i}" for i in range(40)]
        now = int(time.time())
        expired_at = now + 2
        for conversation in lapsing:
            answer = server.kommo({"account_id": "acc-1", "time": now,
                                   "action": {"typing": {"user": {"id": "m-1"},
                                                         "conversation": {"id": f"k-{conversation}",
                                                                          "client_id": conversation},
                                                         "expired_at": expired_at}}})
            assert answer[0] == 200
        lease_end = expired_at + 1.0  # MANAGER_TYPING_GRACE_MS
        time.sleep(max(0.0, lease_end - time.time()))
        for conversation in lapsing:  # a few ms apart, around the timers' moment
            assert server.manager_typing(conversation)[0] == 200
        time.sleep(8)
        failed |= report("3. refresh just after the lapse", lapsing, server.scope)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
