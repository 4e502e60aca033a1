"""Fake of the integrator's chat service: receives the bridge's webhooks and
verifies them with the reference Standard Webhooks library.

    python fake_chat_service.py --port 0 --secret whsec_BASE64 [--verbose]

Prints `READY <port>`; see common.py for the /__admin/ API, plus
`POST /__admin/sign` here, which signs with the library so tests can check
that the bridge's verifier accepts what an independent implementation signs.

Every record carries `duplicate_id`: true when its webhook-id had already been
accepted for that scope. "Accepted" means a valid signature answered with a
2xx, so a retry after a scripted failure is not a duplicate.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone

from common import (
    AdminRoute,
    BadAdminRequest,
    FakeService,
    Reply,
    Request,
    admin_json,
    json_reply,
    run,
)
from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError, WebhookVerificationError

SIGNED_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class ChatService(FakeService):
    def __init__(self, secret: str) -> None:
        if not secret.startswith("whsec_"):
            raise ValueError("must look like whsec_<base64>")
        try:
            self.webhook = Webhook(secret)
        except (ValueError, EmptyWebhookSecretError) as exc:  # bad base64 or empty key
            raise ValueError(f"unusable webhook secret: {exc}") from None
        self._lock = threading.Lock()
        self._accepted_ids: dict[str, set[str]] = {}

    def scope_of(self, req: Request) -> str:
        try:
            body = req.json_body()
        except ValueError:
            return ""
        scope = body.get("scope_id") if isinstance(body, dict) else None
        return scope if isinstance(scope, str) else ""

    def verify(self, req: Request) -> str | None:
        headers = {name: req.headers[name] for name in SIGNED_HEADERS if name in req.headers}
        try:
            # The library checks the ±5 min timestamp tolerance and accepts any
            # of several space-separated "v1,<base64>" signatures.
            self.webhook.verify(req.raw_body, headers, json_parse=False)
        except WebhookVerificationError as exc:
            return str(exc)
        except ValueError as exc:  # malformed signature list, base64 or UTF-8
            return f"malformed webhook: {exc}"
        return None

    def reject(self, req: Request, error: str) -> Reply:
        return json_reply(401, {"error": {"code": "bad_signature", "message": error}})

    def answer(self, req: Request, scope: str) -> Reply:
        return json_reply(200, {})

    def annotate(self, record: dict, req: Request, reply: Reply) -> None:
        duplicate = False
        if record["signature_ok"]:
            msg_id = req.headers["webhook-id"]
            with self._lock:
                accepted = self._accepted_ids.setdefault(record["scope"], set())
                duplicate = msg_id in accepted
                if 200 <= reply.status < 300 and not reply.close:
                    accepted.add(msg_id)
        record["duplicate_id"] = duplicate

    def admin_routes(self) -> dict[tuple[str, str], AdminRoute]:
        return {("POST", "/__admin/sign"): self._sign}

    def _sign(self, req: Request) -> Reply:
        body = admin_json(req)
        msg_id, timestamp, payload = body.get("msg_id"), body.get("timestamp"), body.get("payload")
        if not isinstance(msg_id, str) or not msg_id:
            raise BadAdminRequest("msg_id must be a non-empty string")
        if type(timestamp) is not int:
            raise BadAdminRequest("timestamp must be an integer (unix seconds)")
        if not isinstance(payload, str):
            raise BadAdminRequest("payload must be a string")
        try:
            signed_at = datetime.fromtimestamp(timestamp, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise BadAdminRequest("timestamp is out of range") from None
        signature = self.webhook.sign(msg_id, signed_at, payload)
        return json_reply(
            200,
            {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature},
        )


if __name__ == "__main__":
    run("Fake chat service verifying Standard Webhooks", ChatService)
