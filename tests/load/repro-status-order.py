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

Fixed since 27 Nov by the status lane (shared/src/rules/lanes.rs): both cases now show the order kept.
Exits 1 when the order goes backwards.
"""

from __future__ import annotations

import sys
import time

from repro import AMOJO_URL, DevServer, calls, script


def main() -> int:
    with DevServer("status") as server:
        def status(msgid: str, value: str) -> None:
            code, answer = server.chat_event({"type": "message.status", "scope_id": server.scope,
                                              "reference": msgid, "status": value})
            assert code == 200, (code, answer)

        def arrivals() -> dict[str, list[int]]:
            order: dict[str, list[int]] = {}
            for call in calls(AMOJO_URL, server.scope):
                if call["path"].endswith("/delivery_status") and call.get("reply_status", 200) == 200:
                    order.setdefault(call["body"]["msgid"], []).append(call["body"]["delivery_status"])
            return order

        # 1. The delivered report fails once at amojo.
        assert server.manager_message("kommo-retry")[0] == 200
        time.sleep(0.3)
        script(AMOJO_URL, server.scope, [{"status": 503, "match": "delivery_status"}])
        status("kommo-retry", "delivered")
        status("kommo-retry", "read")
        time.sleep(3)
        order = arrivals().get("kommo-retry", [])
        print(f"1. retried delivered: amojo accepted, in order: {order}")
        backwards = order != sorted(order)

        # 2. The race, without faults.
        msgids = [f"kommo-race-{i}" for i in range(40)]
        for msgid in msgids:
            assert server.manager_message(msgid)[0] == 200
        time.sleep(1)
        for msgid in msgids:
            status(msgid, "delivered")
            status(msgid, "read")
        time.sleep(2)
        order = arrivals()
        reversed_ = [m for m in msgids if order.get(m, []) != sorted(order.get(m, []))]
        print(f"2. race: {len(reversed_)} of {len(msgids)} messages reached amojo as read before delivered")
        backwards += len(reversed_)
    return 1 if backwards else 0


if __name__ == "__main__":
    sys.exit(main())
