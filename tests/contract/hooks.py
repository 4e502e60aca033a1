"""Schemathesis hooks for the contract fuzz run (tests/contract/run).

Every generated request is signed validly for its route, over the exact bytes sent, with the
secrets the dev server was started with (read from the same environment variables):

- POST /kommo/webhook/{scope_id}: X-Signature = hex HMAC-SHA1(KOMMO_CHANNEL_SECRET, body).
- POST /chat/events, GET /chat/presence, POST /_sink/chat: Standard Webhooks with
  CHAT_SERVICE_SECRET (webhook-id unique per request, webhook-timestamp now).
- /kommo/ui/...: X-Auth-Token = a Kommo one-time token (JWT HS256, KOMMO_INTEGRATION_SECRET)
  for an account listed in KOMMO_ACCOUNTS.
- /_sink/amojo/{path}: the amojo request signature (Date, Content-MD5, X-Signature).

Signing happens in a `requests` auth callable, which runs after requests has built the final
URL and body, so the signature covers the bytes on the wire. Ids are steered (deterministically,
from the generated values) towards this channel's scopes and a small pool of conversations, so
most bodies get past the scope check into the parsers and handlers, and state builds up between
requests.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import itertools
import json
import os
import threading
import time
import zlib
from typing import Any
from urllib.parse import urlsplit

import requests
import schemathesis

CHANNEL_ID = os.environ["KOMMO_CHANNEL_ID"]
CHANNEL_SECRET = os.environ["KOMMO_CHANNEL_SECRET"]
INTEGRATION_SECRET = os.environ["KOMMO_INTEGRATION_SECRET"]
CHAT_SECRET = os.environ["CHAT_SERVICE_SECRET"]
# numeric Kommo account id -> amojo account id
ACCOUNTS = [tuple(pair.split(":", 1)) for pair in os.environ["KOMMO_ACCOUNTS"].split(",") if pair]
SCOPES = [f"{CHANNEL_ID}_{amojo}" for _, amojo in ACCOUNTS]
UI_ORIGINS = ["https://acme.kommo.com", "http://localhost:5173"]
FOREIGN_ORIGIN = "https://evil.example.com"
# An account a valid token may name that KOMMO_ACCOUNTS does not list (403 account_not_linked).
UNLISTED_ACCOUNT = "99999999"
CONVERSATIONS = ["conv-1", "conv-2", "conv-3"]

_chat_key = base64.b64decode(CHAT_SECRET.removeprefix("whsec_"))
_ids = itertools.count(1)
_ids_lock = threading.Lock()
_run = os.urandom(4).hex()


def _webhook_id() -> str:
    with _ids_lock:
        return f"msg_contract_{_run}_{next(_ids)}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def one_time_token(account_id: str, user_id: int) -> str:
    now = int(time.time())
    header = _b64url(b'{"alg":"HS256","typ":"JWT"}')
    claims = {"iat": now, "nbf": now, "exp": now + 300, "account_id": int(account_id), "user_id": user_id}
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = _b64url(hmac.new(INTEGRATION_SECRET.encode(), signing_input, hashlib.sha256).digest())
    return f"{header}.{payload}.{signature}"


class Signer(requests.auth.AuthBase):
    """Signs a prepared request for its route, over its final body and path."""

    def __init__(self, template: str, ui_account: str, ui_user: int) -> None:
        self.template = template
        self.ui_account = ui_account
        self.ui_user = ui_user

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
            request.body = body
        headers = request.headers
        template = self.template
        if template.startswith("/kommo/webhook/"):
            headers["X-Signature"] = hmac.new(CHANNEL_SECRET.encode(), body, hashlib.sha1).hexdigest()
        elif template in ("/chat/events", "/chat/presence", "/_sink/chat"):
            msg_id, timestamp = _webhook_id(), str(int(time.time()))
            signed = f"{msg_id}.{timestamp}.".encode() + body
            signature = base64.b64encode(hmac.new(_chat_key, signed, hashlib.sha256).digest()).decode()
            headers["webhook-id"] = msg_id
            headers["webhook-timestamp"] = timestamp
            headers["webhook-signature"] = f"v1,{signature}"
        elif template.startswith("/kommo/ui/"):
            headers["X-Auth-Token"] = one_time_token(self.ui_account, self.ui_user)
        elif template.startswith("/_sink/amojo/"):
            path = urlsplit(request.url).path.removeprefix("/_sink/amojo")
            date = email.utils.formatdate(usegmt=True)
            md5 = hashlib.md5(body).hexdigest()
            to_sign = f"{request.method.upper()}\n{md5}\napplication/json\n{date}\n{path}"
            headers["Date"] = date
            headers["Content-MD5"] = md5
            headers["X-Signature"] = hmac.new(CHANNEL_SECRET.encode(), to_sign.encode(), hashlib.sha1).hexdigest()
        return request


class _Steer:
    """Deterministic choices for one case, drawn from everything generated for it (so the same
    seed makes the same choices, and a failing case replays identically when shrunk)."""

    def __init__(self, case) -> None:
        self.seed = repr((case.path_parameters, case.query, case.headers, case.body))

    def pick(self, tag: str, n: int) -> int:
        return zlib.crc32(f"{tag}|{self.seed}".encode("utf-8", "surrogatepass")) % n

    def scope(self, container: Any, key: str) -> str | None:
        """Points a generated scope id at one of this channel's scopes, for 7 cases in 8."""
        if not isinstance(container, dict) or not isinstance(container.get(key), str) or self.pick("s", 8) == 0:
            return None
        scope = SCOPES[self.pick("s#", len(SCOPES))]
        container[key] = scope
        return scope

    def conversation(self, container: Any, key: str) -> None:
        """Points a generated conversation id at a small shared pool, for half of the cases, so
        what one request records (a message, a presence window) is what another one reads."""
        if isinstance(container, dict) and isinstance(container.get(key), str) and self.pick("c" + key, 2) == 0:
            container[key] = CONVERSATIONS[self.pick("c#" + key, len(CONVERSATIONS))]


