"""Fake of Kommo's Chat API ("amojo") that verifies request signatures the way
Kommo does, answers the routes the bridge uses, and refuses what Kommo refuses:
nameless users, message content a type needs, an unknown `conversation_ref_id`,
an edit or a reaction of a message it never took.

    python fake_amojo.py --port 0 --secret CHANNEL_SECRET [--verbose]

Prints `READY <port>`; see common.py for the /__admin/ API, plus:
  POST /__admin/kommo_chat  {"scope"}: a chat a manager started in Kommo ("write
                            first"), no integration conversation bound yet; answers
                            {"chat_id", "client_id"} (Kommo's ids of the chat and of
                            the client, what the webhook names)
  GET  /__admin/state?scope=S  what the fake holds for the scope, never message text:
                            {"chats": {chat_id: {"conversation_ids", "started_in_kommo",
                            "messages": [integration msgids]}}, "messages": {msgid:
                            {"kommo_msgid", "chat_id", "edits", "type"}}, "reactions":
                            [{"type", "emoji", "msgid" | "id", "user", "chat_id"}]}
                            (scope absent or empty: 400)
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import uuid
from functools import partial
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable

from common import AdminRoute, BadAdminRequest, FakeService, Reply, Request, admin_json, json_reply, run

API_PREFIX = "/v2/origin/custom/"
MAX_DATE_SKEW = timedelta(minutes=15)
DELIVERY_STATUSES = {1, 2, -1}  # delivered, read, error
DELIVERY_ERROR_CODES = range(901, 906)

INVALID_SIGNATURE_BODY = (
    b'{"status":0,"error_code":403,"error_type":"ORIGIN_INVALID_SIGNATURE",'
    b'"error_description":"invalid signature"}'
)


def content_md5(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()


def kommo_signature(
    secret: str, method: str, md5_hex: str, content_type: str, date: str, path: str
) -> str:
    """Lowercase hex HMAC-SHA1 over Kommo's newline-joined string to sign."""
    message = "\n".join([method.upper(), md5_hex, content_type, date, path])
    return hmac.new(secret.encode("ascii"), message.encode(), hashlib.sha1).hexdigest()


def kommo_error(status: int, error_type: str, description: str) -> Reply:
    return json_reply(
        status,
        {"status": 0, "error_code": status, "error_type": error_type, "error_description": description},
    )


class BadRequest(Exception):
    """The JSON body is malformed or misses a required field."""


class NotFound(Exception):
    """The request names a message Kommo does not have."""


MEDIA_TYPES = {"picture", "video", "file", "voice", "audio", "sticker"}
NAMED_MEDIA_TYPES = {"picture", "video", "file"}


def _check_content(message: dict, prefix: str) -> None:
    """What each message type needs, as Kommo's import documentation lists it."""
    kind = _get(message, "type", str, prefix)
    if kind == "text":
        _get(message, "text", str, prefix)
    elif kind in MEDIA_TYPES:
        _get(message, "media", str, prefix)
    elif kind == "location":
        location = _get(message, "location", dict, prefix)
        for key in ("lat", "lon"):
            value = location.get(key)
            if type(value) not in (int, float):
                raise BadRequest(f"{prefix}location.{key} must be a number")
    elif kind == "contact":
        # Kommo's Russian reference requires both.
        contact = _get(message, "contact", dict, prefix)
        _get(contact, "name", str, f"{prefix}contact.")
        _get(contact, "phone", str, f"{prefix}contact.")


def _check_file(message: dict, prefix: str) -> None:
    """A file, picture or video carries its file_name and file_size (Kommo's Russian
    reference); other types need neither."""
    if message.get("type") in NAMED_MEDIA_TYPES:
        _get(message, "file_name", str, prefix)
        size = message.get("file_size")
        if type(size) is not int or size < 0:
            raise BadRequest(f"{prefix}file_size must be an integer of at least 0")


def _check_source(obj: dict, prefix: str) -> None:
    """Kommo's `source`, when given: an object whose `external_id` is 1 to 40 printable ASCII
    characters."""
    if "source" not in obj:
        return
    external_id = _get(_get(obj, "source", dict, prefix), "external_id", str, f"{prefix}source.")
    if len(external_id) > 40 or not all(" " <= ch <= "~" for ch in external_id):
        raise BadRequest(f"{prefix}source.external_id must be at most 40 printable ASCII characters")


