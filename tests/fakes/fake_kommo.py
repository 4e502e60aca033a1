"""Fake of Kommo's OAuth 2.0 token endpoint and of the two REST routes installing the
integration needs, with Kommo's shapes and refusals.

    python fake_kommo.py --port 0 --secret CLIENT_SECRET [--verbose]

`--secret` is the integration's secret key (`client_secret`). There is no fixed client id: a
code is issued (POST /__admin/codes) for a `client_id` and `redirect_uri`, and the exchange, and
every refresh of the tokens it gave, must name the same two.

Routes (every answer is JSON unless said otherwise):
  POST /oauth2/access_token  a JSON body, or application/x-www-form-urlencoded, with
      {client_id, client_secret, grant_type: "authorization_code", code, redirect_uri} or
      {client_id, client_secret, grant_type: "refresh_token", refresh_token, redirect_uri}
      200 {"token_type": "Bearer", "expires_in": 86400, "access_token", "refresh_token"}
      (Cache-Control: no-store). Refusals are 400 {"hint", "title", "type", "status": 400,
      "detail"} (Kommo's OAuth problem JSON; Kommo's `type` is a URL of its developer site, the
      fake's is under example.com), the hint saying why:
        "Check the `client_secret` parameter"         secret missing or wrong
        "Check the `grant_type` parameter"            unknown grant type, or a body that is
                                                      neither a JSON object nor a form
        "Check the `<name>` parameter"                a required parameter missing or empty
        "Cannot decrypt the authorization code"       a code never issued
        "Check the `client_id` parameter"             not the client the code/token was issued to
        "Redirect URI is not associated with client"  not the code's redirect_uri
        "Invalid account"                             the request names another account's host
                                                      (see "Accounts" below)
        "Authorization code has expired"              older than 20 minutes, or expired by admin
        "Authorization code has been revoked"         already exchanged (a code works ONCE), or
                                                      the integration was uninstalled
        "Cannot decrypt the refresh token"            a refresh token never issued
        "Token has expired"                           a refresh token expired by admin (Kommo's
                                                      live 3 months)
        "Token has been revoked"                      a refresh token whose successor was used, or
                                                      the integration uninstalled. Refresh tokens
                                                      ROTATE as Kommo documents them: each refresh
                                                      answers a new pair, and "the old refresh token
                                                      will still be functional until you use the
                                                      new one": using a refresh token retires the
                                                      one it was refreshed from
      A refused request changes nothing (a code refused for its redirect_uri still works once).
      A refresh also revokes the access token of the pair it was made from, as
      league/oauth2-server (whose hints Kommo's are) does; setting `revoke_access_on_refresh`
      turns that off.
  GET /api/v4/account[?with=amojo_id]   Authorization: Bearer <access token>
      200 {"id": int, "name", "subdomain", "current_user_id", "country", "currency", ...,
      "amojo_id" (only when `with` lists amojo_id, as Kommo), "_links": {"self": {"href"}}}
  GET /api/v4/users[?with=amojo_id][&page=P][&limit=L]   Bearer
      200 {"_total_items": n, "_page": P, "_page_count", "_links": {"self", "next"?},
      "_embedded": {"users": [{"id": int, "name", "email", "lang", "rights": {"is_admin",
      "is_free", "is_active"}, "amojo_id" (only with `with=amojo_id`), "_links"}]}}.
      `page` (default 1) and `limit` (default 50, at most 250) are honoured; a page past the last
      answers 204 with no body (as Kommo's lists do); a page or limit that is not an integer in
      range answers 400 {"title": "Bad Request", "status": 400, "detail"}. The users list is
      for administrators only (Kommo's users-list page): tokens a user who is not an
      administrator authorised (a code issued with that `user_id`) answer 403 {"title":
      "Forbidden", "status": 403, "detail"}.
  Either REST route without a live token for the account: 401 {"title": "Unauthorized",
  "type", "status": 401, "detail"} (missing, malformed, unknown, expired or revoked token, or
  another account's host named). Any other path: 404 {"title": "Not Found", "status": 404, ...}.
  The CRM routes (contacts, their chat links, the integration's sources) and their admin routes
  are in fake_kommo_crm.py, under the same authentication.

Accounts, and which one a request is for: codes and tokens belong to the account they were
issued for, so the token endpoint finds the account from the code or refresh token in the body
and the REST routes from the Bearer token; nothing else is needed. A request may in addition
NAME an account host: its `Host` header (port ignored) when that is `{sub}.kommo.com`,
`{sub}.amocrm.ru` or `{sub}.amocrm.com` (a client resolving the account host to the fake),
otherwise its `X-Kommo-Account-Host` header. A named host must be the account's own, else the
request is refused ("Invalid account" / 401). A request naming none (a bridge configured with
`KOMMO_API_URL=http://127.0.0.1:<port>` in place of `https://{referer}`) is accepted, unless
the setting `require_host` is on for the account, which makes naming the host mandatory.
A request's scope (for /__admin/calls, scripts and faults) is its account's subdomain: that of
the code or token it carries, else of the host it names, else "".

Recording: calls are recorded as by every fake (common.py), but the secrets are redacted first:
the `Authorization` header becomes "<scheme> <redacted>", and the body's `client_secret`,
`code`, `refresh_token` and `access_token` members (at any depth) become "<redacted>". A form
body is recorded as the object of its fields (first value of each), so it is redacted the same
way; a non-empty body that is neither JSON nor a form is recorded as "<redacted>". Token
endpoint records also carry `grant_type` (null when the body is unreadable). Reply bodies (the
tokens answered) are never recorded, by common.py.

Admin routes, beyond common.py's:
  POST /__admin/accounts  {"subdomain", "name"?, "domain"?: "kommo.com" | "amocrm.ru" |
                          "amocrm.com", "users"?: [{"name", "email"?}, ...]} creates an account
                          (numeric id, amojo_id uuid, host {subdomain}.{domain}; the first user
                          is its admin; two users by default) and answers it in full:
                          {"id", "name", "subdomain", "host", "amojo_id", "users": [{"id",
                          "name", "email", "amojo_id", "is_admin"}]}; 409 if it exists
  GET  /__admin/accounts?subdomain=S   the same answer for an existing account (404 if none)
  POST /__admin/codes     {"subdomain", "client_id", "redirect_uri", "user_id"?}: an
                          authorization code for that account, as Kommo gives one when a user
                          installs the integration (`user_id`: one of the account's users, by
                          default its administrator, the first); answers {"code", "referer":
                          "{subdomain}.kommo.com"} (the account host)
  POST /__admin/expire    exactly one of {"access_token"} | {"refresh_token"} | {"code"}:
                          expires it now; {} (404 if never issued)
  POST /__admin/revoke    {"subdomain"}: the integration uninstalled: every token and unexchanged
                          code of the account revoked; {"revoked": live token pairs revoked}
  POST /__admin/disable   {"subdomain", "client_id", "url"}: an admin disables the integration:
                          the account's tokens and codes are revoked (as /__admin/revoke), then
                          Kommo's disable hook is called as Kommo calls it: GET {url}?account_id=
                          {numeric id}&client_uuid={client_id}&signature={lowercase hex
                          HMAC-SHA256(the secret, "{client_id}|{account_id}")}; answers
                          {"revoked", "status": the hook's HTTP status, "body": its body (JSON,
                          else text)}, or 502 {"error"} when the hook could not be reached
  GET  /__admin/tokens?subdomain=S   the account's current token pairs, oldest first: those
                          whose refresh token still works: {"tokens": [{"access_token",
                          "refresh_token", "client_id", "expires_at" (the access token's, unix
                          seconds), "access_live" (not expired or revoked)}]}
  POST /__admin/settings  {"subdomain"?, "expires_in"?: int >= 0, "require_host"?: bool,
                          "revoke_access_on_refresh"?: bool}: for that account, else the default
                          of every account (an account's own setting wins); applies to tokens
                          issued from then on; answers the settings now in effect there
  GET  /__admin/settings[?subdomain=S]  the same answer
Defaults: expires_in 86400, require_host false, revoke_access_on_refresh true.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable
from urllib.error import HTTPError
from urllib.parse import parse_qs, urlencode
from urllib.request import urlopen

from common import AdminRoute, BadAdminRequest, FakeService, Reply, Request, admin_error, admin_json, json_reply, run
from fake_kommo_crm import Crm

TOKEN_PATH = "/oauth2/access_token"
ACCOUNT_PATH = "/api/v4/account"
USERS_PATH = "/api/v4/users"
API_PREFIX = "/api/v4/"
ACCOUNT_DOMAINS = ("kommo.com", "amocrm.ru", "amocrm.com")
DEFAULT_DOMAIN = "kommo.com"
ACCOUNT_HOST = re.compile(r"([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)\.(kommo\.com|amocrm\.ru|amocrm\.com)")
SUBDOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
CODE_TTL = 20 * 60  # Kommo's authorization codes live 20 minutes
REFRESH_TTL = 90 * 86400  # and refresh tokens 3 months
DEFAULT_SETTINGS = {"expires_in": 86400, "require_host": False, "revoke_access_on_refresh": True}
DEFAULT_LIMIT, MAX_LIMIT = 50, 250
REDACTED = "<redacted>"
SECRET_FIELDS = ("client_secret", "code", "refresh_token", "access_token")

OAUTH_PROBLEM_TYPE = "https://developers.example.com/v3/errors/OAuthProblemJson"
HTTP_PROBLEM_TYPE = "https://httpstatus.example.com/"
OAUTH_TITLE = "Bad request"
OAUTH_DETAIL = "Some request parameters are missing or invalid"

# Hints, as Kommo words them.
HINT_SECRET = "Check the `client_secret` parameter"
HINT_GRANT_TYPE = "Check the `grant_type` parameter"
HINT_CLIENT_ID = "Check the `client_id` parameter"
HINT_REDIRECT = "Redirect URI is not associated with client"
HINT_ACCOUNT = "Invalid account"
HINT_CODE_UNKNOWN = "Cannot decrypt the authorization code"
HINT_CODE_EXPIRED = "Authorization code has expired"
HINT_CODE_REVOKED = "Authorization code has been revoked"
HINT_REFRESH_UNKNOWN = "Cannot decrypt the refresh token"
HINT_REFRESH_EXPIRED = "Token has expired"
HINT_REFRESH_REVOKED = "Token has been revoked"


def oauth_problem(hint: str) -> Reply:
    body = {"hint": hint, "title": OAUTH_TITLE, "type": OAUTH_PROBLEM_TYPE, "status": 400, "detail": OAUTH_DETAIL}
    return json_reply(400, body)


def http_problem(status: int, title: str, detail: str) -> Reply:
    body = {"title": title, "type": f"{HTTP_PROBLEM_TYPE}{status}", "status": status, "detail": detail}
    return json_reply(status, body)


UNAUTHORIZED = ("Unauthorized", "Invalid user name or password")


def strip_port(host: str) -> str:
    match = re.fullmatch(r"(.*?)(?::\d*)?", host.strip())
    return (match.group(1) if match else host).lower()


def named_host(req: Request) -> str | None:
    """The account host a request names: its Host when that is an account host, else its
    X-Kommo-Account-Host; None when it names none."""
    host = strip_port(req.headers.get("host", ""))
    if ACCOUNT_HOST.fullmatch(host):
        return host
    header = req.headers.get("x-kommo-account-host")
    return strip_port(header) if header is not None else None


def token_params(req: Request) -> dict[str, str] | None:
    """The token endpoint's parameters: a form when the Content-Type says so, else a JSON object
    (its non-string values dropped); None when the body is neither."""
    content_type = req.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        try:
            text = req.raw_body.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return {name: values[0] for name, values in parse_qs(text, keep_blank_values=True).items()}
    try:
        body = req.json_body()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    return {key: value for key, value in body.items() if isinstance(value, str)}


def redact(value: Any) -> Any:
    """A copy of a JSON value with every SECRET_FIELDS member replaced, at any depth."""
    if isinstance(value, dict):
        return {key: REDACTED if key in SECRET_FIELDS else redact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def bearer(req: Request) -> str | None:
    scheme, _, token = req.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


@dataclass
class Account:
    id: int
    subdomain: str
    name: str
    host: str
    amojo_id: str
    users: list[dict]  # {"id", "name", "email", "amojo_id", "is_admin"}
    created_at: int

    def full(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "subdomain": self.subdomain,
            "host": self.host,
            "amojo_id": self.amojo_id,
            "users": [dict(user) for user in self.users],
        }


@dataclass
class Code:
    account: str  # subdomain
    client_id: str
    redirect_uri: str
    expires_at: float
    user_id: int  # who authorised it
    used: bool = False
    revoked: bool = False


@dataclass
class TokenPair:
    account: str  # subdomain
    client_id: str
    redirect_uri: str
    access_token: str
    refresh_token: str
    access_expires_at: float
    refresh_expires_at: float
    user_id: int  # who authorised the install the pair descends from
    refreshed_from: TokenPair | None = None  # retired once this pair's refresh token is used
    access_revoked: bool = False
    refresh_revoked: bool = False  # its successor used, or uninstalled

    def access_live(self, now: float) -> bool:
        return not self.access_revoked and now < self.access_expires_at

    def refresh_live(self, now: float) -> bool:
        return not self.refresh_revoked and now < self.refresh_expires_at


class KommoApi(FakeService):
    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("must not be empty")
        self.client_secret = secret
        self._lock = threading.Lock()
        self._accounts: dict[str, Account] = {}
        self._codes: dict[str, Code] = {}
        self._by_access: dict[str, TokenPair] = {}
        self._by_refresh: dict[str, TokenPair] = {}
        self._pairs: dict[str, list[TokenPair]] = {}  # per subdomain, in issue order
        self._settings: dict[str, dict] = {}  # per subdomain, overriding the defaults
        self._defaults = dict(DEFAULT_SETTINGS)
        self._next_account_id = 31_000_001
        self._next_user_id = 11_000_001
        # Contacts, chat links and sources (fake_kommo_crm.py), under the same lock.
        self.crm = Crm(self._lock, self._accounts)

    # The FakeService hooks.

    def scope_of(self, req: Request) -> str:
        with self._lock:
            account = self._account_carried(req)
        if account is not None:
            return account
        match = ACCOUNT_HOST.fullmatch(named_host(req) or "")
        return match.group(1) if match else ""

    def _account_carried(self, req: Request) -> str | None:
        """The subdomain of the account whose code or token the request carries."""
        if req.path == TOKEN_PATH:
            params = token_params(req) or {}
            code = self._codes.get(params.get("code", ""))
            if params.get("grant_type") == "authorization_code" and code is not None:
                return code.account
            pair = self._by_refresh.get(params.get("refresh_token", ""))
            if params.get("grant_type") == "refresh_token" and pair is not None:
                return pair.account
            return None
        if req.path.startswith(API_PREFIX):
            pair = self._by_access.get(bearer(req) or "")
            return pair.account if pair is not None else None
        return None

    def verify(self, req: Request) -> str | None:
        """Client authentication: the client secret at the token endpoint, the Bearer token on
        the REST routes."""
        if req.path == TOKEN_PATH and req.method == "POST":
            params = token_params(req)
            if params is None:
                return "body is neither a JSON object nor a form"
            provided = params.get("client_secret", "")
            if not provided:
                return "client_secret is missing"
            if not hmac.compare_digest(provided.encode(), self.client_secret.encode()):
                return "client_secret is wrong"
            return None
        if req.path.startswith(API_PREFIX):
            token = bearer(req)
            if token is None:
                return "no Bearer access token"
            now = time.time()
            with self._lock:
                pair = self._by_access.get(token)
                if pair is None:
                    return "unknown access token"
                if pair.access_revoked:
                    return "access token revoked"
                if now >= pair.access_expires_at:
                    return "access token expired"
                return self._host_error(req, self._accounts[pair.account])
        return None

    def reject(self, req: Request, error: str) -> Reply:
        if req.path == TOKEN_PATH:
            return oauth_problem(HINT_SECRET if "client_secret" in error else HINT_GRANT_TYPE)
        return http_problem(401, *UNAUTHORIZED)

    def answer(self, req: Request, scope: str) -> Reply:
        if req.path == TOKEN_PATH:
            if req.method != "POST":
                return http_problem(405, "Method Not Allowed", f"{req.method} is not allowed here")
            params = token_params(req) or {}
            grant_type = params.get("grant_type")
            with self._lock:
                if grant_type == "authorization_code":
                    return self._exchange_code(req, params)
                if grant_type == "refresh_token":
                    return self._refresh(req, params)
            return oauth_problem(HINT_GRANT_TYPE)
        if req.method == "GET" and req.path in (ACCOUNT_PATH, USERS_PATH):
            with self._lock:
                pair = self._by_access[bearer(req) or ""]  # verified
                account = self._accounts[pair.account]
                if req.path == ACCOUNT_PATH:
                    return self._account_answer(req, account)
                authoriser = next((user for user in account.users if user["id"] == pair.user_id), None)
                if authoriser is None or not authoriser["is_admin"]:
                    return http_problem(403, "Forbidden", "The users list is available to administrators only")
                return self._users_answer(req, account)
        if self.crm.handles(req):
            with self._lock:
                pair = self._by_access[bearer(req) or ""]  # verified
                return self.crm.answer(req, self._accounts[pair.account], pair.client_id)
        return http_problem(404, "Not Found", f"no route {req.method} {req.path}")

    def annotate(self, record: dict, req: Request, reply: Reply) -> None:
        headers = dict(record["headers"])
        if "authorization" in headers:
            scheme = headers["authorization"].partition(" ")[0]
            headers["authorization"] = f"{scheme} {REDACTED}"
        record["headers"] = headers
        body = record["body"]
        if req.path == TOKEN_PATH:
            params = token_params(req)
            record["grant_type"] = params.get("grant_type") if params is not None else None
            if params is not None and not isinstance(body, dict):
                body = params  # a form
        if isinstance(body, (dict, list)):
            body = redact(body)
        elif body != "":
            body = REDACTED  # not JSON nor a form: it might hold a secret the fake cannot find
        record["body"] = body

    # The token endpoint; the caller holds the lock.

    def _exchange_code(self, req: Request, params: dict[str, str]) -> Reply:
        missing = self._missing(params, "client_id", "redirect_uri", "code")
        if missing:
            return missing
        code = self._codes.get(params["code"])
        if code is None:
            return oauth_problem(HINT_CODE_UNKNOWN)
        if params["client_id"] != code.client_id:
            return oauth_problem(HINT_CLIENT_ID)
        if params["redirect_uri"] != code.redirect_uri:
            return oauth_problem(HINT_REDIRECT)
        account = self._accounts[code.account]
        if self._host_error(req, account):
            return oauth_problem(HINT_ACCOUNT)
        if time.time() >= code.expires_at:
            return oauth_problem(HINT_CODE_EXPIRED)
        if code.used or code.revoked:
            return oauth_problem(HINT_CODE_REVOKED)
        code.used = True
        return self._issue(account, code.client_id, code.redirect_uri, code.user_id, None)

    def _refresh(self, req: Request, params: dict[str, str]) -> Reply:
        missing = self._missing(params, "client_id", "redirect_uri", "refresh_token")
        if missing:
            return missing
        old = self._by_refresh.get(params["refresh_token"])
        if old is None:
            return oauth_problem(HINT_REFRESH_UNKNOWN)
        if params["client_id"] != old.client_id:
            return oauth_problem(HINT_CLIENT_ID)
        if params["redirect_uri"] != old.redirect_uri:
            return oauth_problem(HINT_REDIRECT)
        account = self._accounts[old.account]
        if self._host_error(req, account):
            return oauth_problem(HINT_ACCOUNT)
        if time.time() >= old.refresh_expires_at:
            return oauth_problem(HINT_REFRESH_EXPIRED)
        if old.refresh_revoked:
            return oauth_problem(HINT_REFRESH_REVOKED)
        # "The old refresh token will still be functional until you use the new one": using
        # this one retires the one it replaced, not itself.
        if old.refreshed_from is not None:
            old.refreshed_from.refresh_revoked = True
            old.refreshed_from = None
        if self._setting(account.subdomain, "revoke_access_on_refresh"):
            old.access_revoked = True
        return self._issue(account, old.client_id, old.redirect_uri, old.user_id, old)

    @staticmethod
    def _missing(params: dict[str, str], *names: str) -> Reply | None:
        for name in names:
            if not params.get(name):
                return oauth_problem(f"Check the `{name}` parameter")
        return None

    def _issue(
        self, account: Account, client_id: str, redirect_uri: str, user_id: int, refreshed_from: TokenPair | None
    ) -> Reply:
        now = time.time()
        expires_in = self._setting(account.subdomain, "expires_in")
        pair = TokenPair(
            account=account.subdomain,
            client_id=client_id,
            redirect_uri=redirect_uri,
            access_token=secrets.token_urlsafe(48),
            refresh_token="def50200" + secrets.token_hex(96),
            access_expires_at=now + expires_in,
            refresh_expires_at=now + REFRESH_TTL,
            user_id=user_id,
            refreshed_from=refreshed_from,
        )
        self._by_access[pair.access_token] = pair
        self._by_refresh[pair.refresh_token] = pair
        self._pairs.setdefault(account.subdomain, []).append(pair)
        reply = json_reply(
            200,
            {
                "token_type": "Bearer",
                "expires_in": expires_in,
                "access_token": pair.access_token,
                "refresh_token": pair.refresh_token,
            },
        )
        reply.headers.update({"Cache-Control": "no-store", "Pragma": "no-cache"})
        return reply

    def _host_error(self, req: Request, account: Account) -> str | None:
        named = named_host(req)
        if named is None:
            if self._setting(account.subdomain, "require_host"):
                return "no account host named (Host or X-Kommo-Account-Host) and require_host is on"
            return None
        if named != account.host:
            return f"the request names {named!r}, the token's account is {account.host!r}"
        return None

    def _setting(self, subdomain: str, name: str) -> Any:
        return self._settings.get(subdomain, {}).get(name, self._defaults[name])

    # The REST routes; the caller holds the lock.

    @staticmethod
    def _with(req: Request) -> set[str]:
        return {part.strip() for part in (req.query_param("with") or "").split(",") if part.strip()}

    def _account_answer(self, req: Request, account: Account) -> Reply:
        body: dict[str, Any] = {
            "id": account.id,
            "name": account.name,
            "subdomain": account.subdomain,
            "created_at": account.created_at,
            "created_by": 0,
            "updated_at": account.created_at,
            "updated_by": 0,
            "current_user_id": account.users[0]["id"],
            "country": "US",
            "currency": "USD",
            "customers_mode": "disabled",
            "is_unsorted_on": True,
            "mobile_feature_version": 0,
            "is_loss_reason_enabled": True,
            "is_helpbot_enabled": False,
            "is_technical_account": False,
            "contact_name_display_order": 1,
        }
        if "amojo_id" in self._with(req):
            body["amojo_id"] = account.amojo_id
        body["_links"] = {"self": {"href": f"https://{account.host}{ACCOUNT_PATH}"}}
        return json_reply(200, body)

    def _users_answer(self, req: Request, account: Account) -> Reply:
        page = self._positive_int(req, "page", 1, None)
        limit = self._positive_int(req, "limit", DEFAULT_LIMIT, MAX_LIMIT)
        if page is None or limit is None:
            return http_problem(400, "Bad Request", f"page must be an integer >= 1, limit one in 1..{MAX_LIMIT}")
        users = account.users
        page_count = max(1, -(-len(users) // limit))
        if page > page_count:
            return Reply(204)
        with_amojo = "amojo_id" in self._with(req)
        listed = []
        for user in users[(page - 1) * limit : page * limit]:
            item: dict[str, Any] = {
                "id": user["id"],
                "name": user["name"],
                "email": user["email"],
                "lang": "en",
                "rights": {"is_admin": user["is_admin"], "is_free": False, "is_active": True},
            }
            if with_amojo:
                item["amojo_id"] = user["amojo_id"]
            item["_links"] = {"self": {"href": f"https://{account.host}{USERS_PATH}/{user['id']}"}}
            listed.append(item)
        with_param = req.query_param("with")
        base = f"https://{account.host}{USERS_PATH}?" + (f"with={with_param}&" if with_param else "")
        links = {"self": {"href": f"{base}page={page}&limit={limit}"}}
        if page < page_count:
            links["next"] = {"href": f"{base}page={page + 1}&limit={limit}"}
        return json_reply(
            200,
            {
                "_total_items": len(users),
                "_page": page,
                "_page_count": page_count,
                "_links": links,
                "_embedded": {"users": listed},
            },
        )

    @staticmethod
    def _positive_int(req: Request, name: str, default: int, most: int | None) -> int | None:
        raw = req.query_param(name)
        if raw is None:
            return default
        if not raw.isascii() or not raw.isdigit():
            return None
        value = int(raw)
        if value < 1 or (most is not None and value > most):
            return None
        return value

    # Admin routes.

    def admin_routes(self) -> dict[tuple[str, str], AdminRoute]:
        routes: dict[tuple[str, str], Callable[[Request], Reply]] = {
            ("POST", "/__admin/accounts"): self._admin_create_account,
            ("GET", "/__admin/accounts"): self._admin_get_account,
            ("POST", "/__admin/codes"): self._admin_code,
            ("POST", "/__admin/expire"): self._admin_expire,
            ("POST", "/__admin/revoke"): self._admin_revoke,
            ("POST", "/__admin/disable"): self._admin_disable,
            ("GET", "/__admin/tokens"): self._admin_tokens,
            ("POST", "/__admin/settings"): self._admin_set_settings,
            ("GET", "/__admin/settings"): self._admin_get_settings,
        }
        routes.update(self.crm.admin_routes())
        return routes

    @staticmethod
    def _string(body: dict, key: str, required: bool = True) -> str | None:
        value = body.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            raise BadAdminRequest(f"{key} must be a non-empty string")
        return value

    @staticmethod
    def _only(body: dict, allowed: set[str]) -> None:
        unknown = set(body) - allowed
        if unknown:
            raise BadAdminRequest(f"unknown keys: {sorted(unknown)}")

    def _admin_create_account(self, req: Request) -> Reply:
        body = admin_json(req)
        self._only(body, {"subdomain", "name", "domain", "users"})
        subdomain = self._string(body, "subdomain")
        if not SUBDOMAIN.fullmatch(subdomain):
            raise BadAdminRequest("subdomain must be one lowercase DNS label")
        name = self._string(body, "name", required=False) or f"Account {subdomain}"
        domain = body.get("domain", DEFAULT_DOMAIN)
        if domain not in ACCOUNT_DOMAINS:
            raise BadAdminRequest(f"domain must be one of {list(ACCOUNT_DOMAINS)}")
        users = body.get(
            "users",
            [
                {"name": "Admin", "email": f"admin.{subdomain}@example.com"},
                {"name": "Manager", "email": f"manager.{subdomain}@example.com"},
            ],
        )
        if not isinstance(users, list) or not users:
            raise BadAdminRequest("users must be a non-empty list")
        for user in users:
            if not isinstance(user, dict):
                raise BadAdminRequest("each user must be an object")
            self._only(user, {"name", "email"})
            self._string(user, "name")
            self._string(user, "email", required=False)
        with self._lock:
            if subdomain in self._accounts:
                return admin_error(409, f"account {subdomain} exists")
            made = []
            for n, user in enumerate(users):
                user_id = self._next_user_id
                self._next_user_id += 1
                email = user.get("email") or f"user{user_id}.{subdomain}@example.com"
                made.append(
                    {
                        "id": user_id,
                        "name": user["name"],
                        "email": email,
                        "amojo_id": str(uuid.uuid4()),
                        "is_admin": n == 0,
                    }
                )
            account = Account(
                id=self._next_account_id,
                subdomain=subdomain,
                name=name,
                host=f"{subdomain}.{domain}",
                amojo_id=str(uuid.uuid4()),
                users=made,
                created_at=int(time.time()),
            )
            self._next_account_id += 1
            self._accounts[subdomain] = account
            return json_reply(200, account.full())

    def _account_named(self, subdomain: str | None) -> Account | Reply:
        """The account, or the admin error answering for it; the caller holds the lock."""
        if not subdomain:
            raise BadAdminRequest("subdomain is required")
        account = self._accounts.get(subdomain)
        if account is None:
            return admin_error(404, f"no account {subdomain}")
        return account

    def _admin_get_account(self, req: Request) -> Reply:
        with self._lock:
            account = self._account_named(req.query_param("subdomain"))
            return json_reply(200, account.full()) if isinstance(account, Account) else account

    def _admin_code(self, req: Request) -> Reply:
        body = admin_json(req)
        self._only(body, {"subdomain", "client_id", "redirect_uri", "user_id"})
        subdomain = self._string(body, "subdomain")
        client_id = self._string(body, "client_id")
        redirect_uri = self._string(body, "redirect_uri")
        user_id = body.get("user_id")
        if user_id is not None and type(user_id) is not int:
            raise BadAdminRequest("user_id must be an integer")
        with self._lock:
            account = self._account_named(subdomain)
            if not isinstance(account, Account):
                return account
            if user_id is None:
                user_id = account.users[0]["id"]
            elif all(user["id"] != user_id for user in account.users):
                raise BadAdminRequest(f"user_id {user_id} is not a user of {subdomain}")
            code = "def50200" + secrets.token_hex(160)
            self._codes[code] = Code(subdomain, client_id, redirect_uri, time.time() + CODE_TTL, user_id)
            return json_reply(200, {"code": code, "referer": account.host})

    def _admin_expire(self, req: Request) -> Reply:
        body = admin_json(req)
        self._only(body, {"access_token", "refresh_token", "code"})
        if len(body) != 1:
            raise BadAdminRequest("name exactly one of access_token, refresh_token and code")
        (key, value), = body.items()
        if not isinstance(value, str):
            raise BadAdminRequest(f"{key} must be a string")
        now = time.time()
        with self._lock:
            if key == "code" and value in self._codes:
                self._codes[value].expires_at = now
            elif key == "access_token" and value in self._by_access:
                pair = self._by_access[value]
                pair.access_expires_at = min(pair.access_expires_at, now)
            elif key == "refresh_token" and value in self._by_refresh:
                pair = self._by_refresh[value]
                pair.refresh_expires_at = min(pair.refresh_expires_at, now)
            else:
                return admin_error(404, f"no such {key}")
        return json_reply(200, {})

    def _admin_revoke(self, req: Request) -> Reply:
        body = admin_json(req)
        self._only(body, {"subdomain"})
        revoked = self._revoke(self._string(body, "subdomain"))
        return revoked if isinstance(revoked, Reply) else json_reply(200, {"revoked": revoked})

    def _revoke(self, subdomain: str) -> int | Reply:
        """Every token and unexchanged code of the account revoked: how many live pairs were."""
        now = time.time()
        with self._lock:
            account = self._account_named(subdomain)
            if not isinstance(account, Account):
                return account
            revoked = 0
            for pair in self._pairs.get(subdomain, []):
                revoked += pair.refresh_live(now)
                pair.access_revoked = pair.refresh_revoked = True
            for code in self._codes.values():
                if code.account == subdomain:
                    code.revoked = True
        return revoked

    def _admin_disable(self, req: Request) -> Reply:
        body = admin_json(req)
        self._only(body, {"subdomain", "client_id", "url"})
        client_id = self._string(body, "client_id")
        url = self._string(body, "url")
        if not url.startswith(("http://127.0.0.1:", "http://localhost:")):
            raise BadAdminRequest("url must be a loopback http URL (the bridge under test)")
        subdomain = self._string(body, "subdomain")
        revoked = self._revoke(subdomain)
        if isinstance(revoked, Reply):
            return revoked
        with self._lock:
            account_id = str(self._accounts[subdomain].id)
        signature = hmac.new(
            self.client_secret.encode(), f"{client_id}|{account_id}".encode(), hashlib.sha256
        ).hexdigest()
        query = urlencode({"account_id": account_id, "client_uuid": client_id, "signature": signature})
        try:
            with urlopen(f"{url}?{query}", timeout=10) as answer:
                status, raw = answer.status, answer.read()
        except HTTPError as error:
            status, raw = error.code, error.read()
        except OSError as error:
            return admin_error(502, f"the disable hook could not be reached: {error}")
        try:
            answered: Any = json.loads(raw)
        except ValueError:
            answered = raw.decode("utf-8", "replace")
        return json_reply(200, {"revoked": revoked, "status": status, "body": answered})

    def _admin_tokens(self, req: Request) -> Reply:
        subdomain = req.query_param("subdomain")
        now = time.time()
        with self._lock:
            account = self._account_named(subdomain)
            if not isinstance(account, Account):
                return account
            tokens = [
                {
                    "access_token": pair.access_token,
                    "refresh_token": pair.refresh_token,
                    "client_id": pair.client_id,
                    "expires_at": int(pair.access_expires_at),
                    "access_live": pair.access_live(now),
                }
                for pair in self._pairs.get(account.subdomain, [])
                if pair.refresh_live(now)
            ]
        return json_reply(200, {"tokens": tokens})

    def _admin_set_settings(self, req: Request) -> Reply:
        body = admin_json(req)
        self._only(body, {"subdomain", *DEFAULT_SETTINGS})
        subdomain = self._string(body, "subdomain", required=False)
        changes = {key: value for key, value in body.items() if key != "subdomain"}
        if "expires_in" in changes and (type(changes["expires_in"]) is not int or changes["expires_in"] < 0):
            raise BadAdminRequest("expires_in must be an integer >= 0")
        for key in ("require_host", "revoke_access_on_refresh"):
            if key in changes and type(changes[key]) is not bool:
                raise BadAdminRequest(f"{key} must be a boolean")
        with self._lock:
            if subdomain is None:
                self._defaults.update(changes)
            else:
                account = self._account_named(subdomain)
                if not isinstance(account, Account):
                    return account
                self._settings.setdefault(subdomain, {}).update(changes)
            return self._effective_settings(subdomain)

    def _admin_get_settings(self, req: Request) -> Reply:
        subdomain = req.query_param("subdomain") or None
        with self._lock:
            if subdomain is not None:
                account = self._account_named(subdomain)
                if not isinstance(account, Account):
                    return account
            return self._effective_settings(subdomain)

    def _effective_settings(self, subdomain: str | None) -> Reply:
        return json_reply(200, {name: self._setting(subdomain or "", name) for name in DEFAULT_SETTINGS})


if __name__ == "__main__":
    run("Fake Kommo OAuth 2.0 and REST API (account, users)", KommoApi)
