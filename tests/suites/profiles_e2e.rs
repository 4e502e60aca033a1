//! Client profiles and sources, end to end over real HTTP: the dev server between the fake chat
//! service, the fake amojo and the fake Kommo's CRM (contacts linked to chats, the
//! integration's sources), for an account installed through the fake Kommo's OAuth, on the
//! in-memory store and on the DynamoDB-compatible server.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{E2e, Fake, unique};

const REDIRECT_URI: &str = "https://bridge.example.com/kommo/oauth/callback";
const TOKEN_KEY: &str = "5f0e1d2c3b4a59687766554433221100ffeeddccbbaa99887766554433221100";

/// A dev server with installs on, and one account installed through the fake Kommo.
struct Installed {
    e2e: E2e,
    kommo: Fake,
    client_id: String,
    subdomain: String,
    /// The installed account's scope (not the `KOMMO_ACCOUNTS` one of `e2e.scope`).
    scope: String,
    table: Option<(String, String)>,
}

impl Installed {
    async fn start(on_dynamodb: bool) -> Self {
        let kommo = Fake::kommo();
        let client_id = unique("client-");
        let mut env: Vec<(&str, String)> = vec![
            ("KOMMO_CLIENT_ID", client_id.clone()),
            ("KOMMO_REDIRECT_URI", REDIRECT_URI.into()),
            ("KOMMO_TOKEN_KEY", TOKEN_KEY.into()),
            ("KOMMO_API_URL", kommo.url.clone()),
            ("KOMMO_INTEGRATION_SECRET", kommo.secret.clone()),
        ];
        let table = on_dynamodb.then(|| (support::required_env("TEST_DYNAMODB_ENDPOINT"), unique("profiles-")));
        if let Some((endpoint, name)) = &table {
            env.push(("DYNAMODB_ENDPOINT", endpoint.clone()));
            env.push(("TABLE_NAME", name.clone()));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let e2e = E2e::between(Fake::amojo(), Fake::chat_service(), &env);
        let subdomain = unique("shop-");
        let account = kommo.admin_post("accounts", json!({"subdomain": subdomain})).await;
        let amojo_id = account["amojo_id"].as_str().unwrap().to_owned();
        let issued = kommo
            .admin_post("codes", json!({"subdomain": subdomain, "client_id": client_id, "redirect_uri": REDIRECT_URI}))
            .await;
        let code = issued["code"].as_str().unwrap();
        let url = format!("{}/kommo/oauth/callback?code={code}&referer={subdomain}.kommo.com", e2e.server.base);
        let status = reqwest::get(url).await.expect("the dev server answers").status();
        assert_eq!(status, 200, "installed");
        let channel = e2e.scope.trim_end_matches("_acc-1").to_owned();
        let scope = format!("{channel}_{amojo_id}");
        // The channel is connected (at once, or by queued work soon after).
        let connected = e2e
            .wait_for_calls(&e2e.amojo, &channel, Duration::from_secs(10), |calls| {
                calls.iter().any(|c| c["body"]["account_id"] == amojo_id.as_str() && c["reply_status"] == 200)
            })
            .await;
        assert!(!connected.is_empty(), "the channel was connected");
        Self { e2e, kommo, client_id, subdomain, scope, table }
    }

    /// A client's message in `conversation`, imported into the fake amojo: Kommo's chat id.
    async fn chat_of(&self, conversation: &str, user: Value, source: Option<&str>) -> String {
        let mut message = json!({"type": "message.created", "scope_id": self.scope, "conversation_id": conversation,
                                 "msgid": unique("m-"), "user": user, "message": {"type": "text", "text": "Hello"},
                                 "timestamp_ms": 1_700_000_000_000i64});
        if let Some(external_id) = source {
            message["source"] = json!({"external_id": external_id});
        }
        assert_eq!(self.e2e.chat_event(message.to_string()).await.status(), 200);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state = self.e2e.amojo.admin_get(&format!("state?scope={}", self.scope)).await;
            let chats = state["chats"].as_object().cloned().unwrap_or_default();
            let found = chats.iter().find(|(_, chat)| {
                chat["conversation_ids"].as_array().is_some_and(|ids| ids.iter().any(|id| id == conversation))
                    && chat["messages"].as_array().is_some_and(|m| !m.is_empty())
            });
            if let Some((chat_id, _)) = found {
                return chat_id.clone();
            }
            assert!(Instant::now() < deadline, "the message was never imported: {state}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn profile(&self, conversation: &str, user: Value) -> reqwest::Response {
        let event = json!({"type": "client.updated", "scope_id": self.scope, "conversation_id": conversation,
                           "user": user});
        self.e2e.chat_event(event.to_string()).await
    }

    async fn contact(&self, id: u64) -> Value {
        self.kommo.admin_get(&format!("contacts?subdomain={}&id={id}", self.subdomain)).await
    }

    /// Waits until the contact has been changed `patches` times.
    async fn patched(&self, id: u64, patches: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let contact = self.contact(id).await;
            if contact["patches"].as_u64() >= Some(patches) || Instant::now() > deadline {
                return contact;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn crm_calls(&self) -> Vec<Value> {
        let calls = self.kommo.calls(&self.subdomain).await;
        calls
            .into_iter()
            .filter(|c| {
                c["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("/api/v4/contacts") || p.starts_with("/api/v4/sources"))
            })
            .collect()
    }
}

impl E2e {
    /// Waits until `check` holds for the calls `fake` recorded for `scope`.
    async fn wait_for_calls(
        &self,
        fake: &Fake,
        scope: &str,
        limit: Duration,
        check: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let calls = fake.calls(scope).await;
            if check(&calls) {
                return calls;
            }
            if Instant::now() > deadline {
                return Vec::new();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn values(contact: &Value, code: &str) -> Vec<String> {
    let fields = contact["custom_fields_values"].as_array().cloned().unwrap_or_default();
    let field = fields.iter().find(|f| f["field_code"] == code);
    field
        .and_then(|f| f["values"].as_array())
        .map(|values| values.iter().map(|v| v["value"].as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

async fn a_profile_replaces_the_made_up_name_of_the_chats_contact(on_dynamodb: bool) {
    let t = Installed::start(on_dynamodb).await;
    // A client the chat service knew by id only: Kommo's chat and contact got a made-up name.
    let chat_id = t.chat_of("conv-1", json!({"id": "client-1"}), None).await;
    let created = t.e2e.amojo.calls(&t.scope).await;
    let create = created.iter().find(|c| c["body"]["conversation_id"] == "conv-1").expect("the chat was created");
    assert_eq!(create["body"]["user"]["name"], "Client client-1");
    let contact = t
        .kommo
        .admin_post(
            "contacts",
            json!({"subdomain": t.subdomain, "name": "Client client-1", "phone": "+1 555 0100", "chat_id": chat_id}),
        )
        .await;
    let contact_id = contact["id"].as_u64().unwrap();

    let user = json!({"id": "client-1", "name": "Adam Smith", "phone": "+15550100", "email": "adam@example.com",
                      "avatar": "https://cdn.example.com/adam.png"});
    let answer = t.profile("conv-1", user.clone()).await;
    assert_eq!(answer.status(), 202, "accepted once queued");
    assert_eq!(answer.json::<Value>().await.unwrap(), json!({"accepted": true}));
    let changed = t.patched(contact_id, 1).await;
    assert_eq!(changed["name"], "Adam Smith", "{changed}");
    assert_eq!(values(&changed, "PHONE"), ["+1 555 0100"], "the same number, written another way: kept as it was");
    assert_eq!(values(&changed, "EMAIL"), ["adam@example.com"]);

    let calls = t.crm_calls().await;
    let routes: Vec<String> =
        calls.iter().map(|c| format!("{} {}", c["method"].as_str().unwrap(), c["path"].as_str().unwrap())).collect();
    let contact_path = format!("/api/v4/contacts/{contact_id}");
    assert_eq!(
        routes,
        ["GET /api/v4/contacts/chats".to_owned(), format!("GET {contact_path}"), format!("PATCH {contact_path}")]
    );
    assert_eq!(calls[0]["query"], format!("chat_id={chat_id}"));
    for call in &calls {
        assert_eq!(call["signature_ok"], true, "a live token of the account: {call}");
        assert_eq!(call["headers"]["x-kommo-account-host"], format!("{}.kommo.com", t.subdomain));
    }
    let patch = &calls[2]["body"];
    assert_eq!(patch["name"], "Adam Smith");
    assert_eq!(patch.as_object().unwrap().len(), 2, "name and the email field, nothing else: {patch}");

    // The same profile again changes nothing in Kommo (it is read, and found as it is).
    assert_eq!(t.profile("conv-1", user).await.status(), 202);
    t.e2e
        .wait_for_calls(&t.kommo, &t.subdomain, Duration::from_secs(10), |calls| {
            calls.iter().filter(|c| c["method"] == "GET" && c["path"] == contact_path.as_str()).count() >= 2
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(t.contact(contact_id).await["patches"], 1, "nothing to change, nothing sent");
    // A new number goes first; the one a manager may rely on stays.
    assert_eq!(t.profile("conv-1", json!({"id": "client-1", "phone": "+447700900123"})).await.status(), 202);
    let changed = t.patched(contact_id, 2).await;
    assert_eq!(values(&changed, "PHONE"), ["+447700900123", "+1 555 0100"]);
    assert_eq!(changed["name"], "Adam Smith", "a profile without a name leaves the name");
}

#[tokio::test]
async fn a_profile_replaces_the_made_up_name_of_the_chats_contact_in_memory() {
    a_profile_replaces_the_made_up_name_of_the_chats_contact(false).await;
}

#[tokio::test]
async fn a_profile_replaces_the_made_up_name_of_the_chats_contact_on_dynamodb() {
    a_profile_replaces_the_made_up_name_of_the_chats_contact(true).await;
}

/// The update waits for Kommo to link a contact to the chat, and never calls again before
/// Kommo's `Retry-After`.
#[tokio::test]
async fn a_profile_waits_for_the_contact_and_for_kommos_retry_after() {
    let t = Installed::start(false).await;
    let chat_id = t.chat_of("conv-2", json!({"id": "client-2", "phone": "+100200"}), None).await;
    assert_eq!(t.profile("conv-2", json!({"id": "client-2", "name": "Eve"})).await.status(), 202);
    // No contact linked yet: the link is looked for, and looked for again later.
    let looked = t
        .e2e
        .wait_for_calls(&t.kommo, &t.subdomain, Duration::from_secs(10), |calls| {
            calls.iter().filter(|c| c["path"] == "/api/v4/contacts/chats").count() >= 2
        })
        .await;
    assert!(!looked.is_empty(), "the link was looked for twice");
    assert!(looked.iter().all(|c| c["reply_status"] == 204 || c["path"] != "/api/v4/contacts/chats"));
    let contacts_changed = looked
        .iter()
        .filter(|c| c["path"].as_str().is_some_and(|p| p.starts_with("/api/v4/contacts")))
        .any(|c| c["method"] != "GET");
    assert!(!contacts_changed, "nothing changed before a contact is linked");
    // Kommo is busy once, asking for 2 s; then the contact is there.
    t.kommo
        .script(
            &t.subdomain,
            json!([{"status": 429, "headers": {"Retry-After": "2"}, "body": {"title": "Too Many Requests"},
                    "match": "/api/v4/contacts/chats"}]),
        )
        .await;
    let contact =
        t.kommo.admin_post("contacts", json!({"subdomain": t.subdomain, "name": "+100200", "chat_id": chat_id})).await;
    let contact_id = contact["id"].as_u64().unwrap();
    assert_eq!(t.patched(contact_id, 1).await["name"], "Eve");
    let calls = t.crm_calls().await;
    let limited = calls.iter().find(|c| c["reply_status"] == 429).expect("Kommo's 429 was met");
    let after: Vec<&Value> =
        calls.iter().filter(|c| c["received_at"].as_f64() > limited["received_at"].as_f64()).collect();
    let next = after.first().expect("called again after the 429");
    let waited = next["received_at"].as_f64().unwrap() - limited["received_at"].as_f64().unwrap();
    assert!(waited >= 1.95, "called again {waited:.2} s after a Retry-After of 2 s");
}

/// An account served from `KOMMO_ACCOUNTS` has no REST tokens: its `client.updated` is a 409
/// with a clear code, and nothing is queued or remembered (the same event after installing is
/// taken). A profile that says nothing is a 400.
#[tokio::test]
async fn a_profile_for_an_account_without_rest_tokens_is_refused_409() {
    let t = Installed::start(false).await;
    let event = |scope: &str, user: Value| {
        json!({"type": "client.updated", "scope_id": scope, "conversation_id": "conv-3", "user": user}).to_string()
    };
    let refused = t.e2e.chat_event(event(&t.e2e.scope, json!({"id": "client-3", "name": "Ann"}))).await;
    assert_eq!(refused.status(), 409);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "profiles_need_install", "{body}");
    for user in [json!({"id": "client-3"}), json!({"id": "client-3", "email": "nope"}), json!({"id": "", "name": "A"})]
    {
        let answer = t.e2e.chat_event(event(&t.scope, user.clone())).await;
        assert_eq!(answer.status(), 400, "{user}");
        assert_eq!(answer.json::<Value>().await.unwrap()["error"]["code"], "invalid_body");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(t.crm_calls().await.is_empty(), "nothing reached Kommo");
}

async fn a_messages_source_is_made_once_per_account_before_its_import(on_dynamodb: bool) {
    let t = Installed::start(on_dynamodb).await;
    t.chat_of("conv-s1", json!({"id": "client-s1", "name": "Sam"}), Some("line-1")).await;
    let sources = t.kommo.admin_get(&format!("sources?subdomain={}", t.subdomain)).await;
    let made: Vec<&Value> = sources["sources"].as_array().unwrap().iter().collect();
    assert_eq!(made.len(), 1, "{sources}");
    assert_eq!(
        (made[0]["external_id"].as_str(), made[0]["client_id"].as_str()),
        (Some("line-1"), Some(t.client_id.as_str()))
    );
    let crm = t.crm_calls().await;
    let created_at = crm.iter().find(|c| c["method"] == "POST").expect("created")["received_at"].as_f64().unwrap();
    let amojo = t.e2e.amojo.calls(&t.scope).await;
    let chat = amojo.iter().find(|c| c["body"]["conversation_id"] == "conv-s1").expect("the chat");
    assert_eq!(chat["body"]["source"]["external_id"], "line-1");
    assert!(chat["received_at"].as_f64().unwrap() > created_at, "the source exists before the chat names it");

    // Another conversation on the same source: the store knows it, Kommo is not asked.
    t.chat_of("conv-s2", json!({"id": "client-s2", "name": "Tom"}), Some("line-1")).await;
    // A source Kommo has already (made by the operator): found, not made again.
    let tokens = t.kommo.admin_get(&format!("tokens?subdomain={}", t.subdomain)).await;
    let access = tokens["tokens"].as_array().unwrap().last().unwrap()["access_token"].as_str().unwrap().to_owned();
    let made = reqwest::Client::new()
        .post(format!("{}/api/v4/sources", t.kommo.url))
        .bearer_auth(&access)
        .json(&json!([{"name": "Line two", "external_id": "line-2"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 200);
    t.chat_of("conv-s3", json!({"id": "client-s3", "name": "Una"}), Some("line-2")).await;
    let crm = t.crm_calls().await;
    let bridge_posts =
        crm.iter().filter(|c| c["method"] == "POST" && c["headers"].get("x-kommo-account-host").is_some()).count();
    assert_eq!(bridge_posts, 1, "one source made by the bridge in all: {crm:?}");
    let lists = crm.iter().filter(|c| c["method"] == "GET" && c["path"] == "/api/v4/sources").count();
    assert_eq!(lists, 2, "looked up once per source never seen, not per message");

    if let Some((endpoint, table)) = &t.table {
        cli_lists_and_creates_sources(&t, endpoint, table).await;
    }
}

#[tokio::test]
async fn a_messages_source_is_made_once_per_account_before_its_import_in_memory() {
    a_messages_source_is_made_once_per_account_before_its_import(false).await;
}

#[tokio::test]
async fn a_messages_source_is_made_once_per_account_before_its_import_on_dynamodb() {
    a_messages_source_is_made_once_per_account_before_its_import(true).await;
}

/// `bridge-cli sources`: what Kommo and the registry hold, and a source made ahead, named.
async fn cli_lists_and_creates_sources(t: &Installed, endpoint: &str, table: &str) {
    let account = t.kommo.admin_get(&format!("accounts?subdomain={}", t.subdomain)).await;
    let account_id = account["id"].as_u64().unwrap().to_string();
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(support::workspace_binary("bridge-cli"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TABLE_NAME", table)
            .env("DYNAMODB_ENDPOINT", endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("KOMMO_CLIENT_ID", &t.client_id)
            .env("KOMMO_REDIRECT_URI", REDIRECT_URI)
            .env("KOMMO_TOKEN_KEY", TOKEN_KEY)
            .env("KOMMO_INTEGRATION_SECRET", &t.kommo.secret)
            .env("KOMMO_API_URL", &t.kommo.url)
            .output()
            .expect("bridge-cli runs");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.code(), text, String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (code, listed, errors) = cli(&["sources", "list", "--kommo-account-id", &account_id]);
    assert_eq!(code, Some(0), "{listed}{errors}");
    assert!(listed.contains("line-1") && listed.contains("line-2"), "{listed}");
    let (code, created, errors) = cli(&[
        "sources",
        "create",
        "--kommo-account-id",
        &account_id,
        "--external-id",
        "line-3",
        "--name",
        "Line three",
    ]);
    assert_eq!(code, Some(0), "{created}{errors}");
    let sources = t.kommo.admin_get(&format!("sources?subdomain={}", t.subdomain)).await;
    let line_3 = sources["sources"].as_array().unwrap().iter().find(|s| s["external_id"] == "line-3").cloned();
    assert_eq!(line_3.expect("made in Kommo")["name"], "Line three");
    let (_, listed, _) = cli(&["sources", "list", "--kommo-account-id", &account_id]);
    assert!(listed.lines().any(|line| line.contains("line-3") && line.contains("remembered")), "{listed}");
    let (code, _, errors) = cli(&["sources", "create", "--kommo-account-id", &account_id, "--external-id", ""]);
    assert_eq!(code, Some(2), "{errors}");
}