def _get(obj: Any, key: str, kind: type, prefix: str) -> Any:
    """obj[key], checked to be of `kind`; strings must be non-empty and bools
    do not count as integers. `prefix` locates obj in error messages."""
    value = obj.get(key) if isinstance(obj, dict) else None
    if kind is int:
        valid = type(value) is int
    elif kind is str:
        valid = isinstance(value, str) and value != ""
    else:
        valid = isinstance(value, kind)
    if not valid:
        expected = {str: "a non-empty string", int: "an integer", dict: "an object"}[kind]
        raise BadRequest(f"{prefix}{key} must be {expected}")
    return value


def _one_message_key(obj: dict, prefix: str) -> tuple[str, str]:
    """A message named by exactly one of `msgid` (the integration's id) and `id` (Kommo's),
    a non-empty string."""
    named = [key for key in ("msgid", "id") if key in obj]
    if len(named) != 1:
        raise BadRequest(f"{prefix or 'the body '}needs exactly one of msgid and id")
    return named[0], _get(obj, named[0], str, prefix)


def _new_message_answer(known: dict, ref_id: str) -> dict:
    """Kommo's `new_message` answer to an import (or an edit) of a message."""
    return {
        "conversation_id": known["chat_id"],
        "sender_id": known["sender_id"],
        "receiver_id": "",
        "msgid": known["kommo_msgid"],
        "ref_id": ref_id,
    }


