"""Self-test of the fakes: starts each one as a subprocess and exercises it.

    .venv/bin/python tests/fakes/selftest.py
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import http.server
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import unittest
import uuid
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from fake_amojo import INVALID_SIGNATURE_BODY, content_md5, kommo_signature  # noqa: E402
from standardwebhooks import Webhook  # noqa: E402

AMOJO_SECRET = "5a44c5dff55f3c15a4cce8d7c4cc27e207c7e189"
# A request any scope accepts, for the tests of scripts and faults.
STATUS_BODY = {"msgid": "m-1", "delivery_status": 1}
STATUS_RAW = json.dumps(STATUS_BODY).encode()
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"selftest-webhook-key-0123456789ab").decode()


class Fake:
    """A fake running as a subprocess, plus a small HTTP client for it."""

    def __init__(self, script: str, secret: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, script), "--port", "0", "--secret", secret],
            stdout=subprocess.PIPE,
            text=True,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("READY "):
            self.proc.kill()
            raise RuntimeError(f"{script} did not start: {line!r}")
        self.port = int(line.split()[1])

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        conn: http.client.HTTPConnection | None = None,
    ) -> tuple[int, http.client.HTTPResponse, bytes]:
        own = conn is None
        conn = conn or self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp, resp.read()
        finally:
            if own:
                conn.close()

    def admin(self, method: str, path: str, obj: Any = None) -> tuple[int, Any]:
        body = b"" if obj is None else json.dumps(obj).encode()
        status, _, data = self.request(method, "/__admin/" + path, body, {"Content-Type": "application/json"})
        return status, json.loads(data)

    def calls(self, scope: str) -> list[dict]:
        return self.admin("GET", f"calls?scope={scope}")[1]["calls"]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.stdout.close()
        return self.proc.wait(10)


def amojo_headers(method: str, path: str, body: bytes, date: str | None = None) -> dict[str, str]:
    date = date or format_datetime(datetime.now(timezone.utc))
    md5 = content_md5(body)
    return {
        "Content-Type": "application/json",
        "Content-MD5": md5,
        "Date": date,
        "X-Signature": kommo_signature(AMOJO_SECRET, method, md5, "application/json", date, path),
    }


class AmojoTest(unittest.TestCase):
    fake: Fake

    @classmethod
    def setUpClass(cls) -> None:
        cls.fake = Fake("fake_amojo.py", AMOJO_SECRET)

    @classmethod
    def tearDownClass(cls) -> None:
        assert cls.fake.stop() == 0, "SIGTERM should exit cleanly"

    def send(self, method: str, path: str, obj: Any, conn=None, **overrides: str):
        body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        headers = amojo_headers(method, path, body)
        headers.update(overrides)
        status, _, data = self.fake.request(method, path, body, headers, conn)
        return status, (json.loads(data) if data else None)

    def test_published_vector(self) -> None:
        body = (
            b'{"account_id":"af9945ff-1490-4cad-807d-945c15d88bec","title":"ChatIntegration",'
            b'"hook_api_version":"v2"}'
        )
        md5 = content_md5(body)
        self.assertEqual(md5, "7e961b6b58c7f8d85f273526d3757f92")
        self.assertEqual(content_md5(b""), "d41d8cd98f00b204e9800998ecf8427e")
        signature = kommo_signature(
            AMOJO_SECRET,
            "POST",
            md5,
            "application/json",
            "Mon, 03 Oct 2020 15:11:21 +0000",
            "/v2/origin/custom/f90ba33d-c9d9-44da-b76c-c349b0ecbe41/connect",
        )
        self.assertEqual(signature, "86c25b87f43a5939e130e9adb9c8d1705f3c7ef2")

    def test_health(self) -> None:
        self.assertEqual(self.fake.admin("GET", "health"), (200, {"ok": True}))

    def test_signed_connect_passes(self) -> None:
        path = "/v2/origin/custom/chan-1/connect"
        status, body = self.send("POST", path, {"account_id": "acc", "title": "T", "hook_api_version": "v2"})
        self.assertEqual(status, 200)
        self.assertEqual(
            body, {"account_id": "acc", "scope_id": "chan-1_acc", "title": "T", "hook_api_version": "v2"}
        )
        [call] = self.fake.calls("chan-1")
        self.assertTrue(call["signature_ok"])
        self.assertIsNone(call["error"])
        self.assertEqual(call["path"], path)
        self.assertEqual(call["body"]["account_id"], "acc")
        self.assertEqual(call["headers"]["content-type"], "application/json")

    def test_tampered_request_is_rejected(self) -> None:
        path = "/v2/origin/custom/tamper_acc/chats"
        signed = json.dumps({"conversation_id": "c1", "user": {"id": "u", "name": "n"}}).encode()
        headers = amojo_headers("POST", path, signed)
        tampered = signed.replace(b'"n"', b'"x"')
        # Recompute the MD5 so only the signature check can catch the change.
        headers["Content-MD5"] = content_md5(tampered)
        status, resp, data = self.fake.request("POST", path, tampered, headers)
        self.assertEqual(status, 403)
        self.assertEqual(data, INVALID_SIGNATURE_BODY)
        self.assertEqual(
            json.loads(data),
            {"status": 0, "error_code": 403, "error_type": "ORIGIN_INVALID_SIGNATURE",
             "error_description": "invalid signature"},
        )
        self.assertEqual(resp.getheader("Content-Type"), "application/json")
        [call] = self.fake.calls("tamper_acc")
        self.assertFalse(call["signature_ok"])
        self.assertIn("X-Signature", call["error"])

    def test_other_verification_failures(self) -> None:
        path = "/v2/origin/custom/fail_acc/typing"
        body = {"conversation_id": "c", "sender": {"id": "s"}}
        stale = format_datetime(datetime.fromtimestamp(time.time() - 16 * 60, timezone.utc))
        raw = json.dumps(body).encode()
        cases = {
            "Content-Type": {"Content-Type": "application/json; charset=utf-8"},
            "Content-MD5": {"Content-MD5": content_md5(raw).upper()},
            "away from now": amojo_headers("POST", path, raw, date=stale),
            "+0000": amojo_headers("POST", path, raw, date=format_datetime(datetime.now(timezone.utc), usegmt=True)),
        }
        for reason, overrides in cases.items():
            with self.subTest(reason):
                self.assertEqual(self.send("POST", path, raw, **overrides)[0], 403)
                self.assertIn(reason, self.fake.calls("fail_acc")[-1]["error"])

    def test_scripted_responses_in_order(self) -> None:
        scope = "script_acc"
        chats = f"/v2/origin/custom/{scope}/chats"
        typing = f"/v2/origin/custom/{scope}/typing"
        chat_body = {"conversation_id": "c", "user": {"id": "u", "name": "n"}}
        typing_body = {"conversation_id": "c", "sender": {"id": "u"}}
        responses = [
            {"status": 500, "body": {"n": 1}},
            {"status": 429, "match": "/typing", "headers": {"Retry-After": "1"}},
            {"status": 200, "body": {"n": 2}, "delay_ms": 50},
        ]
        self.assertEqual(self.fake.admin("POST", "script", {"scope": scope, "responses": responses})[0], 200)

        # A badly signed request does not consume a scripted response.
        self.assertEqual(self.send("POST", chats, chat_body, **{"X-Signature": "0" * 40})[0], 403)
        self.assertEqual(self.send("POST", chats, chat_body), (500, {"n": 1}))
        self.assertEqual(self.send("POST", typing, typing_body), (429, None))
        started = time.monotonic()
        self.assertEqual(self.send("POST", chats, chat_body), (200, {"n": 2}))
        self.assertGreaterEqual(time.monotonic() - started, 0.05)
        status, body = self.send("POST", chats, chat_body)
        self.assertEqual(status, 200)
        self.assertEqual(body["user"]["client_id"], "u")

        self.fake.admin("POST", "script", {"scope": scope, "responses": [{"status": 503}]})
        self.assertEqual(self.fake.admin("DELETE", f"script?scope={scope}")[0], 200)
        self.assertEqual(self.send("POST", typing, typing_body), (204, None))

    def test_close_drops_connection(self) -> None:
        scope = "close_acc"
        self.fake.admin("POST", "script", {"scope": scope, "responses": [{"close": True}]})
        with self.assertRaises(http.client.RemoteDisconnected):
            self.send("POST", f"/v2/origin/custom/{scope}/m-1/delivery_status", STATUS_BODY)
        self.assertEqual(self.send("POST", f"/v2/origin/custom/{scope}/m-1/delivery_status", STATUS_BODY), (200, {}))

    def test_fault_window_answers_every_matching_request_until_it_ends(self) -> None:
        scope = "fault_acc"
        status_path = f"/v2/origin/custom/{scope}/m-1/delivery_status"
        typing = f"/v2/origin/custom/{scope}/typing"
        typing_body = {"conversation_id": "c", "sender": {"id": "u"}}
        fault = {"scope": scope, "seconds": 0.6, "match": "/delivery_status",
                 "reply": {"status": 429, "headers": {"Retry-After": "7"}}}
        self.assertEqual(self.fake.admin("POST", "fault", fault), (200, {}))
        self.fake.admin("POST", "script", {"scope": scope, "responses": [{"status": 500}]})
        for _ in range(3):
            status, resp, _ = self.fake.request("POST", status_path, STATUS_RAW, amojo_headers("POST", status_path, STATUS_RAW))
            self.assertEqual((status, resp.getheader("Retry-After")), (429, "7"))
        # A badly signed request is rejected, not faulted; an unmatched path is not faulted.
        self.assertEqual(self.send("POST", status_path, STATUS_BODY, **{"X-Signature": "0" * 40})[0], 403)
        self.assertEqual(self.send("POST", typing, typing_body), (500, None), "the script, untouched by the fault")
        time.sleep(0.7)
        self.assertEqual(self.send("POST", status_path, STATUS_BODY), (200, {}), "the window has ended")
        calls = self.fake.calls(scope)
        self.assertEqual([c["reply_status"] for c in calls], [429, 429, 429, 403, 500, 200])
        self.assertEqual([c["fault"] for c in calls], [True, True, True, False, False, False])
        self.assertEqual(calls[0]["reply_headers"]["Retry-After"], "7")

    def test_fault_window_can_close_one_request_in_n_and_be_cleared(self) -> None:
        scope = "fault_close_acc"
        status_path = f"/v2/origin/custom/{scope}/m-1/delivery_status"
        fault = {"scope": scope, "seconds": 30, "every": 2, "reply": {"close": True}}
        self.assertEqual(self.fake.admin("POST", "fault", fault), (200, {}))
        outcomes = []
        for _ in range(4):
            try:
                outcomes.append(self.send("POST", status_path, STATUS_BODY)[0])
            except http.client.RemoteDisconnected:
                outcomes.append("closed")
        self.assertEqual(outcomes, ["closed", 200, "closed", 200])
        self.assertEqual(self.fake.admin("DELETE", f"fault?scope={scope}"), (200, {}))
        self.assertEqual(self.send("POST", status_path, STATUS_BODY), (200, {}))
        self.assertEqual([c["reply_status"] for c in self.fake.calls(scope)], [None, 200, None, 200, 200])

    def test_bad_fault_requests_are_refused(self) -> None:
        for bad in (
            {"seconds": 1, "reply": {}},
            {"scope": "s", "seconds": 0, "reply": {}},
            {"scope": "s", "seconds": 1},
            {"scope": "s", "seconds": 1, "reply": {"status": 99}},
            {"scope": "s", "seconds": 1, "reply": {"match": "/x"}},
            {"scope": "s", "seconds": 1, "every": 0, "reply": {}},
            {"scope": "s", "seconds": 1, "reply": {}, "extra": True},
        ):
            self.assertEqual(self.fake.admin("POST", "fault", bad)[0], 400, bad)

    def test_calls_are_scoped_and_clearable(self) -> None:
        self.send("POST", "/v2/origin/custom/scope_a/react", {})
        self.send("POST", "/v2/origin/custom/scope_b/react", {})
        self.assertEqual([c["scope"] for c in self.fake.calls("scope_a")], ["scope_a"])
        self.assertEqual(self.fake.admin("DELETE", "calls?scope=scope_a")[0], 200)
        self.assertEqual(self.fake.calls("scope_a"), [])
        self.assertEqual(len(self.fake.calls("scope_b")), 1)

    def test_routes_over_one_keep_alive_connection(self) -> None:
        conn = self.fake.connection()
        self.addCleanup(conn.close)
        base = "/v2/origin/custom/route_acc"

        chat = {"conversation_id": "conv", "user": {"id": "u1", "name": "Ann", "profile": {"phone": "+1"}}}
        status, first = self.send("POST", f"{base}/chats", chat, conn)
        self.assertEqual(status, 200)
        self.assertEqual(first["user"]["phone"], "+1")
        sock = conn.sock  # http.client reconnects silently; the socket must stay the same
        self.assertEqual(self.send("POST", f"{base}/chats", chat, conn)[1], first)

        message = {
            "event_type": "new_message",
            "payload": {
                "timestamp": 1700000000, "msec_timestamp": 1700000000000, "msgid": "m1",
                "conversation_id": "conv", "sender": {"id": "u1", "name": "Ann"},
                "message": {"type": "text", "text": "hi"},
            },
        }
        nameless = {**message, "payload": {**message["payload"], "sender": {"id": "u1"}}}
        status, body = self.send("POST", base, nameless, conn)
        self.assertEqual(status, 400, "Kommo requires the sender's name on import")
        self.assertIn("payload.sender.name", body["error_description"])
        status, imported = self.send("POST", base, message, conn)
        self.assertEqual(status, 200)
        new = imported["new_message"]
        self.assertEqual(new["conversation_id"], first["id"])
        self.assertEqual(new["sender_id"], first["user"]["id"])
        self.assertEqual((new["receiver_id"], new["ref_id"]), ("", "m1"))
        self.assertEqual(self.send("POST", base, message, conn)[1], imported)

        msgid = new["msgid"]
        status_path = f"{base}/{msgid}/delivery_status"
        for ok in (
            {"msgid": msgid, "delivery_status": 1},
            {"msgid": msgid, "delivery_status": -1, "error_code": 901, "error": "Deleted"},
            {"msgid": msgid, "delivery_status": -1, "error_code": 905, "error": "boom"},
        ):
            self.assertEqual(self.send("POST", status_path, ok, conn), (200, {}))
        for bad in (
            {"msgid": "other", "delivery_status": 1},
            {"msgid": msgid, "delivery_status": 3},
            {"msgid": msgid, "delivery_status": True},
            {"msgid": msgid, "delivery_status": 2, "error_code": 901},
            {"msgid": msgid, "delivery_status": -1, "error_code": 906},
            {"msgid": msgid, "delivery_status": -1, "error_code": 905},
            {"msgid": msgid, "delivery_status": -1, "error_code": 901},
            {"msgid": msgid, "delivery_status": -1, "error_code": 903, "error": " "},
        ):
            status, body = self.send("POST", status_path, bad, conn)
            self.assertEqual((status, body["error_type"]), (400, "BAD_REQUEST"), bad)

        self.assertEqual(self.send("POST", f"{base}/chats", b"{not json", conn)[0], 400)
        self.assertEqual(self.send("POST", f"{base}/chats", {"conversation_id": "c"}, conn)[0], 400)
        self.assertEqual(self.send("DELETE", "/v2/origin/custom/chan/disconnect", {"account_id": "a"}, conn), (200, {}))
        self.assertEqual(self.send("POST", f"{base}/nope", {}, conn)[0], 404)
        self.assertIs(conn.sock, sock)

    def import_(self, scope: str, msgid: str, conversation: str, /, **more: Any) -> tuple[int, Any]:
        payload = {"timestamp": 1700000000, "msec_timestamp": 1700000000000, "msgid": msgid,
                   "conversation_id": conversation, "sender": {"id": "u1", "name": "Ann"},
                   "message": {"type": "text", "text": "hi"}, **more}
        return self.send("POST", f"/v2/origin/custom/{scope}", {"event_type": "new_message", "payload": payload})

    def edit(self, scope: str, msgid: str, conversation: str, /, **more: Any) -> tuple[int, Any]:
        payload = {"timestamp": 1700000001, "msec_timestamp": 1700000001000, "msgid": msgid,
                   "conversation_id": conversation, "message": {"type": "text", "text": "edited text"}, **more}
        return self.send("POST", f"/v2/origin/custom/{scope}", {"event_type": "edit_message", "payload": payload})

    def react(self, scope: str, **fields: Any) -> tuple[int, Any]:
        body = {"user": {"id": "u1"}, "type": "react", "emoji": "\U0001f44d", **fields}
        return self.send("POST", f"/v2/origin/custom/{scope}/react", {k: v for k, v in body.items() if v is not None})

    def state(self, scope: str) -> dict:
        status, state = self.fake.admin("GET", f"state?scope={scope}")
        self.assertEqual(status, 200)
        self.assertNotIn("edited text", json.dumps(state), "the state never holds message text")
        self.assertNotIn('"hi"', json.dumps(state), "the state never holds message text")
        return state

    def test_admin_kommo_chat_and_state(self) -> None:
        scope = "admin_state_acc"
        self.assertEqual(self.state(scope), {"chats": {}, "messages": {}, "reactions": []})
        status, started = self.fake.admin("POST", "kommo_chat", {"scope": scope})
        self.assertEqual(status, 200)
        self.assertEqual(set(started), {"chat_id", "client_id"})
        self.assertNotEqual(started["chat_id"], started["client_id"])
        self.assertEqual(self.state(scope)["chats"],
                         {started["chat_id"]: {"conversation_ids": [], "started_in_kommo": True, "messages": []}})
        self.assertEqual(self.state("other_" + scope)["chats"], {}, "state is per scope")
        for bad in ({}, {"scope": ""}, {"scope": 7}):
            self.assertEqual(self.fake.admin("POST", "kommo_chat", bad)[0], 400, bad)
        self.assertEqual(self.fake.admin("GET", "state")[0], 400)
        self.assertEqual(self.fake.admin("GET", "state?scope=")[0], 400)

    def test_a_reply_in_a_chat_a_manager_started_lands_in_that_chat(self) -> None:
        scope = "write_first_acc"
        status, started = self.fake.admin("POST", "kommo_chat", {"scope": scope})
        self.assertEqual(status, 200)
        chat = started["chat_id"]
        status, body = self.import_(scope, "m0", "conv-x", conversation_ref_id="no-such-chat")
        self.assertEqual((status, body["error_description"]), (400, "unknown conversation_ref_id"))
        self.assertEqual(self.import_(scope, "m0", "conv-x", conversation_ref_id="")[0], 400)
        self.assertEqual(self.import_(scope, "m0", "conv-x", conversation_ref_id=None)[0], 400)
        other_scope = self.fake.admin("POST", "kommo_chat", {"scope": "elsewhere_acc"})[1]["chat_id"]
        self.assertEqual(self.import_(scope, "m0", "conv-x", conversation_ref_id=other_scope)[0], 400,
                         "a chat of another scope is unknown here")
        bad_sender = {"id": "u1", "name": "Ann", "ref_id": ""}
        self.assertEqual(self.import_(scope, "m0", chat, conversation_ref_id=chat, sender=bad_sender)[0], 400)
        # Under the chat's own id, and under an id of the integration's: one chat.
        status, first = self.import_(scope, "m1", chat, conversation_ref_id=chat)
        self.assertEqual((status, first["new_message"]["conversation_id"]), (200, chat))
        sender = {"id": "u1", "name": "Ann", "ref_id": started["client_id"]}
        status, second = self.import_(scope, "m2", "conv-own", conversation_ref_id=chat, sender=sender)
        self.assertEqual((status, second["new_message"]["conversation_id"]), (200, chat))
        self.assertEqual(second["new_message"]["sender_id"], started["client_id"], "Kommo's id of the client")
        self.assertEqual(self.import_(scope, "m3", "conv-own")[1]["new_message"]["conversation_id"], chat)
        # Another chat cannot take a conversation bound to this one.
        other = self.fake.admin("POST", "kommo_chat", {"scope": scope})[1]["chat_id"]
        self.assertEqual(self.import_(scope, "m4", "conv-own", conversation_ref_id=other)[0], 400)
        # A chat made by an import can be named by its ref too.
        status, plain = self.import_(scope, "m5", "conv-plain")
        plain_chat = plain["new_message"]["conversation_id"]
        self.assertNotIn(plain_chat, (chat, other))
        status, again = self.import_(scope, "m6", "conv-plain-2", conversation_ref_id=plain_chat)
        self.assertEqual((status, again["new_message"]["conversation_id"]), (200, plain_chat))
        # A chat made by /chats as well.
        made = self.send("POST", f"/v2/origin/custom/{scope}/chats",
                         {"conversation_id": "conv-made", "user": {"id": "u2", "name": "Bob"}})[1]["id"]
        self.assertEqual(self.import_(scope, "m7", "conv-made-2", conversation_ref_id=made)[1]["new_message"]
                         ["conversation_id"], made)

        state = self.state(scope)
        self.assertEqual(state["chats"][chat], {"conversation_ids": sorted([chat, "conv-own"]),
                                                "started_in_kommo": True, "messages": ["m1", "m2", "m3"]})
        self.assertEqual(state["chats"][other], {"conversation_ids": [], "started_in_kommo": True, "messages": []})
        self.assertEqual(state["chats"][plain_chat], {"conversation_ids": ["conv-plain", "conv-plain-2"],
                                                      "started_in_kommo": False, "messages": ["m5", "m6"]})
        self.assertEqual(state["chats"][made]["conversation_ids"], ["conv-made", "conv-made-2"])
        self.assertEqual(set(state["chats"]), {chat, other, plain_chat, made}, "refused imports made no chat")
        self.assertEqual(state["messages"]["m2"], {"kommo_msgid": second["new_message"]["msgid"], "chat_id": chat,
                                                   "edits": 0, "type": "text"})
        self.assertNotIn("m0", state["messages"])
        self.assertNotIn("m4", state["messages"])

    def test_imports_are_deduplicated_by_msgid_within_one_chat(self) -> None:
        scope = "dedupe_acc"
        status, first = self.import_(scope, "m1", "conv-a")
        self.assertEqual(status, 200)
        self.assertEqual(self.import_(scope, "m1", "conv-a"), (200, first))
        # Under another id bound to the same chat: still the same message.
        chat = first["new_message"]["conversation_id"]
        self.assertEqual(self.import_(scope, "m1", "conv-a2", conversation_ref_id=chat), (200, first))
        # Into another chat: refused, and nothing is left behind.
        status, body = self.import_(scope, "m1", "conv-b")
        self.assertEqual((status, body["error_type"]), (400, "BAD_REQUEST"))
        other = self.fake.admin("POST", "kommo_chat", {"scope": scope})[1]["chat_id"]
        self.assertEqual(self.import_(scope, "m1", "conv-c", conversation_ref_id=other)[0], 400)
        state = self.state(scope)
        self.assertEqual(state["chats"][chat]["conversation_ids"], ["conv-a", "conv-a2"])
        self.assertEqual(state["chats"][chat]["messages"], ["m1"])
        self.assertEqual(state["chats"][other]["conversation_ids"], [], "a refused import binds nothing")
        self.assertEqual(set(state["chats"]), {chat, other})

    def test_message_content_is_checked_per_type(self) -> None:
        scope = "content_acc"
        for n, good in enumerate((
            {"type": "text", "text": "hi"},
            *({"type": kind, "media": "https://example.com/f", "file_name": "f", "file_size": 0} for kind in
              ("picture", "video", "file")),
            *({"type": kind, "media": "https://example.com/f"} for kind in ("voice", "audio", "sticker")),
            {"type": "location", "location": {"lat": 1.5, "lon": -2}},
            {"type": "contact", "contact": {"name": "Ann", "phone": "+10000000000"}},
            {"type": "something_new"},
        )):
            self.assertEqual(self.import_(scope, f"ok{n}", "conv", message=good)[0], 200, good)
        for bad in (
            {"text": "no type"}, {"type": ""}, {"type": "text"}, {"type": "text", "text": ""},
            {"type": "picture"}, {"type": "video", "media": ""}, {"type": "sticker", "media": 5},
            {"type": "location"}, {"type": "location", "location": {"lat": 1}},
            {"type": "location", "location": {"lat": "1", "lon": 2}}, {"type": "location", "location": {"lat": True, "lon": 2}},
            {"type": "contact"}, {"type": "contact", "contact": {"name": ""}}, {"type": "contact", "contact": {}},
            {"type": "contact", "contact": {"name": "Ann"}}, {"type": "contact", "contact": {"phone": "+1"}},
            {"type": "file", "media": "https://example.com/f", "file_size": 1},
            {"type": "picture", "media": "https://example.com/f", "file_name": "f"},
            {"type": "video", "media": "https://example.com/f", "file_name": "f", "file_size": -1},
        ):
            status, body = self.import_(scope, "bad", "conv", message=bad)
            self.assertEqual((status, body["error_type"]), (400, "BAD_REQUEST"), bad)
        state = self.state(scope)
        self.assertNotIn("bad", state["messages"])
        self.assertEqual(state["messages"]["ok8"]["type"], "contact")
        self.assertEqual(state["messages"]["ok9"]["type"], "something_new", "unknown types are taken")

    def test_reply_to_names_one_message(self) -> None:
        scope = "reply_acc"
        self.assertEqual(self.import_(scope, "m1", "conv")[0], 200)
        status, body = self.import_(scope, "m2", "conv", reply_to={"message": {"msgid": "nope"}})
        self.assertEqual((status, body["error_description"]), (400, "unknown reply_to message"))
        for bad in ({"message": {"msgid": "m1", "id": "k"}}, {"message": {}}, {"message": {"id": ""}},
                    {"message": {"msgid": 1}}, {"msgid": "m1"}, {"message": "m1"}, "m1"):
            self.assertEqual(self.import_(scope, "m2", "conv", reply_to=bad)[0], 400, bad)
        self.assertEqual(self.import_(scope, "m2", "conv", reply_to={"message": {"msgid": "m1"}})[0], 200)
        self.assertEqual(self.import_(scope, "m3", "conv", reply_to={"message": {"id": "kommo-9"}})[0], 200)
        # Kommo's id of a message in another account's chat is not this account's to quote.
        elsewhere = self.import_("reply_other_acc", "o1", "conv")[1]["new_message"]["msgid"]
        status, body = self.import_(scope, "m4", "conv", reply_to={"message": {"id": elsewhere}})
        self.assertEqual((status, body["error_description"]), (400, "unknown reply_to message"))
        self.assertEqual(self.state(scope)["chats"][self.import_(scope, "m1", "conv")[1]["new_message"]
                                                    ["conversation_id"]]["messages"], ["m1", "m2", "m3"])

    def test_edits_name_a_message_imported_in_that_chat(self) -> None:
        scope = "edit_acc"
        status, imported = self.import_(scope, "m1", "conv")
        self.assertEqual(status, 200)
        chat = imported["new_message"]["conversation_id"]
        self.assertEqual(self.import_(scope, "m9", "conv-other")[0], 200)
        self.assertEqual(self.edit(scope, "m1", "conv"), (200, imported), "the import's answer")
        # Under another id bound to the same chat.
        self.assertEqual(self.import_(scope, "m2", "conv-2", conversation_ref_id=chat)[0], 200)
        self.assertEqual(self.edit(scope, "m1", "conv-2"), (200, imported))
        status, body = self.edit(scope, "nope", "conv")
        self.assertEqual((status, body["error_type"]), (404, "NOT_FOUND"))
        for bad in ({"conversation_id": "conv-other"}, {"conversation_id": "unbound"}, {"conversation_id": ""},
                    {"message": {"type": "text"}}, {"message": None}, {"timestamp": "1"}, {"msec_timestamp": None},
                    {"msgid": ""}):
            self.assertEqual(self.edit(scope, "m1", "conv", **bad)[0], 400, bad)
        state = self.state(scope)
        self.assertEqual((state["messages"]["m1"]["edits"], state["messages"]["m2"]["edits"]), (2, 0))
        self.assertEqual(state["chats"][chat]["messages"], ["m1", "m2"], "an edit adds no message")

    def test_an_edit_of_a_files_caption_needs_no_media(self) -> None:
        scope = "caption_acc"
        picture = {"type": "picture", "media": "https://example.com/p.png", "file_name": "p.png", "file_size": 3}
        self.assertEqual(self.import_(scope, "m1", "conv", message=picture)[0], 200)
        self.assertEqual(self.edit(scope, "m1", "conv", message={"type": "picture", "text": "new caption"})[0], 200)
        # New media is a new file: named and sized; another type is not a caption edit.
        for bad in ({"type": "picture", "media": "https://example.com/q.png"}, {"type": "video", "text": "x"}):
            self.assertEqual(self.edit(scope, "m1", "conv", message=bad)[0], 400, bad)
        self.assertEqual(self.edit(scope, "m1", "conv", message={**picture, "media": "https://example.com/q.png"})[0], 200)
        self.assertEqual(self.state(scope)["messages"]["m1"]["edits"], 2)

    def test_typing_is_shown_only_in_a_chat_kommo_has(self) -> None:
        scope = "typing_acc"
        typing = f"/v2/origin/custom/{scope}/typing"
        status, body = self.send("POST", typing, {"conversation_id": "conv", "sender": {"id": "u1"}})
        self.assertEqual((status, body["error_type"]), (404, "NOT_FOUND"))
        self.assertEqual(self.import_(scope, "m1", "conv")[0], 200)
        self.assertEqual(self.send("POST", typing, {"conversation_id": "conv", "sender": {"id": "u1"}}), (204, None))

    def test_reactions_are_checked_and_recorded(self) -> None:
        scope = "react_acc"
        chat = self.import_(scope, "m1", "conv")[1]["new_message"]["conversation_id"]
        self.assertEqual(self.import_(scope, "m9", "conv-other")[0], 200)
        started = self.fake.admin("POST", "kommo_chat", {"scope": scope})[1]["chat_id"]

        self.assertEqual(self.react(scope, conversation_id="conv", msgid="m1"), (200, {}))
        self.assertEqual(self.react(scope, conversation_id="conv", id="kommo-9", type="unreact", emoji=None,
                                    user={"ref_id": "mgr"}), (200, {}))
        self.assertEqual(self.react(scope, conversation_ref_id=chat, msgid="m1", type="unreact"), (200, {}))
        # A chat a manager started: named by its ref, next to an id not bound yet.
        self.assertEqual(self.react(scope, conversation_id=started, conversation_ref_id=started, id="kommo-1"),
                         (200, {}))
        for fields, expected in (
            ({"conversation_id": "conv", "msgid": "m1", "type": "like"}, 400),
            ({"conversation_id": "conv", "msgid": "m1", "type": None}, 400),
            ({"conversation_id": "conv", "msgid": "m1", "emoji": ""}, 400),
            ({"conversation_id": "conv", "msgid": "m1", "emoji": None}, 400),
            ({"conversation_id": "conv", "msgid": "m1", "type": "unreact", "emoji": 5}, 400),
            ({"msgid": "m1"}, 400),
            ({"conversation_id": "nope", "msgid": "m1"}, 404),
            ({"conversation_id": "", "msgid": "m1"}, 400),
            ({"conversation_ref_id": "nope", "msgid": "m1"}, 400),
            ({"conversation_id": "conv", "conversation_ref_id": started, "msgid": "m1"}, 400),
            ({"conversation_id": "conv", "msgid": "nope"}, 404),
            ({"conversation_id": "conv-other", "msgid": "m1"}, 400),
            ({"conversation_id": "conv", "msgid": "m1", "id": "k"}, 400),
            ({"conversation_id": "conv"}, 400),
            ({"conversation_id": "conv", "id": ""}, 400),
            ({"conversation_id": "conv", "msgid": "m1", "user": {}}, 400),
            ({"conversation_id": "conv", "msgid": "m1", "user": {"id": ""}}, 400),
            ({"conversation_id": "conv", "msgid": "m1", "user": "u1"}, 400),
        ):
            self.assertEqual(self.react(scope, **fields)[0], expected, fields)
        self.assertEqual(self.state(scope)["reactions"], [
            {"type": "react", "emoji": "\U0001f44d", "msgid": "m1", "user": {"id": "u1"}, "chat_id": chat},
            {"type": "unreact", "emoji": None, "id": "kommo-9", "user": {"ref_id": "mgr"}, "chat_id": chat},
            {"type": "unreact", "emoji": "\U0001f44d", "msgid": "m1", "user": {"id": "u1"}, "chat_id": chat},
            {"type": "react", "emoji": "\U0001f44d", "id": "kommo-1", "user": {"id": "u1"}, "chat_id": started},
        ])


class ChatServiceTest(unittest.TestCase):
    fake: Fake
    webhook = Webhook(WEBHOOK_SECRET)

    @classmethod
    def setUpClass(cls) -> None:
        cls.fake = Fake("fake_chat_service.py", WEBHOOK_SECRET)

    @classmethod
    def tearDownClass(cls) -> None:
        assert cls.fake.stop() == 0, "SIGTERM should exit cleanly"

    @staticmethod
    def payload(scope: str) -> str:
        return json.dumps({"scope_id": scope, "text": "private text"})

    def signed_headers(self, msg_id: str, payload: str, ts: float | None = None) -> dict[str, str]:
        ts = time.time() if ts is None else ts
        return {
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(ts)),
            "webhook-signature": self.webhook.sign(msg_id, datetime.fromtimestamp(ts, timezone.utc), payload),
        }

    def deliver(self, scope: str, msg_id: str, signature: str | None = None, ts: float | None = None):
        """POSTs a signed webhook; returns (status, JSON body or raw bytes)."""
        payload = self.payload(scope)
        headers = self.signed_headers(msg_id, payload, ts)
        if signature is not None:
            headers["webhook-signature"] = signature
        status, resp, data = self.fake.request("POST", "/hooks/kommo", payload.encode(), headers)
        return status, json.loads(data) if resp.getheader("Content-Type") == "application/json" else data

    def test_signed_delivery_passes_and_duplicates_are_flagged(self) -> None:
        self.assertEqual(self.deliver("cs_ok", "msg_1"), (200, {}))
        self.assertEqual(self.deliver("cs_ok", "msg_1"), (200, {}))
        calls = self.fake.calls("cs_ok")
        self.assertEqual([(c["signature_ok"], c["duplicate_id"]) for c in calls], [(True, False), (True, True)])
        self.assertEqual(calls[0]["body"]["scope_id"], "cs_ok")

    def test_unsigned_and_stale_deliveries_are_rejected(self) -> None:
        status, _, data = self.fake.request(
            "POST", "/hooks/kommo", b'{"scope_id":"cs_bad"}', {"Content-Type": "application/json"}
        )
        self.assertEqual(status, 401)
        self.assertEqual(json.loads(data)["error"]["code"], "bad_signature")
        status, body = self.deliver("cs_bad", "msg_old", ts=time.time() - 6 * 60)
        self.assertEqual((status, body["error"]["code"]), (401, "bad_signature"))
        self.assertEqual(self.deliver("cs_bad", "msg_2", signature="v1,!!notbase64")[0], 401)
        self.assertEqual([c["signature_ok"] for c in self.fake.calls("cs_bad")], [False, False, False])

    def test_one_of_several_signatures_suffices(self) -> None:
        good = self.signed_headers("msg_m", self.payload("cs_multi"))["webhook-signature"]
        wrong = "v1," + base64.b64encode(b"\0" * 32).decode()
        self.assertEqual(self.deliver("cs_multi", "msg_m", signature=f"{wrong} {good}")[0], 200)

    def test_scripted_responses_and_retries(self) -> None:
        scope = "cs_script"
        responses = [{"status": 500, "body": "oops"}, {"status": 202, "body": {"queued": True}}]
        self.assertEqual(self.fake.admin("POST", "script", {"scope": scope, "responses": responses})[0], 200)
        # A badly signed request does not consume a scripted response.
        self.assertEqual(self.deliver(scope, "msg_r", signature="v1,AAAA")[0], 401)
        self.assertEqual(self.deliver(scope, "msg_r"), (500, b"oops"))
        self.assertEqual(self.deliver(scope, "msg_r2"), (202, {"queued": True}))
        self.assertEqual(self.deliver(scope, "msg_r3"), (200, {}))
        # msg_r was answered 500, so its retry is not a duplicate.
        self.assertEqual(self.deliver(scope, "msg_r"), (200, {}))
        calls = self.fake.calls(scope)
        self.assertEqual([c["duplicate_id"] for c in calls], [False] * 5)

    def test_slow_fault_window_still_flags_the_retry_as_a_duplicate(self) -> None:
        scope = "cs_slow"
        fault = {"scope": scope, "seconds": 0.5, "reply": {"status": 200, "delay_ms": 300}}
        self.assertEqual(self.fake.admin("POST", "fault", fault), (200, {}))
        started = time.monotonic()
        self.assertEqual(self.deliver(scope, "msg_slow"), (200, b""))
        self.assertGreaterEqual(time.monotonic() - started, 0.3)
        time.sleep(0.3)
        self.assertEqual(self.deliver(scope, "msg_slow"), (200, {}))
        calls = self.fake.calls(scope)
        self.assertEqual([(c["reply_status"], c["fault"], c["duplicate_id"]) for c in calls],
                         [(200, True, False), (200, False, True)])

    def test_admin_sign_verifies_with_library(self) -> None:
        payload = json.dumps({"scope_id": "cs_sign", "n": 1})
        now = int(time.time())
        status, signed = self.fake.admin("POST", "sign", {"msg_id": "msg_s", "timestamp": now, "payload": payload})
        self.assertEqual(status, 200)
        self.assertEqual((signed["webhook-id"], signed["webhook-timestamp"]), ("msg_s", str(now)))
        self.assertEqual(self.webhook.verify(payload, signed), json.loads(payload))
        status, _, _ = self.fake.request("POST", "/hooks/kommo", payload.encode(), signed)
        self.assertEqual(status, 200)
        self.assertEqual(self.fake.admin("POST", "sign", {"msg_id": "m", "timestamp": "now", "payload": ""})[0], 400)


KOMMO_SECRET = "selftest-kommo-client-secret-0123456789"
KOMMO_CLIENT = "4a1b0c9e-0000-4000-8000-000000000001"
KOMMO_REDIRECT = "https://bridge.example.com/kommo/install"


class KommoTest(unittest.TestCase):
    fake: Fake
    accounts = 0

    @classmethod
    def setUpClass(cls) -> None:
        cls.fake = Fake("fake_kommo.py", KOMMO_SECRET)

    @classmethod
    def tearDownClass(cls) -> None:
        assert cls.fake.stop() == 0, "SIGTERM should exit cleanly"

    def account(self, **fields: Any) -> dict:
        """A new account, under a subdomain of its own."""
        KommoTest.accounts += 1
        subdomain = f"acme{KommoTest.accounts}-{self._testMethodName[5:20].replace('_', '-').strip('-')}"
        status, account = self.fake.admin("POST", "accounts", {"subdomain": subdomain, **fields})
        self.assertEqual(status, 200, account)
        return account

    def code(self, subdomain: str, client_id: str = KOMMO_CLIENT, redirect_uri: str = KOMMO_REDIRECT) -> str:
        status, issued = self.fake.admin(
            "POST", "codes", {"subdomain": subdomain, "client_id": client_id, "redirect_uri": redirect_uri}
        )
        self.assertEqual(status, 200, issued)
        return issued["code"]

    def token(self, form: bool = False, headers: dict[str, str] | None = None, **params: Any) -> tuple[int, Any]:
        params = {"client_id": KOMMO_CLIENT, "client_secret": KOMMO_SECRET, "redirect_uri": KOMMO_REDIRECT, **params}
        params = {k: v for k, v in params.items() if v is not None}
        if form:
            body = urlencode(params).encode()
            sent = {"Content-Type": "application/x-www-form-urlencoded"}
        else:
            body = json.dumps(params).encode()
            sent = {"Content-Type": "application/json"}
        sent.update(headers or {})
        status, _, data = self.fake.request("POST", "/oauth2/access_token", body, sent)
        return status, json.loads(data) if data else None

    def exchange(self, code: str, **more: Any) -> tuple[int, Any]:
        return self.token(grant_type="authorization_code", code=code, **more)

    def refresh(self, refresh_token: str, **more: Any) -> tuple[int, Any]:
        return self.token(grant_type="refresh_token", refresh_token=refresh_token, **more)

    def api(self, path: str, access_token: str | None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        sent = {} if access_token is None else {"Authorization": f"Bearer {access_token}"}
        sent.update(headers or {})
        status, _, data = self.fake.request("GET", path, b"", sent)
        return status, json.loads(data) if data else None

    def installed(self, **fields: Any) -> tuple[dict, dict]:
        """A new account and the tokens its installation gave."""
        account = self.account(**fields)
        status, tokens = self.exchange(self.code(account["subdomain"]))
        self.assertEqual(status, 200, tokens)
        return account, tokens

    def assert_refused(self, answer: tuple[int, Any], hint: str) -> None:
        status, body = answer
        self.assertEqual((status, body.get("hint")), (400, hint), body)
        self.assertEqual(set(body), {"hint", "title", "type", "status", "detail"})
        self.assertEqual(body["status"], 400)

    def assert_unauthorized(self, answer: tuple[int, Any]) -> None:
        status, body = answer
        self.assertEqual(status, 401, body)
        self.assertEqual((body["title"], body["status"]), ("Unauthorized", 401))

    def test_install_exchange_then_account_and_users(self) -> None:
        account = self.account()
        sub = account["subdomain"]
        self.assertEqual(account["host"], f"{sub}.kommo.com")
        self.assertEqual(set(account), {"id", "name", "subdomain", "host", "amojo_id", "users"})
        self.assertIsInstance(account["id"], int)
        self.assertEqual(str(uuid.UUID(account["amojo_id"])), account["amojo_id"])
        self.assertEqual([u["is_admin"] for u in account["users"]], [True, False])
        self.assertEqual(self.fake.admin("GET", f"accounts?subdomain={sub}"), (200, account))

        status, issued = self.fake.admin(
            "POST", "codes", {"subdomain": sub, "client_id": KOMMO_CLIENT, "redirect_uri": KOMMO_REDIRECT}
        )
        self.assertEqual((status, set(issued), issued["referer"]), (200, {"code", "referer"}, f"{sub}.kommo.com"))
        status, tokens = self.exchange(issued["code"])
        self.assertEqual(status, 200, tokens)
        self.assertEqual(set(tokens), {"token_type", "expires_in", "access_token", "refresh_token"})
        self.assertEqual((tokens["token_type"], tokens["expires_in"]), ("Bearer", 86400))
        self.assertNotEqual(tokens["access_token"], tokens["refresh_token"])

        status, got = self.api("/api/v4/account?with=amojo_id", tokens["access_token"])
        self.assertEqual(status, 200, got)
        self.assertEqual((got["id"], got["subdomain"], got["amojo_id"]), (account["id"], sub, account["amojo_id"]))
        self.assertEqual(got["name"], account["name"])
        self.assertEqual(got["current_user_id"], account["users"][0]["id"])
        self.assertNotIn("amojo_id", self.api("/api/v4/account", tokens["access_token"])[1],
                         "amojo_id only when asked for, as Kommo")

        status, users = self.api("/api/v4/users?with=amojo_id", tokens["access_token"])
        self.assertEqual(status, 200, users)
        self.assertEqual((users["_total_items"], users["_page"], users["_page_count"]), (2, 1, 1))
        self.assertEqual(
            [(u["id"], u["name"], u["email"], u["amojo_id"]) for u in users["_embedded"]["users"]],
            [(u["id"], u["name"], u["email"], u["amojo_id"]) for u in account["users"]],
        )
        self.assertNotIn("next", users["_links"])
        plain = self.api("/api/v4/users", tokens["access_token"])[1]["_embedded"]["users"]
        self.assertTrue(all("amojo_id" not in u for u in plain))
        self.assertEqual(self.api("/api/v4/leads", tokens["access_token"])[0], 404)

    def test_form_encoded_exchange_and_other_domains(self) -> None:
        account = self.account(domain="amocrm.ru", name="Shop", users=[{"name": "Ann"}])
        sub = account["subdomain"]
        self.assertEqual((account["host"], account["name"]), (f"{sub}.amocrm.ru", "Shop"))
        self.assertTrue(account["users"][0]["email"].endswith("@example.com"))
        status, issued = self.fake.admin(
            "POST", "codes", {"subdomain": sub, "client_id": KOMMO_CLIENT, "redirect_uri": KOMMO_REDIRECT}
        )
        self.assertEqual(issued["referer"], f"{sub}.amocrm.ru")
        status, tokens = self.token(form=True, grant_type="authorization_code", code=issued["code"])
        self.assertEqual(status, 200, tokens)
        status, refreshed = self.token(form=True, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
        self.assertEqual(status, 200, refreshed)
        self.assertEqual(self.api("/api/v4/account", refreshed["access_token"])[1]["subdomain"], sub)

    def test_a_code_is_exchanged_once(self) -> None:
        account = self.account()
        code = self.code(account["subdomain"])
        self.assertEqual(self.exchange(code)[0], 200)
        self.assert_refused(self.exchange(code), "Authorization code has been revoked")
        self.assertEqual(len(self.fake.admin("GET", f"tokens?subdomain={account['subdomain']}")[1]["tokens"]), 1)

    def test_exchange_refusals_leave_the_code_usable(self) -> None:
        account = self.account()
        sub = account["subdomain"]
        code = self.code(sub)
        for changes, hint in (
            ({"client_secret": "wrong"}, "Check the `client_secret` parameter"),
            ({"client_secret": None}, "Check the `client_secret` parameter"),
            ({"redirect_uri": "https://bridge.example.com/other"}, "Redirect URI is not associated with client"),
            ({"redirect_uri": None}, "Check the `redirect_uri` parameter"),
            ({"client_id": "another-client"}, "Check the `client_id` parameter"),
            ({"client_id": ""}, "Check the `client_id` parameter"),
            ({"code": "def50200nope"}, "Cannot decrypt the authorization code"),
            ({"code": ""}, "Check the `code` parameter"),
            ({"grant_type": "password"}, "Check the `grant_type` parameter"),
            ({"grant_type": None}, "Check the `grant_type` parameter"),
        ):
            with self.subTest(changes):
                params = {"grant_type": "authorization_code", "code": code, **changes}
                self.assert_refused(self.token(**params), hint)
        status, _, data = self.fake.request("POST", "/oauth2/access_token", b"{not json",
                                            {"Content-Type": "application/json"})
        self.assertEqual((status, json.loads(data)["hint"]), (400, "Check the `grant_type` parameter"))
        self.assertEqual(self.exchange(code)[0], 200, "refused attempts did not use the code up")

        expiring = self.code(sub)
        self.assertEqual(self.fake.admin("POST", "expire", {"code": expiring}), (200, {}))
        self.assert_refused(self.exchange(expiring), "Authorization code has expired")
        other = self.code(sub, client_id="other-client", redirect_uri="https://other.example.com/cb")
        self.assert_refused(self.exchange(other), "Check the `client_id` parameter")
        self.assertEqual(self.exchange(other, client_id="other-client", redirect_uri="https://other.example.com/cb")[0],
                         200)

    def test_refresh_tokens_rotate(self) -> None:
        account, first = self.installed()
        sub = account["subdomain"]
        status, second = self.refresh(first["refresh_token"])
        self.assertEqual(status, 200, second)
        self.assertEqual((second["token_type"], second["expires_in"]), ("Bearer", 86400))
        self.assertNotEqual(second["refresh_token"], first["refresh_token"])
        self.assertNotEqual(second["access_token"], first["access_token"])
        self.assert_unauthorized(self.api("/api/v4/account", first["access_token"]))
        self.assertEqual(self.api("/api/v4/account", second["access_token"])[0], 200)
        # "The old refresh token will still be functional until you use the new one": a refresh
        # whose answer was lost can be made again, and its twin's answer works too.
        status, twin = self.refresh(first["refresh_token"])
        self.assertEqual(status, 200, twin)
        self.assertNotEqual(twin["refresh_token"], second["refresh_token"])

        for changes, hint in (
            ({"redirect_uri": "https://bridge.example.com/other"}, "Redirect URI is not associated with client"),
            ({"client_id": "another-client"}, "Check the `client_id` parameter"),
            ({"client_secret": "wrong"}, "Check the `client_secret` parameter"),
            ({"refresh_token": "def50200nope"}, "Cannot decrypt the refresh token"),
            ({"refresh_token": ""}, "Check the `refresh_token` parameter"),
        ):
            with self.subTest(changes):
                params = {"grant_type": "refresh_token", "refresh_token": second["refresh_token"], **changes}
                self.assert_refused(self.token(**params), hint)

        status, third = self.refresh(second["refresh_token"])
        self.assertEqual(status, 200, third)
        # The new one used: the old one is retired.
        self.assert_refused(self.refresh(first["refresh_token"]), "Token has been revoked")
        live = self.fake.admin("GET", f"tokens?subdomain={sub}")[1]["tokens"]
        self.assertEqual([pair["refresh_token"] for pair in live],
                         [second["refresh_token"], twin["refresh_token"], third["refresh_token"]],
                         "the used one's successor, the unused twin, the newest")
        current = live[-1]
        self.assertAlmostEqual(current.pop("expires_at"), time.time() + 86400, delta=5)
        self.assertEqual(current, {"access_token": third["access_token"], "refresh_token": third["refresh_token"],
                                   "client_id": KOMMO_CLIENT, "access_live": True})
        self.assertEqual(self.refresh(third["refresh_token"])[0], 200)
        self.assert_refused(self.refresh(second["refresh_token"]), "Token has been revoked")

        self.assertEqual(self.fake.admin("POST", "expire", {"refresh_token": twin["refresh_token"]}), (200, {}))
        self.assert_refused(self.refresh(twin["refresh_token"]), "Token has expired")

    def test_the_users_list_is_for_administrators_only(self) -> None:
        account = self.account()
        sub, manager = account["subdomain"], account["users"][1]
        status, issued = self.fake.admin("POST", "codes", {"subdomain": sub, "client_id": KOMMO_CLIENT,
                                                           "redirect_uri": KOMMO_REDIRECT, "user_id": manager["id"]})
        self.assertEqual(status, 200, issued)
        status, tokens = self.exchange(issued["code"])
        self.assertEqual(status, 200, tokens)
        status, body = self.api("/api/v4/users?with=amojo_id", tokens["access_token"])
        self.assertEqual((status, body["status"], body["title"]), (403, 403, "Forbidden"))
        self.assertEqual(self.api("/api/v4/account?with=amojo_id", tokens["access_token"])[0], 200)
        status, refreshed = self.refresh(tokens["refresh_token"])
        self.assertEqual(self.api("/api/v4/users", refreshed["access_token"])[0], 403, "refreshed: the same user")
        for bad in ({"user_id": "1"}, {"user_id": 1}):
            params = {"subdomain": sub, "client_id": KOMMO_CLIENT, "redirect_uri": KOMMO_REDIRECT, **bad}
            self.assertEqual(self.fake.admin("POST", "codes", params)[0], 400, bad)

    def test_old_access_token_can_outlive_a_refresh_when_set(self) -> None:
        account = self.account()
        sub = account["subdomain"]
        status, settings = self.fake.admin("POST", "settings", {"subdomain": sub, "revoke_access_on_refresh": False})
        self.assertEqual((status, settings["revoke_access_on_refresh"]), (200, False))
        status, first = self.exchange(self.code(sub))
        self.assertEqual(self.refresh(first["refresh_token"])[0], 200)
        self.assertEqual(self.api("/api/v4/account", first["access_token"])[0], 200)
        self.assertTrue(self.fake.admin("GET", "settings")[1]["revoke_access_on_refresh"], "the default is unchanged")

    def test_expired_and_revoked_access_tokens_are_401(self) -> None:
        account, tokens = self.installed()
        sub = account["subdomain"]
        self.assertEqual(self.fake.admin("POST", "expire", {"access_token": tokens["access_token"]}), (200, {}))
        self.assert_unauthorized(self.api("/api/v4/account?with=amojo_id", tokens["access_token"]))
        self.assert_unauthorized(self.api("/api/v4/users?with=amojo_id", tokens["access_token"]))
        self.assertIn("expired", self.fake.calls(sub)[-1]["error"])
        self.assertFalse(self.fake.calls(sub)[-1]["signature_ok"])
        self.assertFalse(self.fake.admin("GET", f"tokens?subdomain={sub}")[1]["tokens"][0]["access_live"])
        status, fresh = self.refresh(tokens["refresh_token"])
        self.assertEqual(status, 200, "an expired access token is refreshed")

        for header in ({}, {"Authorization": "Bearer"}, {"Authorization": f"Basic {fresh['access_token']}"},
                       {"Authorization": "Bearer not-a-token"}):
            with self.subTest(header):
                self.assert_unauthorized(self.api("/api/v4/account", None, header))

        waiting_code = self.code(sub)
        # Two live: the fresh pair, and the first, whose refresh token works until fresh's is used.
        self.assertEqual(self.fake.admin("POST", "revoke", {"subdomain": sub}), (200, {"revoked": 2}))
        self.assert_unauthorized(self.api("/api/v4/account", fresh["access_token"]))
        self.assertIn("revoked", self.fake.calls(sub)[-1]["error"])
        self.assert_refused(self.refresh(fresh["refresh_token"]), "Token has been revoked")
        self.assert_refused(self.exchange(waiting_code), "Authorization code has been revoked")
        self.assertEqual(self.fake.admin("GET", f"tokens?subdomain={sub}"), (200, {"tokens": []}))
        # Installed again: a new code works.
        status, again = self.exchange(self.code(sub))
        self.assertEqual(status, 200)
        self.assertEqual(self.api("/api/v4/account", again["access_token"])[0], 200)

    def test_access_token_lifetime_is_settable(self) -> None:
        account = self.account()
        sub = account["subdomain"]
        status, settings = self.fake.admin("POST", "settings", {"subdomain": sub, "expires_in": 1})
        self.assertEqual((status, settings),
                         (200, {"expires_in": 1, "require_host": False, "revoke_access_on_refresh": True}))
        self.assertEqual(self.fake.admin("GET", f"settings?subdomain={sub}"), (200, settings))
        self.assertEqual(self.fake.admin("GET", "settings")[1]["expires_in"], 86400, "only this account")
        status, tokens = self.exchange(self.code(sub))
        self.assertEqual((status, tokens["expires_in"]), (200, 1))
        self.assertEqual(self.api("/api/v4/account", tokens["access_token"])[0], 200)
        time.sleep(1.1)
        self.assert_unauthorized(self.api("/api/v4/account", tokens["access_token"]))
        self.assertEqual(self.refresh(tokens["refresh_token"])[1]["expires_in"], 1)

    def test_account_hosts_named_by_a_request_must_be_its_own(self) -> None:
        account, tokens = self.installed()
        sub = account["subdomain"]
        other = self.account()
        access = tokens["access_token"]
        for header in ({"Host": f"{sub}.kommo.com"}, {"Host": f"{sub}.kommo.com:443"},
                       {"X-Kommo-Account-Host": f"{sub}.kommo.com"}):
            with self.subTest(header):
                self.assertEqual(self.api("/api/v4/account", access, header)[0], 200)
        for header in ({"Host": f"{other['subdomain']}.kommo.com"}, {"Host": f"{sub}.amocrm.ru"},
                       {"X-Kommo-Account-Host": f"{other['subdomain']}.kommo.com"}):
            with self.subTest(header):
                self.assert_unauthorized(self.api("/api/v4/account", access, header))
        self.assertIn("names", self.fake.calls(sub)[-1]["error"])
        # The Host wins over the header when it is an account host.
        self.assert_unauthorized(self.api("/api/v4/account", access, {
            "Host": f"{other['subdomain']}.kommo.com", "X-Kommo-Account-Host": f"{sub}.kommo.com"}))

        code = self.code(sub)
        self.assert_refused(self.exchange(code, headers={"X-Kommo-Account-Host": f"{other['subdomain']}.kommo.com"}),
                            "Invalid account")
        self.assert_refused(self.refresh(tokens["refresh_token"], headers={"Host": f"{other['subdomain']}.kommo.com"}),
                            "Invalid account")

        # require_host: a request must name the host.
        self.assertEqual(self.fake.admin("POST", "settings", {"subdomain": sub, "require_host": True})[0], 200)
        self.assert_unauthorized(self.api("/api/v4/account", access))
        self.assertIn("require_host", self.fake.calls(sub)[-1]["error"])
        self.assert_refused(self.exchange(code), "Invalid account")
        status, fresh = self.exchange(code, headers={"Host": f"{sub}.kommo.com"})
        self.assertEqual(status, 200, fresh)
        named = {"X-Kommo-Account-Host": f"{sub}.kommo.com"}
        self.assertEqual(self.api("/api/v4/users", fresh["access_token"], named)[0], 200)

    def test_users_are_paged(self) -> None:
        account, tokens = self.installed(users=[{"name": "A"}, {"name": "B", "email": "b@example.com"}, {"name": "C"}])
        access = tokens["access_token"]
        status, first = self.api("/api/v4/users?with=amojo_id&limit=2", access)
        self.assertEqual(status, 200)
        self.assertEqual((first["_total_items"], first["_page"], first["_page_count"]), (3, 1, 2))
        self.assertEqual([u["name"] for u in first["_embedded"]["users"]], ["A", "B"])
        self.assertIn("page=2", first["_links"]["next"]["href"])
        status, second = self.api("/api/v4/users?with=amojo_id&limit=2&page=2", access)
        self.assertEqual([u["amojo_id"] for u in second["_embedded"]["users"]], [account["users"][2]["amojo_id"]])
        self.assertNotIn("next", second["_links"])
        self.assertEqual(self.api("/api/v4/users?limit=2&page=3", access), (204, None))
        for query in ("limit=0", "limit=251", "page=0", "page=x", "limit=-1"):
            with self.subTest(query):
                status, body = self.api(f"/api/v4/users?{query}", access)
                self.assertEqual((status, body["status"]), (400, 400))

    def test_calls_are_recorded_per_account_with_secrets_redacted(self) -> None:
        account = self.account()
        sub = account["subdomain"]
        code = self.code(sub)
        status, tokens = self.exchange(code)
        self.assertEqual(status, 200)
        self.token(form=True, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
        self.api("/api/v4/account?with=amojo_id", tokens["access_token"])
        self.token(grant_type="refresh_token", refresh_token=tokens["refresh_token"], client_secret="wrong-secret")
        calls = self.fake.calls(sub)
        self.assertEqual([(c["method"], c["path"], c["reply_status"]) for c in calls], [
            ("POST", "/oauth2/access_token", 200), ("POST", "/oauth2/access_token", 200),
            ("GET", "/api/v4/account", 401), ("POST", "/oauth2/access_token", 400)])
        self.assertEqual(calls[0]["body"], {"client_id": KOMMO_CLIENT, "client_secret": "<redacted>",
                                            "redirect_uri": KOMMO_REDIRECT, "grant_type": "authorization_code",
                                            "code": "<redacted>"})
        self.assertEqual(calls[1]["body"]["refresh_token"], "<redacted>", "a form is redacted too")
        self.assertEqual([c["grant_type"] for c in (calls[0], calls[1], calls[3])],
                         ["authorization_code", "refresh_token", "refresh_token"])
        self.assertEqual(calls[2]["headers"]["authorization"], "Bearer <redacted>")
        self.assertEqual(calls[2]["query"], "with=amojo_id")
        self.assertEqual((calls[3]["signature_ok"], calls[3]["error"]), (False, "client_secret is wrong"))
        recorded = json.dumps(calls)
        for secret in (KOMMO_SECRET, "wrong-secret", code, tokens["access_token"], tokens["refresh_token"]):
            self.assertNotIn(secret, recorded)
        self.fake.request("POST", "/oauth2/access_token", f"secret={KOMMO_SECRET}".encode(),
                          {"Content-Type": "text/plain", "X-Kommo-Account-Host": f"{sub}.kommo.com"})
        self.assertEqual(self.fake.calls(sub)[-1]["body"], "<redacted>")

    def test_scripts_and_faults_are_per_account(self) -> None:
        account = self.account()
        sub = account["subdomain"]
        code = self.code(sub)
        script = {"scope": sub, "match": "/oauth2/", "responses": [{"status": 503, "body": {"title": "busy"}}]}
        self.assertEqual(self.fake.admin("POST", "script", script), (200, {}))
        self.assert_refused(self.exchange(code, client_secret="wrong"), "Check the `client_secret` parameter")
        self.assertEqual(self.exchange(code), (503, {"title": "busy"}), "a verified request takes the script")
        status, tokens = self.exchange(code)
        self.assertEqual(status, 200, "the scripted answer did not use the code")
        fault = {"scope": sub, "seconds": 30, "match": "/api/v4/", "reply": {"close": True}}
        self.assertEqual(self.fake.admin("POST", "fault", fault), (200, {}))
        with self.assertRaises(http.client.RemoteDisconnected):
            self.api("/api/v4/account", tokens["access_token"])
        self.assertEqual(self.fake.admin("DELETE", f"fault?scope={sub}"), (200, {}))
        self.assertEqual(self.api("/api/v4/account", tokens["access_token"])[0], 200)

    def test_admin_routes_check_their_input(self) -> None:
        account = self.account()
        sub = account["subdomain"]
        self.assertEqual(self.fake.admin("POST", "accounts", {"subdomain": sub})[0], 409)
        for bad in ({}, {"subdomain": ""}, {"subdomain": "Acme"}, {"subdomain": "a.b"}, {"subdomain": "-a"},
                    {"subdomain": "ok1", "domain": "example.com"}, {"subdomain": "ok2", "users": []},
                    {"subdomain": "ok3", "users": [{"email": "x@example.com"}]},
                    {"subdomain": "ok4", "users": [{"name": "A", "role": "x"}]}, {"subdomain": "ok5", "extra": 1}):
            self.assertEqual(self.fake.admin("POST", "accounts", bad)[0], 400, bad)
        self.assertEqual(self.fake.admin("GET", "accounts?subdomain=nobody")[0], 404)
        self.assertEqual(self.fake.admin("GET", "accounts")[0], 400)
        for bad, expected in (
            ({"subdomain": "nobody", "client_id": "c", "redirect_uri": "r"}, 404),
            ({"subdomain": sub, "redirect_uri": "r"}, 400),
            ({"subdomain": sub, "client_id": "c", "redirect_uri": ""}, 400),
            ({"subdomain": sub, "client_id": "c", "redirect_uri": "r", "state": "s"}, 400),
        ):
            self.assertEqual(self.fake.admin("POST", "codes", bad)[0], expected, bad)
        for bad, expected in (({"access_token": "nope"}, 404), ({"code": "nope"}, 404),
                              ({"refresh_token": "nope"}, 404), ({}, 400),
                              ({"access_token": "a", "code": "b"}, 400), ({"access_token": 1}, 400), ({"x": "y"}, 400)):
            self.assertEqual(self.fake.admin("POST", "expire", bad)[0], expected, bad)
        self.assertEqual(self.fake.admin("POST", "revoke", {"subdomain": "nobody"})[0], 404)
        self.assertEqual(self.fake.admin("POST", "revoke", {})[0], 400)
        self.assertEqual(self.fake.admin("POST", "revoke", {"subdomain": sub}), (200, {"revoked": 0}))
        self.assertEqual(self.fake.admin("GET", "tokens?subdomain=nobody")[0], 404)
        self.assertEqual(self.fake.admin("GET", "tokens")[0], 400)
        for bad, expected in (({"expires_in": -1}, 400), ({"expires_in": "60"}, 400), ({"expires_in": True}, 400),
                              ({"require_host": 1}, 400), ({"other": 1}, 400),
                              ({"subdomain": "nobody", "expires_in": 5}, 404)):
            self.assertEqual(self.fake.admin("POST", "settings", bad)[0], expected, bad)
        self.assertEqual(self.fake.admin("GET", "settings?subdomain=nobody")[0], 404)
        self.assertEqual(self.fake.admin("GET", "settings"),
                         (200, {"expires_in": 86400, "require_host": False, "revoke_access_on_refresh": True}))

    def test_disable_revokes_and_calls_the_hook_signed_as_kommo_signs_it(self) -> None:
        account, tokens = self.installed()
        sub = account["subdomain"]
        calls: list[str] = []

        class Hook(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
                calls.append(self.path)
                body = b'{"state":"disconnected"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{server.server_port}/kommo/oauth/disabled"
            status, answer = self.fake.admin("POST", "disable", {"subdomain": sub, "client_id": KOMMO_CLIENT,
                                                                 "url": url})
            self.assertEqual((status, answer), (200, {"revoked": 1, "status": 200,
                                                      "body": {"state": "disconnected"}}))
            (path,) = calls
            self.assertTrue(path.startswith("/kommo/oauth/disabled?"), path)
            query = dict(parse_qsl(path.split("?", 1)[1]))
            self.assertEqual((query["account_id"], query["client_uuid"]), (str(account["id"]), KOMMO_CLIENT))
            expected = hmac.new(KOMMO_SECRET.encode(), f"{KOMMO_CLIENT}|{account['id']}".encode(),
                                hashlib.sha256).hexdigest()
            self.assertEqual(query["signature"], expected)
            self.assert_unauthorized(self.api("/api/v4/account", tokens["access_token"]))
            for bad, expected_status in (({"subdomain": sub, "client_id": KOMMO_CLIENT, "url": "http://evil.example/"},
                                          400),
                                         ({"subdomain": sub, "client_id": KOMMO_CLIENT}, 400),
                                         ({"subdomain": "nobody", "client_id": KOMMO_CLIENT, "url": url}, 404)):
                self.assertEqual(self.fake.admin("POST", "disable", bad)[0], expected_status, bad)
            self.assertEqual(len(calls), 1, "a refused admin call calls no hook")
        finally:
            server.shutdown()
            server.server_close()


class KommoCrmTest(unittest.TestCase):
    """fake_kommo_crm.py through fake_kommo.py: contacts, chat links, sources."""

    fake: Fake

    @classmethod
    def setUpClass(cls) -> None:
        cls.fake = Fake("fake_kommo.py", KOMMO_SECRET)

    @classmethod
    def tearDownClass(cls) -> None:
        assert cls.fake.stop() == 0, "SIGTERM should exit cleanly"

    account = KommoTest.account
    code = KommoTest.code
    token = KommoTest.token
    exchange = KommoTest.exchange
    installed = KommoTest.installed

    def call(self, method: str, path: str, token: str | None, body: Any = None) -> tuple[int, Any]:
        sent = {"Content-Type": "application/json"}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        raw = b"" if body is None else json.dumps(body).encode()
        status, _, data = self.fake.request(method, path, raw, sent)
        return status, json.loads(data) if data else None

    def test_a_chats_contact_is_found_read_and_patched_as_kommo_does(self) -> None:
        account, tokens = self.installed()
        token, sub = tokens["access_token"], account["subdomain"]
        status, contact = self.fake.admin("POST", "contacts", {"subdomain": sub, "name": "Client u-1",
                                                               "phone": "+100", "chat_id": "chat-1"})
        self.assertEqual(status, 200, contact)
        self.assertEqual(self.call("GET", "/api/v4/contacts/chats?chat_id=chat-2", token)[0], 204)
        status, links = self.call("GET", "/api/v4/contacts/chats?chat_id=chat-1", token)
        self.assertEqual((status, links["_embedded"]["chats"][0]["contact_id"]), (200, contact["id"]))
        for query in ("", "?chat_id=chat-1&contact_id=1", "?contact_id=x"):
            self.assertEqual(self.call("GET", f"/api/v4/contacts/chats{query}", token)[0], 400, query)
        self.assertEqual(self.call("GET", "/api/v4/contacts/chats?chat_id=chat-1", None)[0], 401)
        path = f"/api/v4/contacts/{contact['id']}"
        status, read = self.call("GET", path, token)
        self.assertEqual((status, read["name"]), (200, "Client u-1"))
        self.assertEqual(read["custom_fields_values"][0]["values"][0]["value"], "+100")
        self.assertEqual(self.call("GET", "/api/v4/contacts/999", token)[0], 204)
        change = {"name": "Adam", "custom_fields_values": [
            {"field_code": "PHONE", "values": [{"value": "+200", "enum_code": "MOB"}, {"value": "+100"}]},
            {"field_code": "EMAIL", "values": [{"value": "a@example.com", "enum_code": "PRIV"}]}]}
        status, patched = self.call("PATCH", path, token, change)
        self.assertEqual((status, patched["name"]), (200, "Adam"), patched)
        after = self.fake.admin("GET", f"contacts?subdomain={sub}&id={contact['id']}")[1]
        phones = [v["value"] for v in after["custom_fields_values"][0]["values"]]
        self.assertEqual((after["name"], phones, after["patches"]), ("Adam", ["+200", "+100"], 1))
        refused = [
            {"name": ""},
            {"nickname": "x"},
            {"custom_fields_values": [{"field_code": "AVATAR", "values": [{"value": "x"}]}]},
            {"custom_fields_values": [{"field_code": "PHONE", "values": [{"value": "+1", "enum_code": "PRIV"}]}]},
            {"custom_fields_values": [{"field_code": "EMAIL", "values": [{"value": ""}]}]},
            [],
        ]
        for body in refused:
            status, answer = self.call("PATCH", path, token, body)
            self.assertEqual(status, 400, body)
            self.assertIn("validation-errors", answer)
        self.assertEqual(self.fake.admin("GET", f"contacts?subdomain={sub}&id={contact['id']}")[1]["patches"], 1,
                         "a refused change changes nothing")
        self.assertEqual(self.call("PATCH", "/api/v4/contacts/999", token, {"name": "X"})[0], 404)
        other, other_tokens = self.installed()
        self.assertEqual(self.call("GET", path, other_tokens["access_token"])[0], 204, "another account's contact")

    def test_sources_are_the_integrations_own_and_unique(self) -> None:
        account, tokens = self.installed()
        token, sub = tokens["access_token"], account["subdomain"]
        self.assertEqual(self.call("GET", "/api/v4/sources", token)[0], 204)
        status, created = self.call("POST", "/api/v4/sources", token, [{"name": "Line 1", "external_id": "line-1"}])
        self.assertEqual(status, 200, created)
        source = created["_embedded"]["sources"][0]
        self.assertEqual((source["external_id"], source["name"], source["request_id"]), ("line-1", "Line 1", "0"))
        status, listed = self.call("GET", "/api/v4/sources", token)
        self.assertEqual([s["id"] for s in listed["_embedded"]["sources"]], [source["id"]])
        refused = [
            [{"name": "Again", "external_id": "line-1"}],
            [{"name": "A", "external_id": "x"}, {"name": "B", "external_id": "x"}],
            [{"name": "", "external_id": "y"}],
            [{"name": "Z", "external_id": "z", "origin_code": "12345"}],
            {"name": "Z", "external_id": "z"},
            [],
        ]
        for body in refused:
            status, answer = self.call("POST", "/api/v4/sources", token, body)
            self.assertEqual(status, 400, body)
            self.assertIn("validation-errors", answer)
        # Another integration in the same account sees none of them and may reuse the external id.
        status, issued = self.fake.admin("POST", "codes", {"subdomain": sub, "client_id": "other-integration",
                                                           "redirect_uri": KOMMO_REDIRECT})
        status, other = self.token(grant_type="authorization_code", code=issued["code"], client_id="other-integration")
        self.assertEqual(status, 200, other)
        self.assertEqual(self.call("GET", "/api/v4/sources", other["access_token"])[0], 204)
        status, _ = self.call("POST", "/api/v4/sources", other["access_token"], [{"name": "L", "external_id": "line-1"}])
        self.assertEqual(status, 200)
        everything = self.fake.admin("GET", f"sources?subdomain={sub}")[1]["sources"]
        self.assertEqual(sorted(s["client_id"] for s in everything), sorted([KOMMO_CLIENT, "other-integration"]))


if __name__ == "__main__":
    unittest.main(verbosity=2)
