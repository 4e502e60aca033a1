"""The CRM part of the fake Kommo (fake_kommo.py): contacts, their links to Chat API chats, and
the integration's sources, with Kommo's shapes and refusals. fake_kommo.py authenticates every
request (a live Bearer token of the account) and hands these routes the token's account and
client id; see fake_kommo.py for accounts, tokens, recording, scripts and faults.

Routes (Bearer; JSON answers; Kommo's problem JSON on a refusal):
  GET   /api/v4/contacts/chats?chat_id=C | ?contact_id=N   exactly one of the two (else 400)
        200 {"_total_items", "_embedded": {"chats": [{"chat_id", "contact_id", "id"}]}};
        204 with no body when there is no link (as Kommo's lists answer an empty result)
  GET   /api/v4/contacts/{id}   200 the contact {"id", "name", "first_name", "last_name",
        "responsible_user_id", "created_at", "updated_at", "custom_fields_values": null | [
        {"field_id", "field_name", "field_code", "field_type", "values": [{"value", "enum_id",
        "enum_code"}]}], "account_id", "_links", "_embedded"}; 204 when the account has none
  PATCH /api/v4/contacts/{id}   {"name"?, "first_name"?, "last_name"?, "custom_fields_values"?:
        [{"field_id" | "field_code", "values": [{"value", "enum_code"? | "enum_id"?}]}]}:
        a field given replaces its values whole (a multitext value without enum gets WORK).
        200 {"id", "name", "updated_at", "account_id", "_links"}; 404 when there is no such
        contact; 400 (validation errors, nothing changed) for a body that is not an object, a
        key the fake does not know, an empty name, an unknown field, a value that is not a
        non-empty string, an enum_code the field does not have (PHONE: WORK WORKDD MOB FAX HOME
        OTHER; EMAIL: WORK PRIV OTHER)
  GET   /api/v4/sources   this integration's sources in the account (the token's client id):
        200 {"_total_items", "_embedded": {"sources": [{"id", "name", "pipeline_id",
        "external_id", "default", "origin_code", "services"}]}}; 204 when it has none
  POST  /api/v4/sources   [{"name", "external_id", "pipeline_id"?, "default"?, "origin_code"?,
        "services"?}, ...] 200 the created sources as above (with "request_id"); 400
        (validation errors, nothing created) for a body that is not a non-empty array of
        objects, a missing or empty name or external_id, an external_id the integration has
        already (or twice in the request), an origin_code of more than 20 characters or only
        digits, or more than MAX_SOURCES sources for the integration in the account
Validation errors are Kommo's: 400 {"validation-errors": [{"request_id", "errors": [{"code",
"path", "detail"}]}], "title": "Bad Request", "type", "status": 400, "detail"}.

Admin routes:
  POST /__admin/contacts   {"subdomain", "name", "phone"?, "email"?, "chat_id"?}: a contact, as
                           Kommo makes one for an incoming chat, linked to the Chat API chat
                           `chat_id` when given; answers the contact as GET answers it
  GET  /__admin/contacts?subdomain=S&id=N   the contact (404 if none)
  GET  /__admin/sources?subdomain=S   {"sources": [every source of the account, with its
                           "client_id"]}
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any, Callable

from common import AdminRoute, BadAdminRequest, Reply, Request, admin_error, admin_json, json_reply

CONTACTS_CHATS_PATH = "/api/v4/contacts/chats"
CONTACT_PATH = re.compile(r"/api/v4/contacts/(\d+)")
SOURCES_PATH = "/api/v4/sources"
PROBLEM_TYPE = "https://httpstatus.example.com/"
# Kommo's sources page says one integration creates up to 50 sources (its newer reference says
# 100): the stricter reading.
MAX_SOURCES = 50
MAX_ORIGIN_CODE = 20
MAIN_PIPELINE_BASE = 7_000_000

# The account's built-in contact fields: code -> (id, name, type, enum codes).
FIELDS: dict[str, tuple[int, str, str, tuple[str, ...]]] = {
    "PHONE": (1001, "Phone", "multitext", ("WORK", "WORKDD", "MOB", "FAX", "HOME", "OTHER")),
    "EMAIL": (1002, "Email", "multitext", ("WORK", "PRIV", "OTHER")),
    "POSITION": (1003, "Position", "text", ()),
}
FIELDS_BY_ID = {spec[0]: code for code, spec in FIELDS.items()}
PATCH_KEYS = {"name", "first_name", "last_name", "custom_fields_values", "request_id", "updated_at", "updated_by"}
SOURCE_KEYS = {"name", "external_id", "pipeline_id", "default", "origin_code", "services", "request_id"}


def problem(status: int, title: str, detail: str) -> Reply:
    return json_reply(status, {"title": title, "type": f"{PROBLEM_TYPE}{status}", "status": status, "detail": detail})


def validation_error(errors: list[tuple[str, str, str]], request_id: str = "0") -> Reply:
    """Kommo's 400 for a body it refuses: (code, path, detail) each."""
    listed = [{"code": code, "path": path, "detail": detail} for code, path, detail in errors]
    body = {
        "validation-errors": [{"request_id": request_id, "errors": listed}],
        "title": "Bad Request",
        "type": f"{PROBLEM_TYPE}400",
        "status": 400,
        "detail": "Request validation failed",
    }
    return json_reply(400, body)


