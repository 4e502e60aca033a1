"""Fake of Kommo's Chat API ("amojo") that verifies request signatures the way
Kommo does and answers the routes the bridge uses.

    python fake_amojo.py --port 0 --secret CHANNEL_SECRET [--verbose]

Prints `READY <port>`; see common.py for the /__admin/ API.
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

from common import FakeService, Reply, Request, json_reply, run

API_PREFIX = "/v2/origin/custom/"
MAX_DATE_SKEW = timedelta(minutes=15)
DELIVERY_STATUSES = {1, 2, -1}  # delivered, read, error
DELIVERY_ERROR_CODES = range(901, 906)
OTHER_ERROR_CODE = 905  # "other error": must come with an error text

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


class Amojo(FakeService):
    def __init__(self, secret: str) -> None:
        if not secret.isascii():
            raise ValueError("must be ASCII")
        self.secret = secret
        self._lock = threading.Lock()
        # Per scope: conversation_id -> chat id, client user id -> amojo user id,
        # integrator msgid -> Kommo msgid (Kommo deduplicates imports).
        self._chats: dict[str, dict[str, str]] = {}
        self._users: dict[str, dict[str, str]] = {}
        self._msgids: dict[str, dict[str, str]] = {}

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
            return handler(body, scope)
        except BadRequest as exc:
            return kommo_error(400, "BAD_REQUEST", str(exc))

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
        if body.get("event_type") != "new_message":
            raise BadRequest('event_type must be "new_message"')
        payload = _get(body, "payload", dict, "")
        _get(payload, "timestamp", int, "payload.")
        _get(payload, "msec_timestamp", int, "payload.")
        ref_id = _get(payload, "msgid", str, "payload.")
        conversation_id = _get(payload, "conversation_id", str, "payload.")
        sender = _get(payload, "sender", dict, "payload.")
        sender_id = _get(sender, "id", str, "payload.sender.")
        # Kommo requires the sender's name on import, as on chat creation.
        _get(sender, "name", str, "payload.sender.")
        _check_source(payload, "payload.")
        message = _get(payload, "message", dict, "payload.")
        _get(message, "type", str, "payload.message.")
        with self._lock:
            msgid = self._msgids.setdefault(scope, {}).setdefault(ref_id, str(uuid.uuid4()))
        return json_reply(
            200,
            {
                "new_message": {
                    "conversation_id": self._chat_id(scope, conversation_id),
                    "sender_id": self._user_id(scope, sender_id),
                    "receiver_id": "",
                    "msgid": msgid,
                    "ref_id": ref_id,
                }
            },
        )

    def _typing(self, body: dict, scope: str) -> Reply:
        _get(body, "conversation_id", str, "")
        sender = _get(body, "sender", dict, "")
        _get(sender, "id", str, "sender.")
        return Reply(204)

    def _react(self, body: dict, scope: str) -> Reply:
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
        if error_code == OTHER_ERROR_CODE and not error:
            raise BadRequest("error_code 905 requires a non-empty error text")
        return json_reply(200, {})

    def _chat_id(self, scope: str, conversation_id: str) -> str:
        with self._lock:
            return self._chats.setdefault(scope, {}).setdefault(conversation_id, str(uuid.uuid4()))

    def _user_id(self, scope: str, client_id: str) -> str:
        with self._lock:
            return self._users.setdefault(scope, {}).setdefault(client_id, str(uuid.uuid4()))


if __name__ == "__main__":
    run("Fake Kommo Chat API (amojo)", Amojo)