class Amojo(FakeService):
    def __init__(self, secret: str) -> None:
        if not secret.isascii():
            raise ValueError("must be ASCII")
        self.secret = secret
        self._lock = threading.Lock()
        # Per scope: conversation_id -> chat id (several ids may name one chat),
        # chat id -> {"started_in_kommo", "messages"}, client user id -> amojo user id,
        # integrator msgid -> {"kommo_msgid", "chat_id", "edits", "type", "sender_id"}
        # (Kommo deduplicates imports), and the reactions taken. Message text is never kept.
        self._chats: dict[str, dict[str, str]] = {}
        self._chat_info: dict[str, dict[str, dict]] = {}
        self._users: dict[str, dict[str, str]] = {}
        self._messages: dict[str, dict[str, dict]] = {}
        self._reactions: dict[str, list[dict]] = {}

    def scope_of(self, req: Request) -> str:
        if not req.path.startswith(API_PREFIX):
            return ""
        return req.path[len(API_PREFIX):].split("/", 1)[0]

    def verify(self, req: Request) -> str | None:
        content_type = req.headers.get("content-type")
        if content_type != "application/json":
            return f"Content-Type is {content_type!r}, expected 'application/json'"

        md5_header = req.headers.get("content-md5")
        if md5_header is None:
            return "missing Content-MD5"
        if md5_header != content_md5(req.raw_body):
            return "Content-MD5 is not the lowercase hex MD5 of the body"

        date = req.headers.get("date")
        if date is None:
            return "missing Date"
        try:
            sent_at = parsedate_to_datetime(date)
        except (TypeError, ValueError):
            return f"Date {date!r} is not RFC 2822"
        if not date.endswith("+0000"):
            return f"Date {date!r} does not use the +0000 offset"
        skew = abs(datetime.now(timezone.utc) - sent_at)
        if skew > MAX_DATE_SKEW:
            return f"Date is {skew.total_seconds():.0f}s away from now (max {MAX_DATE_SKEW})"

        provided = req.headers.get("x-signature")
        if provided is None:
            return "missing X-Signature"
        expected = kommo_signature(self.secret, req.method, md5_header, content_type, date, req.path)
        # Bytes, since compare_digest refuses non-ASCII str.
        if not hmac.compare_digest(expected.encode(), provided.encode("utf-8", "replace")):
            return "X-Signature mismatch"
        return None

    def reject(self, req: Request, error: str) -> Reply:
        return Reply(403, INVALID_SIGNATURE_BODY, {"Content-Type": "application/json"})

    def answer(self, req: Request, scope: str) -> Reply:
        handler = self._route(req)
        if handler is None:
            return kommo_error(404, "NOT_FOUND", f"no route {req.method} {req.path}")
        try:
            body = req.json_body()
        except ValueError:
            return kommo_error(400, "BAD_REQUEST", "body is not valid JSON")
        if not isinstance(body, dict):
            return kommo_error(400, "BAD_REQUEST", "body must be a JSON object")
        try:
            with self._lock:
                return handler(body, scope)
        except BadRequest as exc:
            return kommo_error(400, "BAD_REQUEST", str(exc))
        except NotFound as exc:
            return kommo_error(404, "NOT_FOUND", str(exc))

    def _route(self, req: Request) -> Callable[[dict, str], Reply] | None:
        if not req.path.startswith(API_PREFIX):
            return None
        scope, *rest = req.path[len(API_PREFIX):].split("/")
        if not scope:
            return None
        match req.method, rest:
            case "POST", ["connect"]:
                return self._connect
            case "DELETE", ["disconnect"]:
                return self._disconnect
            case "POST", ["chats"]:
                return self._chats_route
            case "POST", []:
                return self._new_message
            case "POST", ["typing"]:
                return self._typing
            case "POST", ["react"]:
                return self._react
            case "POST", [msgid, "delivery_status"] if msgid:
                return partial(self._delivery_status, msgid=msgid)
        return None

    # Routes. For connect/disconnect the scope is the channel id.

    def _connect(self, body: dict, channel_id: str) -> Reply:
        account_id = _get(body, "account_id", str, "")
        title = _get(body, "title", str, "")
        if body.get("hook_api_version") != "v2":
            raise BadRequest('hook_api_version must be "v2"')
        return json_reply(
            200,
            {
                "account_id": account_id,
                "scope_id": f"{channel_id}_{account_id}",
                "title": title,
                "hook_api_version": "v2",
            },
        )

    def _disconnect(self, body: dict, channel_id: str) -> Reply:
        _get(body, "account_id", str, "")
        return json_reply(200, {})

    def _chats_route(self, body: dict, scope: str) -> Reply:
        conversation_id = _get(body, "conversation_id", str, "")
        user = _get(body, "user", dict, "")
        client_id = _get(user, "id", str, "user.")
        name = _get(user, "name", str, "user.")
        _check_source(body, "")
        answer_user = {"id": self._user_id(scope, client_id), "client_id": client_id, "name": name}
        # Kommo echoes the avatar and flattens the profile's contact fields.
        if isinstance(user.get("avatar"), str):
            answer_user["avatar"] = user["avatar"]
        profile = user.get("profile")
        if isinstance(profile, dict):
            answer_user.update({k: profile[k] for k in ("phone", "email") if isinstance(profile.get(k), str)})
        return json_reply(200, {"id": self._chat_id(scope, conversation_id), "user": answer_user})

    def _new_message(self, body: dict, scope: str) -> Reply:
        if body.get("event_type") == "edit_message":
            return self._edit_message(body, scope)
        if body.get("event_type") != "new_message":
            raise BadRequest('event_type must be "new_message" or "edit_message"')
        payload = _get(body, "payload", dict, "")
        _get(payload, "timestamp", int, "payload.")
        _get(payload, "msec_timestamp", int, "payload.")
        ref_id = _get(payload, "msgid", str, "payload.")
        conversation_id = _get(payload, "conversation_id", str, "payload.")
        sender = _get(payload, "sender", dict, "payload.")
        sender_id = _get(sender, "id", str, "payload.sender.")
        # Kommo requires the sender's name on import, as on chat creation.
        _get(sender, "name", str, "payload.sender.")
        # Kommo's id of the client (on a chat a manager started), when given.
        sender_ref_id = _get(sender, "ref_id", str, "payload.sender.") if "ref_id" in sender else None
        _check_source(payload, "payload.")
        message = _get(payload, "message", dict, "payload.")
        _check_content(message, "payload.message.")
        _check_file(message, "payload.message.")
        if "reply_to" in payload:
            self._check_reply_to(payload, scope)

        # Everything is checked before anything is stored: a refused import leaves no trace.
        bound = self._chats.get(scope, {}).get(conversation_id)
        if "conversation_ref_id" in payload:
            # A reply in a chat Kommo has (one a manager started, or one made before): the
            # integration's id is bound to that chat rather than opening a new one.
            chat_id = _get(payload, "conversation_ref_id", str, "payload.")
            if chat_id not in self._chat_info.get(scope, {}):
                raise BadRequest("unknown conversation_ref_id")
            if bound is not None and bound != chat_id:
                raise BadRequest("payload.conversation_id is bound to another chat than conversation_ref_id")
        else:
            chat_id = bound  # None: a new chat
        known = self._messages.get(scope, {}).get(ref_id)
        if known is not None and known["chat_id"] != chat_id:
            raise BadRequest("this msgid was imported into another chat")

        if chat_id is None:
            chat_id = self._new_chat(scope, started_in_kommo=False)
        self._chats.setdefault(scope, {})[conversation_id] = chat_id
        if known is None:
            known = {
                "kommo_msgid": str(uuid.uuid4()),
                "chat_id": chat_id,
                "edits": 0,
                "type": message["type"],
                # Kept for the answers, never shown by /__admin/state.
                "sender_id": sender_ref_id or self._user_id(scope, sender_id),
            }
            self._messages.setdefault(scope, {})[ref_id] = known
            self._chat_info[scope][chat_id]["messages"].append(ref_id)
        return json_reply(200, {"new_message": _new_message_answer(known, ref_id)})

    def _edit_message(self, body: dict, scope: str) -> Reply:
        payload = _get(body, "payload", dict, "")
        _get(payload, "timestamp", int, "payload.")
        _get(payload, "msec_timestamp", int, "payload.")
        ref_id = _get(payload, "msgid", str, "payload.")
        conversation_id = _get(payload, "conversation_id", str, "payload.")
        message = _get(payload, "message", dict, "payload.")
        known = self._messages.get(scope, {}).get(ref_id)
        if known is None:
            raise NotFound("payload.msgid names no message imported here")
        if self._chats.get(scope, {}).get(conversation_id) != known["chat_id"]:
            raise BadRequest("the message is not in this conversation")
        # Media, file_name and file_size may be left out when the file is unchanged: an edit of
        # the caption of a file of the same type.
        same_type = message.get("type") == known["type"]
        caption_only = "media" not in message and same_type and known["type"] in NAMED_MEDIA_TYPES
        if not caption_only:
            _check_content(message, "payload.message.")
            _check_file(message, "payload.message.")
        known["edits"] += 1
        known["type"] = message.get("type")
        return json_reply(200, {"new_message": _new_message_answer(known, ref_id)})

    def _check_reply_to(self, payload: dict, scope: str) -> None:
        """`reply_to: {"message": {"msgid"} | {"id"}}`: the integration's id of a message
        imported here, or Kommo's id of any message (the tests invent managers' ids)."""
        reply_to = _get(payload, "reply_to", dict, "payload.")
        message = _get(reply_to, "message", dict, "payload.reply_to.")
        key, value = _one_message_key(message, "payload.reply_to.message.")
        if key == "msgid" and value not in self._messages.get(scope, {}):
            raise BadRequest("unknown reply_to message")
        # Kommo's id of a message of another account's chats is not one this account has.
        elsewhere = (known["kommo_msgid"] for other, messages in self._messages.items() if other != scope
                     for known in messages.values())
        if key == "id" and value in elsewhere:
            raise BadRequest("unknown reply_to message")

    def _typing(self, body: dict, scope: str) -> Reply:
        conversation_id = _get(body, "conversation_id", str, "")
        sender = _get(body, "sender", dict, "")
        _get(sender, "id", str, "sender.")
        # Kommo shows typing only in a chat it has, named by the integration's id bound to it.
        if conversation_id not in self._chats.get(scope, {}):
            raise NotFound("no chat has this conversation_id")
        return Reply(204)

    def _react(self, body: dict, scope: str) -> Reply:
        kind = body.get("type")
        if kind not in ("react", "unreact"):
            raise BadRequest('type must be "react" or "unreact"')
        if kind == "react":
            _get(body, "emoji", str, "")
        elif body.get("emoji") is not None and not isinstance(body["emoji"], str):
            raise BadRequest("emoji must be a string")
        if "conversation_id" not in body and "conversation_ref_id" not in body:
            raise BadRequest("conversation_id or conversation_ref_id is required")
        chat_id = None
        if "conversation_ref_id" in body:
            chat_id = _get(body, "conversation_ref_id", str, "")
            if chat_id not in self._chat_info.get(scope, {}):
                raise BadRequest("unknown conversation_ref_id")
        if "conversation_id" in body:
            bound = self._chats.get(scope, {}).get(_get(body, "conversation_id", str, ""))
            if bound is not None and chat_id is not None and bound != chat_id:
                raise BadRequest("conversation_id is bound to another chat than conversation_ref_id")
            # An id not bound to any chat is fine next to a known conversation_ref_id.
            chat_id = chat_id or bound
            if chat_id is None:
                raise NotFound("no chat has this conversation_id")
        key, value = _one_message_key(body, "")
        if key == "msgid":
            known = self._messages.get(scope, {}).get(value)
            if known is None:
                raise NotFound("msgid names no message imported here")
            if known["chat_id"] != chat_id:
                raise BadRequest("the message is not in this conversation")
        user = _get(body, "user", dict, "")
        if not any(isinstance(user.get(k), str) and user[k] for k in ("id", "ref_id")):
            raise BadRequest("user.id or user.ref_id is required")
        reaction = {"type": kind, "emoji": body.get("emoji"), key: value, "user": user, "chat_id": chat_id}
        self._reactions.setdefault(scope, []).append(reaction)
        return json_reply(200, {})

    def _delivery_status(self, body: dict, scope: str, msgid: str) -> Reply:
        if _get(body, "msgid", str, "") != msgid:
            raise BadRequest("msgid in the body differs from the one in the path")
        status = body.get("delivery_status")
        if type(status) is not int or status not in DELIVERY_STATUSES:
            raise BadRequest("delivery_status must be one of 1, 2, -1")
        # A JSON null counts as an absent field.
        error_code = body.get("error_code")
        error = body.get("error")
        if error_code is not None:
            if status != -1:
                raise BadRequest("error_code is only allowed with delivery_status -1")
            if type(error_code) is not int or error_code not in DELIVERY_ERROR_CODES:
                raise BadRequest("error_code must be an integer in 901..905")
        if error is not None and not isinstance(error, str):
            raise BadRequest("error must be a string")
        # Kommo's Russian status table requires the text with every -1, 901-904 included.
        if status == -1 and not (isinstance(error, str) and error.strip()):
            raise BadRequest("delivery_status -1 requires a non-empty error text")
        return json_reply(200, {})

    # Helpers; the caller holds the lock.

    def _chat_id(self, scope: str, conversation_id: str) -> str:
        chats = self._chats.setdefault(scope, {})
        if conversation_id not in chats:
            chats[conversation_id] = self._new_chat(scope, started_in_kommo=False)
        return chats[conversation_id]

    def _new_chat(self, scope: str, started_in_kommo: bool) -> str:
        chat_id = str(uuid.uuid4())
        info = {"started_in_kommo": started_in_kommo, "messages": []}
        self._chat_info.setdefault(scope, {})[chat_id] = info
        return chat_id

    def _user_id(self, scope: str, client_id: str) -> str:
        return self._users.setdefault(scope, {}).setdefault(client_id, str(uuid.uuid4()))

    # Admin routes.

    def admin_routes(self) -> dict[tuple[str, str], AdminRoute]:
        return {("POST", "/__admin/kommo_chat"): self._admin_kommo_chat, ("GET", "/__admin/state"): self._admin_state}

    def _admin_kommo_chat(self, req: Request) -> Reply:
        scope = admin_json(req).get("scope")
        if not isinstance(scope, str) or not scope:
            raise BadAdminRequest("scope must be a non-empty string")
        with self._lock:
            chat_id = self._new_chat(scope, started_in_kommo=True)
        return json_reply(200, {"chat_id": chat_id, "client_id": str(uuid.uuid4())})

    def _admin_state(self, req: Request) -> Reply:
        scope = req.query_param("scope")
        if not scope:
            raise BadAdminRequest("?scope= is required")
        with self._lock:
            chats = {
                chat_id: {
                    "conversation_ids": sorted(c for c, bound in self._chats.get(scope, {}).items() if bound == chat_id),
                    "started_in_kommo": info["started_in_kommo"],
                    "messages": list(info["messages"]),
                }
                for chat_id, info in self._chat_info.get(scope, {}).items()
            }
            messages = {
                msgid: {key: known[key] for key in ("kommo_msgid", "chat_id", "edits", "type")}
                for msgid, known in self._messages.get(scope, {}).items()
            }
            reactions = [{**r, "user": dict(r["user"])} for r in self._reactions.get(scope, [])]
        return json_reply(200, {"chats": chats, "messages": messages, "reactions": reactions})


if __name__ == "__main__":
    run("Fake Kommo Chat API (amojo)", Amojo)