class Crm:
    """Contacts, chat links and sources of every account; guarded by the fake's lock."""

    def __init__(self, lock: threading.Lock, accounts: dict[str, Any]) -> None:
        self._lock = lock
        self._accounts = accounts  # fake_kommo's, by subdomain
        self._contacts: dict[str, dict[int, dict]] = {}  # subdomain -> id -> contact
        self._links: dict[str, dict[str, tuple[int, int]]] = {}  # subdomain -> chat_id -> (link id, contact id)
        self._sources: dict[str, list[dict]] = {}  # subdomain -> sources (each with its client_id)
        self._next_id = 5_000_001

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # The API routes; fake_kommo calls these with its lock held, for the token's account.

    @staticmethod
    def handles(req: Request) -> bool:
        return (
            req.path in (CONTACTS_CHATS_PATH, SOURCES_PATH) or CONTACT_PATH.fullmatch(req.path) is not None
        )

    def answer(self, req: Request, account: Any, client_id: str) -> Reply:
        if req.path == CONTACTS_CHATS_PATH and req.method == "GET":
            return self._chat_links(req, account)
        if req.path == SOURCES_PATH and req.method == "GET":
            return self._list_sources(account, client_id)
        if req.path == SOURCES_PATH and req.method == "POST":
            return self._add_sources(req, account, client_id)
        match = CONTACT_PATH.fullmatch(req.path)
        if match and req.method == "GET":
            contact = self._contacts.get(account.subdomain, {}).get(int(match.group(1)))
            return json_reply(200, self._contact_answer(account, contact)) if contact else Reply(204)
        if match and req.method == "PATCH":
            return self._patch_contact(req, account, int(match.group(1)))
        return problem(405, "Method Not Allowed", f"{req.method} is not allowed on {req.path}")

    def _chat_links(self, req: Request, account: Any) -> Reply:
        chat_id, contact_id = req.query_param("chat_id"), req.query_param("contact_id")
        if (chat_id is None) == (contact_id is None):
            return problem(400, "Bad Request", "name exactly one of chat_id and contact_id")
        links = self._links.get(account.subdomain, {})
        if chat_id is not None:
            found = [(chat_id, link) for chat, link in links.items() if chat == chat_id]
        else:
            if not contact_id.isascii() or not contact_id.isdigit():
                return problem(400, "Bad Request", "contact_id must be an integer")
            found = [(chat, link) for chat, link in links.items() if link[1] == int(contact_id)]
        if not found:
            return Reply(204)
        chats = [{"chat_id": chat, "contact_id": contact, "id": link_id} for chat, (link_id, contact) in found]
        return json_reply(200, {"_total_items": len(chats), "_embedded": {"chats": chats}})

    def _contact_answer(self, account: Any, contact: dict) -> dict:
        fields = []
        for code, values in contact["fields"].items():
            field_id, name, kind, _ = FIELDS[code]
            listed = [
                {"value": value, **({"enum_id": 3000 + FIELDS[code][3].index(enum), "enum_code": enum} if enum else {})}
                for value, enum in values
            ]
            fields.append({"field_id": field_id, "field_name": name, "field_code": code, "field_type": kind, "values": listed})
        return {
            "id": contact["id"],
            "name": contact["name"],
            "first_name": contact["first_name"],
            "last_name": contact["last_name"],
            "responsible_user_id": account.users[0]["id"],
            "group_id": 0,
            "created_by": 0,
            "updated_by": 0,
            "created_at": contact["created_at"],
            "updated_at": contact["updated_at"],
            "closest_task_at": None,
            "is_deleted": False,
            "custom_fields_values": fields or None,
            "account_id": account.id,
            "_links": {"self": {"href": f"https://{account.host}/api/v4/contacts/{contact['id']}"}},
            "_embedded": {"tags": [], "companies": []},
        }

    def _patch_contact(self, req: Request, account: Any, contact_id: int) -> Reply:
        contact = self._contacts.get(account.subdomain, {}).get(contact_id)
        if contact is None:
            return problem(404, "Not Found", f"no contact {contact_id}")
        try:
            body = req.json_body()
        except ValueError:
            return problem(400, "Bad Request", "the body is not JSON")
        if not isinstance(body, dict):
            return validation_error([("InvalidType", "", "the body must be an object")])
        errors: list[tuple[str, str, str]] = []
        for key in sorted(set(body) - PATCH_KEYS):
            errors.append(("NotSupported", key, "this key is not taken"))
        for key in ("name", "first_name", "last_name"):
            if key in body and (not isinstance(body[key], str) or (key == "name" and not body[key].strip())):
                errors.append(("InvalidType", key, f"{key} must be a non-empty string"))
        fields: dict[str, list[tuple[str, str | None]]] = {}
        custom = body.get("custom_fields_values", [])
        if not isinstance(custom, list):
            errors.append(("InvalidType", "custom_fields_values", "must be an array"))
            custom = []
        for n, field in enumerate(custom):
            path = f"custom_fields_values.{n}"
            code = self._field_code(field)
            if code is None:
                errors.append(("NotSupportedChoice", f"{path}.field_code", "not a field of contacts"))
                continue
            values = field.get("values")
            if not isinstance(values, list):
                errors.append(("InvalidType", f"{path}.values", "must be an array"))
                continue
            enums = FIELDS[code][3]
            kept: list[tuple[str, str | None]] = []
            for m, item in enumerate(values):
                vpath = f"{path}.values.{m}"
                if not isinstance(item, dict) or not isinstance(item.get("value"), str) or not item["value"].strip():
                    errors.append(("InvalidType", f"{vpath}.value", "must be a non-empty string"))
                    continue
                enum = item.get("enum_code")
                if "enum_id" in item and enum is None:
                    enum_id = item["enum_id"]
                    enum = enums[enum_id - 3000] if type(enum_id) is int and 0 <= enum_id - 3000 < len(enums) else "?"
                if enums:
                    enum = enum or "WORK"
                    if enum not in enums:
                        errors.append(("NotSupportedChoice", f"{vpath}.enum_code", f"one of {', '.join(enums)}"))
                        continue
                elif enum is not None:
                    errors.append(("NotSupported", f"{vpath}.enum_code", "this field has no enums"))
                    continue
                kept.append((item["value"], enum))
            fields[code] = kept
        if errors:
            return validation_error(errors)
        for key in ("name", "first_name", "last_name"):
            if key in body:
                contact[key] = body[key]
        for code, values in fields.items():
            if values:
                contact["fields"][code] = values
            else:
                contact["fields"].pop(code, None)
        contact["updated_at"] = int(time.time())
        contact["patches"] += 1
        return json_reply(
            200,
            {
                "id": contact_id,
                "name": contact["name"],
                "updated_at": contact["updated_at"],
                "account_id": account.id,
                "_links": {"self": {"href": f"https://{account.host}/api/v4/contacts/{contact_id}"}},
            },
        )

    @staticmethod
    def _field_code(field: Any) -> str | None:
        if not isinstance(field, dict) or ("field_id" in field) == ("field_code" in field):
            return None
        if "field_code" in field:
            return field["field_code"] if field["field_code"] in FIELDS else None
        field_id = field["field_id"]
        return FIELDS_BY_ID.get(field_id) if type(field_id) is int else None

    def _source_answer(self, source: dict) -> dict:
        return {key: source[key] for key in ("id", "name", "pipeline_id", "external_id", "default", "origin_code", "services")}

    def _list_sources(self, account: Any, client_id: str) -> Reply:
        mine = [s for s in self._sources.get(account.subdomain, []) if s["client_id"] == client_id]
        if not mine:
            return Reply(204)
        listed = [self._source_answer(source) for source in mine]
        return json_reply(200, {"_total_items": len(listed), "_embedded": {"sources": listed}})

    def _add_sources(self, req: Request, account: Any, client_id: str) -> Reply:
        try:
            body = req.json_body()
        except ValueError:
            return problem(400, "Bad Request", "the body is not JSON")
        if not isinstance(body, list) or not body:
            return validation_error([("InvalidType", "", "the body must be a non-empty array of sources")])
        mine = [s for s in self._sources.get(account.subdomain, []) if s["client_id"] == client_id]
        taken = {source["external_id"] for source in mine}
        errors: list[tuple[str, str, str]] = []
        for n, item in enumerate(body):
            if not isinstance(item, dict):
                errors.append(("InvalidType", f"{n}", "each source must be an object"))
                continue
            for key in sorted(set(item) - SOURCE_KEYS):
                errors.append(("NotSupported", f"{n}.{key}", "this key is not taken"))
            for key in ("name", "external_id"):
                if not isinstance(item.get(key), str) or not item[key].strip():
                    errors.append(("NotBlank", f"{n}.{key}", f"{key} must be a non-empty string"))
            external_id = item.get("external_id")
            if isinstance(external_id, str) and external_id in taken:
                errors.append(("NotUnique", f"{n}.external_id", "the integration has a source with this external_id"))
            taken.add(external_id)
            origin = item.get("origin_code")
            if origin is not None and (
                not isinstance(origin, str) or len(origin) > MAX_ORIGIN_CODE or origin.isdigit() or origin.strip('"') == ""
            ):
                errors.append(("InvalidValue", f"{n}.origin_code", "at most 20 characters, not only digits"))
            if "pipeline_id" in item and type(item["pipeline_id"]) is not int:
                errors.append(("InvalidType", f"{n}.pipeline_id", "must be an integer"))
            if "default" in item and type(item["default"]) is not bool:
                errors.append(("InvalidType", f"{n}.default", "must be a boolean"))
        if len(mine) + len(body) > MAX_SOURCES:
            errors.append(("TooMany", "", f"an integration has at most {MAX_SOURCES} sources in an account"))
        if errors:
            return validation_error(errors)
        created = []
        for n, item in enumerate(body):
            source = {
                "id": self._new_id(),
                "name": item["name"],
                "pipeline_id": item.get("pipeline_id", MAIN_PIPELINE_BASE + account.id % 1_000_000),
                "external_id": item["external_id"],
                "default": item.get("default", False),
                "origin_code": item.get("origin_code"),
                "services": item.get("services", []),
                "client_id": client_id,
            }
            self._sources.setdefault(account.subdomain, []).append(source)
            created.append({**self._source_answer(source), "request_id": str(item.get("request_id", n))})
        return json_reply(200, {"_total_items": len(created), "_embedded": {"sources": created}})

    # Admin routes.

    def admin_routes(self) -> dict[tuple[str, str], AdminRoute]:
        routes: dict[tuple[str, str], Callable[[Request], Reply]] = {
            ("POST", "/__admin/contacts"): self._admin_create_contact,
            ("GET", "/__admin/contacts"): self._admin_get_contact,
            ("GET", "/__admin/sources"): self._admin_sources,
        }
        return routes

    def _account(self, subdomain: Any) -> Any:
        if not isinstance(subdomain, str) or not subdomain:
            raise BadAdminRequest("subdomain is required")
        return self._accounts.get(subdomain)

    def _admin_create_contact(self, req: Request) -> Reply:
        body = admin_json(req)
        unknown = set(body) - {"subdomain", "name", "phone", "email", "chat_id"}
        if unknown:
            raise BadAdminRequest(f"unknown keys: {sorted(unknown)}")
        for key in ("name", "phone", "email", "chat_id"):
            if key in body and (not isinstance(body[key], str) or not body[key]):
                raise BadAdminRequest(f"{key} must be a non-empty string")
        if "name" not in body:
            raise BadAdminRequest("name is required")
        with self._lock:
            account = self._account(body.get("subdomain"))
            if account is None:
                return admin_error(404, f"no account {body.get('subdomain')}")
            now = int(time.time())
            fields: dict[str, list[tuple[str, str | None]]] = {}
            if "phone" in body:
                fields["PHONE"] = [(body["phone"], "MOB")]
            if "email" in body:
                fields["EMAIL"] = [(body["email"], "WORK")]
            contact = {
                "id": self._new_id(),
                "name": body["name"],
                "first_name": "",
                "last_name": "",
                "fields": fields,
                "created_at": now,
                "updated_at": now,
                "patches": 0,
            }
            self._contacts.setdefault(account.subdomain, {})[contact["id"]] = contact
            if "chat_id" in body:
                self._links.setdefault(account.subdomain, {})[body["chat_id"]] = (self._new_id(), contact["id"])
            return json_reply(200, {**self._contact_answer(account, contact), "patches": 0})

    def _admin_get_contact(self, req: Request) -> Reply:
        raw_id = req.query_param("id") or ""
        if not raw_id.isdigit():
            raise BadAdminRequest("id must be an integer")
        with self._lock:
            account = self._account(req.query_param("subdomain"))
            if account is None:
                return admin_error(404, "no such account")
            contact = self._contacts.get(account.subdomain, {}).get(int(raw_id))
            if contact is None:
                return admin_error(404, f"no contact {raw_id}")
            return json_reply(200, {**self._contact_answer(account, contact), "patches": contact["patches"]})

    def _admin_sources(self, req: Request) -> Reply:
        with self._lock:
            account = self._account(req.query_param("subdomain"))
            if account is None:
                return admin_error(404, "no such account")
            sources = [dict(source) for source in self._sources.get(account.subdomain, [])]
        return json_reply(200, {"sources": sources})
