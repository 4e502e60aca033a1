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

import os
import sys
import time
from collections import Counter

from repro import AMOJO_URL, DevServer, calls


def main() -> int:
    with DevServer("dup", DYNAMODB_ENDPOINT=os.environ["TEST_DYNAMODB_ENDPOINT"], TABLE_NAME="{channel}") as server:
        answers = set()
        for n in range(20):
            message = {"type": "message.created", "scope_id": server.scope, "conversation_id": f"conv-{n % 3}",
                       "msgid": f"chat-{n}", "user": {"id": "client-1", "name": "Ann"},
                       "message": {"type": "text", "text": "hello"}, "timestamp_ms": int(time.time() * 1000)}
            answers.add((server.chat_event(message)[0], server.chat_event(message)[0]))
        time.sleep(2)
        imports = Counter(call["body"]["payload"]["msgid"] for call in calls(AMOJO_URL, server.scope)
                          if call["path"] == f"/v2/origin/custom/{server.scope}")
        twice = sorted(msgid for msgid, count in imports.items() if count > 1)
        print(f"answers {sorted(answers)}; {len(imports)} messages imported, {len(twice)} of them more than once")
    return 1 if twice else 0


if __name__ == "__main__":
    sys.exit(main())