def _whole_numbers(value: Any) -> Any:
    """`584.0` -> `584`. Hypothesis may write an integer-valued float for `type: integer` (valid
    JSON Schema), which the bridge's serde parsing refuses as not an integer: a 400 that stops the
    body short of the handlers. See tests/contract/README.md."""
    if isinstance(value, float) and value.is_integer() and -(2**63) <= value < 2**63:
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


@schemathesis.hook
def before_call(context, case, kwargs):
    template = case.operation.path
    steer = _Steer(case)
    if isinstance(case.body, (dict, list)):
        case.body = _whole_numbers(case.body)
    body = case.body if isinstance(case.body, dict) else None
    ui_account, ui_user = ACCOUNTS[0][0], 42
    if template == "/kommo/webhook/{scope_id}":
        scope = steer.scope(case.path_parameters, "scope_id")
        if scope and body is not None and isinstance(body.get("account_id"), str):
            body["account_id"] = scope.removeprefix(f"{CHANNEL_ID}_")
        if body is not None:
            # `message` wins over `action` and generated bodies often carry both: drop it from
            # half of those, so typing webhooks reach their handler as often as messages do.
            if "message" in body and "action" in body and steer.pick("k", 2) == 0:
                del body["message"]
            message, action = body.get("message"), body.get("action")
            if isinstance(message, dict):
                steer.conversation(message.get("conversation"), "client_id")
            if isinstance(action, dict) and isinstance(action.get("typing"), dict):
                typing = action["typing"]
                steer.conversation(typing.get("conversation"), "client_id")
                # Generated expiries are mostly long past (ignored): make half of them live, as
                # Kommo sends them (5 s ahead), so typing leases start, refresh and lapse.
                if type(typing.get("expired_at")) is int and steer.pick("t", 2) == 0:
                    typing["expired_at"] = int(time.time()) + 5
    elif template == "/chat/events":
        steer.scope(body, "scope_id")
        steer.conversation(body, "conversation_id")
    elif template == "/chat/presence":
        steer.scope(case.query, "scope_id")
        steer.conversation(case.query, "conversation_id")
    elif template.startswith("/kommo/ui/"):
        steer.conversation(case.path_parameters, "conversation_id")
        # A valid token; 1 in 10 names an account KOMMO_ACCOUNTS does not list (403).
        account = steer.pick("a", 10)
        ui_account = UNLISTED_ACCOUNT if account == 0 else ACCOUNTS[account % len(ACCOUNTS)][0]
        ui_user = 40 + steer.pick("u", 3)
        # Origin: an allowed one mostly, a foreign one or the generated one otherwise.
        headers = dict(case.headers or {})
        origin = steer.pick("o", 4)
        if origin == 1:
            headers["Origin"] = FOREIGN_ORIGIN
        elif origin > 1:
            headers["Origin"] = UI_ORIGINS[origin % len(UI_ORIGINS)]
        case.headers = headers
    kwargs["auth"] = Signer(template, ui_account, ui_user)
