//! Installing the integration with no manual step, end to end over real HTTP: the dev
//! server's Redirect URI between the fake Kommo (OAuth and REST: codes work once, the account
//! host checked) and the fake amojo (the channel's `connect`, its signature checked), on the
//! in-memory store and on the DynamoDB-compatible server.

mod support;

use serde_json::{Value, json};
use support::{E2e, Fake, unique};

const REDIRECT_URI: &str = "https://bridge.example.com/kommo/oauth/callback";
const TOKEN_KEY: &str = "5f0e1d2c3b4a59687766554433221100ffeeddccbbaa99887766554433221100";

struct Installing {
    e2e: E2e,
    kommo: Fake,
    client_id: String,
    http: reqwest::Client,
    /// The dev server's table, on DynamoDB.
    table: Option<String>,
}

impl Installing {
    fn start(on_dynamodb: bool) -> Self {
        Self::start_with(on_dynamodb, &[])
    }

    fn start_with(on_dynamodb: bool, extra: &[(&str, String)]) -> Self {
        let kommo = Fake::kommo();
        let client_id = unique("client-");
        let mut env: Vec<(&str, String)> = vec![
            ("KOMMO_CLIENT_ID", client_id.clone()),
            ("KOMMO_REDIRECT_URI", REDIRECT_URI.into()),
            ("KOMMO_TOKEN_KEY", TOKEN_KEY.into()),
            ("KOMMO_API_URL", kommo.url.clone()),
            // The client secret of Kommo's OAuth is the integration's secret key.
            ("KOMMO_INTEGRATION_SECRET", kommo.secret.clone()),
        ];
        if on_dynamodb {
            env.push(("DYNAMODB_ENDPOINT", support::required_env("TEST_DYNAMODB_ENDPOINT")));
            env.push(("TABLE_NAME", unique("installs-")));
        }
        env.extend(extra.iter().cloned());
        let table = env.iter().find(|(name, _)| *name == "TABLE_NAME").map(|(_, table)| table.clone());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let e2e = E2e::between(Fake::amojo(), Fake::chat_service(), &env);
        Self { e2e, kommo, client_id, http: reqwest::Client::new(), table }
    }

    /// An account in the fake Kommo and a code issued for it: (account, code, referer).
    async fn account_with_code(&self) -> (Value, String, String) {
        let subdomain = unique("shop-");
        let account = self.kommo.admin_post("accounts", json!({"subdomain": subdomain})).await;
        let code = self.code_for(&subdomain).await;
        (account, code, format!("{subdomain}.kommo.com"))
    }

    async fn code_for(&self, subdomain: &str) -> String {
        self.code_by(subdomain, None).await
    }

    /// A code as Kommo issues it when `user_id` (default: the account's administrator) installs.
    async fn code_by(&self, subdomain: &str, user_id: Option<u64>) -> String {
        let mut request = json!({"subdomain": subdomain, "client_id": self.client_id, "redirect_uri": REDIRECT_URI});
        if let Some(user_id) = user_id {
            request["user_id"] = json!(user_id);
        }
        let issued = self.kommo.admin_post("codes", request).await;
        issued["code"].as_str().unwrap().to_owned()
    }

    /// The account's registry item, on the DynamoDB-compatible server.
    async fn stored_account(&self, account_id: u64) -> Option<shared::ports::store::AccountRecord> {
        use shared::ports::store::AccountRegistry;
        let table = self.table.as_ref().expect("on DynamoDB");
        let client = shared::adapters::dynamo::client_from_env(Some(&support::required_env("TEST_DYNAMODB_ENDPOINT")));
        shared::adapters::dynamo::DynamoStore::new(client, table.clone()).get_account(account_id).await.unwrap()
    }

    /// Waits until Kommo's users list was asked for `subdomain` and answered `status` (the
    /// managers' read runs as queued work after an install).
    async fn users_read(&self, subdomain: &str, status: u16) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let calls = self.kommo.calls(subdomain).await;
            let answered = calls.iter().any(|call| {
                call["path"].as_str().is_some_and(|path| path.starts_with("/api/v4/users"))
                    && call["reply_status"] == status
            });
            if answered {
                // The directory is written just after the answer.
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                return;
            }
            assert!(std::time::Instant::now() < deadline, "no users read answered {status}: {calls:?}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn callback(&self, query: &str) -> (u16, String) {
        let url = format!("{}/kommo/oauth/callback?{query}", self.e2e.server.base);
        let response = self.http.get(url).send().await.expect("the dev server answers");
        let status = response.status().as_u16();
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/html"), "{content_type}");
        (status, response.text().await.unwrap())
    }

    /// A Kommo UI call with a one-time token for `account_id` at `host`, as the widget makes it.
    async fn ui_presence(&self, account_id: u64, host: &str) -> u16 {
        self.ui_presence_with(account_id, host, json!({})).await
    }

    /// [`Self::ui_presence`] with some of the token's claims replaced by `changed`.
    async fn ui_presence_with(&self, account_id: u64, host: &str, changed: Value) -> u16 {
        let now = shared::time::Clock::now_s(&shared::time::SystemClock);
        let mut claims = json!({"iss": format!("https://{host}"), "aud": "https://bridge.example.com",
                                "client_uuid": self.client_id, "account_id": account_id, "user_id": 7,
                                "iat": now, "nbf": now, "exp": now + 60});
        for (name, value) in changed.as_object().unwrap() {
            claims[name] = value.clone();
        }
        let token = shared::signing::one_time_token::issue(&self.kommo.secret, &claims);
        let url = format!("{}/kommo/ui/conversations/conv-1/presence", self.e2e.server.base);
        let request = self.http.get(url).header("origin", "https://acme.kommo.com").header("x-auth-token", token);
        request.send().await.expect("the dev server answers").status().as_u16()
    }
}

async fn an_install_connects_the_channel_and_serves_the_account(on_dynamodb: bool) {
    let t = Installing::start(on_dynamodb);
    let (account, code, referer) = t.account_with_code().await;
    let account_id = account["id"].as_u64().unwrap();
    let amojo_id = account["amojo_id"].as_str().unwrap();
    assert_eq!(t.ui_presence(account_id, &referer).await, 403, "not served before it is installed");

    let (status, page) = t.callback(&format!("code={code}&referer={referer}&from_widget=1")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(&referer));
    let channel = t.e2e.scope.trim_end_matches("_acc-1");
    let connects = t.e2e.amojo.calls(channel).await;
    let connect = connects.iter().find(|c| c["body"]["account_id"] == amojo_id).expect("the channel connected");
    assert_eq!(connect["signature_ok"], true);
    assert_eq!(connect["path"], format!("/v2/origin/custom/{channel}/connect"));
    assert_eq!(t.ui_presence(account_id, &referer).await, 200, "the widget's token works with no KOMMO_ACCOUNTS entry");
    // A token Kommo would not have made for this account and integration is refused.
    for changed in [
        json!({"iss": "https://other-shop.kommo.com"}),
        json!({"aud": "https://elsewhere.example.com"}),
        json!({"aud": null}),
        json!({"client_uuid": "another-integration"}),
        json!({"exp": shared::time::Clock::now_s(&shared::time::SystemClock) + 86_400}),
    ] {
        assert_eq!(t.ui_presence_with(account_id, &referer, changed.clone()).await, 401, "{changed}");
    }

    // The same code again: Kommo refuses it, and nothing changes.
    let (status, page) = t.callback(&format!("code={code}&referer={referer}")).await;
    assert_eq!(status, 403, "{page}");
    // Installing again with a new code is the same account, connected again.
    let subdomain = referer.split('.').next().unwrap();
    let (status, _) = t.callback(&format!("code={}&referer={referer}", t.code_for(subdomain).await)).await;
    assert_eq!(status, 200);
    assert_eq!(t.ui_presence(account_id, &referer).await, 200);
}

#[tokio::test]
async fn an_install_connects_the_channel_and_serves_the_account_in_memory() {
    an_install_connects_the_channel_and_serves_the_account(false).await;
}

#[tokio::test]
async fn an_install_connects_the_channel_and_serves_the_account_on_dynamodb() {
    an_install_connects_the_channel_and_serves_the_account(true).await;
}

#[tokio::test]
async fn a_redirect_kommo_would_not_make_is_refused_and_sends_nothing() {
    let t = Installing::start(true);
    let (account, code, referer) = t.account_with_code().await;
    let subdomain = referer.split('.').next().unwrap().to_owned();
    for (query, expected) in [
        (format!("referer={referer}"), 400),
        (format!("code={code}&referer=evil.example.com"), 400),
        (format!("code={code}&referer={referer}.example.com"), 400),
        (format!("code={code}&referer={subdomain}.kommo.com%2Fx"), 400),
        (format!("code={code}"), 400),
        (format!("code=not-a-code&referer={referer}"), 403),
        // Another platform's account, and the platform's own service hosts: no code nor secret
        // goes there.
        (format!("code={code}&referer={subdomain}.amocrm.ru"), 400),
        (format!("code={code}&referer={subdomain}.amocrm.com"), 400),
        (format!("code={code}&referer=www.kommo.com"), 400),
        (format!("code={code}&referer=api.kommo.com"), 400),
        (format!("code={code}&referer=amojo.kommo.com"), 400),
        // Another integration's redirect, and a state this integration never made.
        (format!("code={code}&referer={referer}&client_id=another-integration"), 400),
        (format!("code={code}&referer={referer}&state=button.00"), 400),
        (format!("code={code}&referer={referer}&state=forged"), 400),
    ] {
        let (status, page) = t.callback(&query).await;
        assert_eq!(status, expected, "{query}: {page}");
    }
    let asked: Vec<_> = [t.kommo.calls(&subdomain).await, t.kommo.calls("").await].concat();
    assert_eq!(asked.len(), 1, "only the well-formed code went to Kommo, to its account host: {asked:?}");
    assert_eq!(t.ui_presence(account["id"].as_u64().unwrap(), &referer).await, 403, "nothing was installed");
    // The code was never spent: the real install still works.
    assert_eq!(t.callback(&format!("code={code}&referer={referer}")).await.0, 200);
}

/// Kommo's disable hook: a forged call changes nothing; Kommo's own call disconnects the
/// account (tokens deleted, channel disconnected), and from then on its webhooks and events are
/// refused and nothing is forwarded, until it is installed again.
async fn a_disabled_account_is_refused_until_installed_again(on_dynamodb: bool) {
    let t = Installing::start(on_dynamodb);
    let (account, code, referer) = t.account_with_code().await;
    let (account_id, amojo_id) = (account["id"].as_u64().unwrap(), account["amojo_id"].as_str().unwrap());
    let subdomain = account["subdomain"].as_str().unwrap().to_owned();
    assert_eq!(t.callback(&format!("code={code}&referer={referer}")).await.0, 200);
    let channel = t.e2e.scope.trim_end_matches("_acc-1").to_owned();
    let scope = format!("{channel}_{amojo_id}");
    let typing = |conversation: &str| {
        json!({"type": "typing.started", "scope_id": scope, "conversation_id": conversation, "user_id": "client-1"})
            .to_string()
    };
    let webhook = json!({"account_id": amojo_id, "time": 1_700_000_000, "action": {"typing": {
        "user": {"id": "manager-1"}, "conversation": {"id": "kommo-c1", "client_id": "conv-1"},
        "expired_at": 1_700_000_005}}})
    .to_string();
    assert_eq!(t.e2e.chat_event(typing("conv-1")).await.status(), 200, "served once installed");
    assert_eq!(t.e2e.kommo_webhook_to(&scope, webhook.clone()).await.status(), 200);

    // Forged, or for another integration, or incomplete: refused, and nothing changes.
    let hook = format!("{}/kommo/oauth/disabled", t.e2e.server.base);
    let signed = shared::signing::disable_hook::sign(&t.kommo.secret, &t.client_id, &account_id.to_string());
    let forged = shared::signing::disable_hook::sign("not-the-secret", &t.client_id, &account_id.to_string());
    let other = shared::signing::disable_hook::sign(&t.kommo.secret, "another-integration", &account_id.to_string());
    for (query, expected) in [
        (format!("account_id={account_id}&client_uuid={}&signature={forged}", t.client_id), 401),
        (format!("account_id={account_id}&client_uuid=another-integration&signature={other}"), 401),
        (format!("account_id={}&client_uuid={}&signature={signed}", account_id + 1, t.client_id), 401),
        (format!("account_id={account_id}&client_uuid={}", t.client_id), 401),
        (format!("client_uuid={}&signature={signed}", t.client_id), 400),
        (format!("account_id={account_id}&signature={signed}"), 400),
    ] {
        let response = t.http.get(format!("{hook}?{query}")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), expected, "{query}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"]["code"].is_string(), "a JSON error: {error}");
    }
    assert_eq!(t.ui_presence(account_id, &referer).await, 200, "a forged disable changed nothing");
    assert_eq!(t.e2e.chat_event(typing("conv-2")).await.status(), 200);

    // Kommo's own call.
    let disabled =
        t.kommo.admin_post("disable", json!({"subdomain": subdomain, "client_id": t.client_id, "url": hook})).await;
    assert_eq!(disabled["status"], 200, "{disabled}");
    assert_eq!(disabled["body"], json!({"account_id": account_id, "state": "disconnected"}));
    let disconnects = t.e2e.amojo.calls(&channel).await;
    let disconnect = disconnects.iter().find(|c| c["path"] == format!("/v2/origin/custom/{channel}/disconnect"));
    let disconnect = disconnect.expect("the channel disconnected");
    assert_eq!(
        (disconnect["body"]["account_id"].as_str(), &disconnect["signature_ok"]),
        (Some(amojo_id), &json!(true))
    );

    let chat_before = t.e2e.chat.calls(&scope).await.len();
    let amojo_before = t.e2e.amojo.calls(&scope).await.len();
    let refused = t.e2e.chat_event(typing("conv-3")).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], "scope_disconnected");
    let refused = t.e2e.kommo_webhook_to(&scope, webhook.clone()).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(t.ui_presence(account_id, &referer).await, 403, "the widget is not served either");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(t.e2e.amojo.calls(&scope).await.len(), amojo_before, "nothing sent to Kommo");
    assert_eq!(t.e2e.chat.calls(&scope).await.len(), chat_before, "nothing forwarded to the chat service");
    // Disabled twice (Kommo may call again): the same answer, nothing more sent.
    let again =
        t.kommo.admin_post("disable", json!({"subdomain": subdomain, "client_id": t.client_id, "url": hook})).await;
    assert_eq!((&again["status"], &again["body"]["state"]), (&json!(200), &json!("disconnected")));
    let disconnects_now = t.e2e.amojo.calls(&channel).await;
    assert_eq!(disconnects_now.len(), disconnects.len(), "no second disconnect call");

    // Installed again: served again.
    assert_eq!(t.callback(&format!("code={}&referer={referer}", t.code_for(&subdomain).await)).await.0, 200);
    assert_eq!(t.e2e.chat_event(typing("conv-4")).await.status(), 200);
    assert_eq!(t.e2e.kommo_webhook_to(&scope, webhook).await.status(), 200);
    assert_eq!(t.ui_presence(account_id, &referer).await, 200);
}

#[tokio::test]
async fn a_disabled_account_is_refused_until_installed_again_in_memory() {
    a_disabled_account_is_refused_until_installed_again(false).await;
}

#[tokio::test]
async fn a_disabled_account_is_refused_until_installed_again_on_dynamodb() {
    a_disabled_account_is_refused_until_installed_again(true).await;
}

/// One identity per manager: the manager's typing and message (Kommo names them by amojo id) and
/// presence (the Kommo UI names them by Kommo user id) reach the chat service under one
/// `manager.id`, the amojo id, with the Kommo user id and name beside it: the users were read
/// from Kommo at install.
async fn a_manager_is_named_the_same_in_typing_messages_and_presence(on_dynamodb: bool) {
    let t = Installing::start(on_dynamodb);
    let (account, code, referer) = t.account_with_code().await;
    assert_eq!(t.callback(&format!("code={code}&referer={referer}")).await.0, 200);
    t.users_read(account["subdomain"].as_str().unwrap(), 200).await;
    let amojo_account = account["amojo_id"].as_str().unwrap();
    let scope = format!("{}_{amojo_account}", t.e2e.scope.trim_end_matches("_acc-1"));
    let manager = &account["users"][1];
    let (amojo_id, user_id) = (manager["amojo_id"].as_str().unwrap(), manager["id"].as_u64().unwrap());
    let conversation = unique("conv-");
    let now = shared::time::Clock::now_s(&shared::time::SystemClock);
    let typing = json!({"account_id": amojo_account, "time": now, "action": {"typing": {
        "user": {"id": amojo_id}, "conversation": {"id": "kommo-chat-1", "client_id": conversation},
        "expired_at": now + 5}}});
    assert_eq!(t.e2e.kommo_webhook_to(&scope, typing.to_string()).await.status(), 200);
    // Shown before the message ends it (a start the message overtook is never sent).
    named_in(&t, &scope, &["typing.started"]).await;
    let message = json!({"account_id": amojo_account, "time": now, "message": {
        "receiver": {"id": "kommo-client-1", "client_id": "client-1"}, "sender": {"id": amojo_id, "name": ""},
        "conversation": {"id": "kommo-chat-1", "client_id": conversation}, "timestamp": now,
        "message": {"id": unique("kommo-msg-"), "type": "text", "text": "hello"}}});
    assert_eq!(t.e2e.kommo_webhook_to(&scope, message.to_string()).await.status(), 200);
    let claims = json!({"iss": format!("https://{referer}"), "aud": "https://bridge.example.com",
                        "account_id": account["id"], "user_id": user_id, "iat": now, "nbf": now, "exp": now + 60});
    let token = shared::signing::one_time_token::issue(&t.kommo.secret, &claims);
    let viewing = t
        .http
        .post(format!("{}/kommo/ui/conversations/{conversation}/presence", t.e2e.server.base))
        .header("origin", "https://acme.kommo.com")
        .header("x-auth-token", token)
        .body(r#"{"state":"viewing"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(viewing.status(), 200);

    let kinds = ["typing.started", "typing.stopped", "message.created", "presence.changed"];
    let named = named_in(&t, &scope, &kinds).await;
    let expected = json!({"id": amojo_id, "kommo_user_id": user_id, "name": manager["name"]});
    assert_eq!(named, vec![expected.clone(); kinds.len()], "{kinds:?}");

    // The chat service's presence pull names them the same way.
    let pulled = t.e2e.chat_get(&format!("/chat/presence?scope_id={scope}&conversation_id={conversation}")).await;
    assert_eq!(pulled.status(), 200);
    let pulled: Value = pulled.json().await.unwrap();
    let online = &pulled["managers"][0];
    assert_eq!(
        (&online["id"], &online["kommo_user_id"], &online["name"]),
        (&expected["id"], &expected["kommo_user_id"], &expected["name"])
    );
}

/// The manager each of `kinds` names (`manager`, or `sender` of a message), once all arrived.
async fn named_in(t: &Installing, scope: &str, kinds: &[&str]) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let calls = t.e2e.chat.calls(scope).await;
        let named: Vec<Value> = kinds
            .iter()
            .filter_map(|kind| calls.iter().find(|c| c["body"]["type"] == *kind && c["reply_status"] == 200))
            .map(|call| {
                let body = &call["body"];
                body.get("manager").or_else(|| body.get("sender")).cloned().unwrap_or_default()
            })
            .collect();
        if named.len() == kinds.len() || std::time::Instant::now() > deadline {
            return named;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_manager_is_named_the_same_in_typing_messages_and_presence_in_memory() {
    a_manager_is_named_the_same_in_typing_messages_and_presence(false).await;
}

#[tokio::test]
async fn a_manager_is_named_the_same_in_typing_messages_and_presence_on_dynamodb() {
    a_manager_is_named_the_same_in_typing_messages_and_presence(true).await;
}

/// A declined install has its own page and calls nothing; a state the integration's button
/// carries (signed with the integration's secret) and the integration's own client_id are
/// accepted.
#[tokio::test]
async fn a_declined_install_says_so_and_a_signed_state_is_accepted() {
    let t = Installing::start(false);
    let (account, code, referer) = t.account_with_code().await;
    let subdomain = account["subdomain"].as_str().unwrap();
    let (status, page) = t.callback(&format!("error=access_denied&referer={referer}&state=x")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("declined") && !page.contains("not a Kommo installation"), "{page}");
    assert!(t.kommo.calls(subdomain).await.is_empty(), "nothing sent to Kommo");
    let state = shared::rules::install::sign_install_state(&t.kommo.secret, "site-button");
    let query = format!("code={code}&referer={referer}&state={state}&client_id={}", t.client_id);
    let (status, page) = t.callback(&query).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("connected to"), "{page}");
}

/// Kommo calls the Redirect URI once and ignores the answer: a channel that cannot be connected
/// once the code is spent keeps the account `connecting`, and queued work connects it.
async fn a_connect_that_fails_after_the_code_is_spent_is_finished_by_queued_work(on_dynamodb: bool) {
    let t = Installing::start(on_dynamodb);
    let (account, code, referer) = t.account_with_code().await;
    let (account_id, amojo_id) = (account["id"].as_u64().unwrap(), account["amojo_id"].as_str().unwrap());
    let channel = t.e2e.scope.trim_end_matches("_acc-1").to_owned();
    let outage = json!({"scope": channel, "seconds": 2, "match": "/connect", "reply": {"status": 503}});
    t.e2e.amojo.admin_post("fault", outage).await;
    let started = std::time::Instant::now();
    let (status, page) = t.callback(&format!("code={code}&referer={referer}")).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "answered within Kommo's wait");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("being connected"), "{page}");
    if on_dynamodb {
        let stored = t.stored_account(account_id).await.expect("kept with its tokens");
        assert_eq!(stored.state.as_str(), "connecting");
        assert!(stored.sealed_tokens.is_some());
    }
    // amojo back: the queued connect succeeds, with no new code.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let calls = t.e2e.amojo.calls(&channel).await;
        let connected = calls.iter().any(|c| c["body"]["account_id"] == amojo_id && c["reply_status"] == 200);
        if connected {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never connected: {calls:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    if on_dynamodb {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while t.stored_account(account_id).await.unwrap().state.as_str() != "connected" {
            assert!(std::time::Instant::now() < deadline, "not marked connected");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let exchanges = t.kommo.calls(account["subdomain"].as_str().unwrap()).await;
    let exchanges = exchanges.iter().filter(|c| c["grant_type"] == "authorization_code").count();
    assert_eq!(exchanges, 1, "the code was spent once");
    assert_eq!(t.ui_presence(account_id, &referer).await, 200);
}

#[tokio::test]
async fn a_connect_that_fails_after_the_code_is_spent_is_finished_by_queued_work_in_memory() {
    a_connect_that_fails_after_the_code_is_spent_is_finished_by_queued_work(false).await;
}

#[tokio::test]
async fn a_connect_that_fails_after_the_code_is_spent_is_finished_by_queued_work_on_dynamodb() {
    a_connect_that_fails_after_the_code_is_spent_is_finished_by_queued_work(true).await;
}

/// An account a user who is not an administrator authorised: Kommo refuses its users list
/// (403), so managers are named as the webhooks name them (a non-empty `sender.name`, else no
/// name), and the account says so.
async fn a_non_administrators_install_names_managers_from_the_webhooks(on_dynamodb: bool) {
    let t = Installing::start(on_dynamodb);
    let subdomain = unique("shop-");
    let account = t.kommo.admin_post("accounts", json!({"subdomain": subdomain})).await;
    let manager = &account["users"][1];
    let code = t.code_by(&subdomain, manager["id"].as_u64()).await;
    let (status, page) = t.callback(&format!("code={code}&referer={subdomain}.kommo.com")).await;
    assert_eq!(status, 200, "{page}");
    t.users_read(&subdomain, 403).await;
    let amojo_account = account["amojo_id"].as_str().unwrap();
    let scope = format!("{}_{amojo_account}", t.e2e.scope.trim_end_matches("_acc-1"));
    let conversation = unique("conv-");
    let now = shared::time::Clock::now_s(&shared::time::SystemClock);
    for (name, text) in [("", "first"), ("Mia", "second")] {
        let message = json!({"account_id": amojo_account, "time": now, "message": {
            "receiver": {"id": "kommo-client-1", "client_id": "client-1"},
            "sender": {"id": manager["amojo_id"], "name": name},
            "conversation": {"id": "kommo-chat-1", "client_id": conversation}, "timestamp": now,
            "message": {"id": unique("kommo-msg-"), "type": "text", "text": text, "markup": null, "file_size": 0}}});
        assert_eq!(t.e2e.kommo_webhook_to(&scope, message.to_string()).await.status(), 200);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let senders = loop {
        let calls = t.e2e.chat.calls(&scope).await;
        let senders: Vec<Value> = calls
            .iter()
            .filter(|c| c["body"]["type"] == "message.created" && c["reply_status"] == 200)
            .map(|c| c["body"]["sender"].clone())
            .collect();
        if senders.len() == 2 || std::time::Instant::now() > deadline {
            break senders;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(senders.len(), 2, "{senders:?}");
    assert!(senders.iter().all(|s| s["id"] == manager["amojo_id"]), "{senders:?}");
    assert!(senders.iter().any(|s| s.get("name").is_none()), "an empty name is never sent: {senders:?}");
    assert!(senders.iter().any(|s| s["name"] == "Mia"), "{senders:?}");
    assert!(senders.iter().all(|s| s.get("name") != Some(&json!(""))), "{senders:?}");
    if on_dynamodb {
        let stored = t.stored_account(account["id"].as_u64().unwrap()).await.unwrap();
        assert!(stored.users_refused, "said in bridge-cli accounts");
        assert_eq!(stored.state.as_str(), "connected");
    }
}

#[tokio::test]
async fn a_non_administrators_install_names_managers_from_the_webhooks_in_memory() {
    a_non_administrators_install_names_managers_from_the_webhooks(false).await;
}

#[tokio::test]
async fn a_non_administrators_install_names_managers_from_the_webhooks_on_dynamodb() {
    a_non_administrators_install_names_managers_from_the_webhooks(true).await;
}

/// A disable hook whose account's tokens still work (one user's access revoked, say) keeps the
/// account served; an account also listed in KOMMO_ACCOUNTS, once really disabled, is refused
/// on the Kommo UI as on every other route.
async fn a_disable_hook_takes_an_account_dark_only_once_kommo_confirms_it(on_dynamodb: bool) {
    let kommo = Fake::kommo();
    let subdomain = unique("shop-");
    let account = kommo.admin_post("accounts", json!({"subdomain": subdomain})).await;
    let (account_id, amojo_id) = (account["id"].as_u64().unwrap(), account["amojo_id"].as_str().unwrap());
    let t = Installing::start_with(on_dynamodb, &[("KOMMO_ACCOUNTS", format!("1:acc-1,{account_id}:{amojo_id}"))]);
    let referer = format!("{subdomain}.kommo.com");
    assert_eq!(t.ui_presence(account_id, &referer).await, 200, "served through KOMMO_ACCOUNTS");
    let code = t.code_for(&subdomain).await;
    assert_eq!(t.callback(&format!("code={code}&referer={referer}")).await.0, 200);
    let hook = format!("{}/kommo/oauth/disabled", t.e2e.server.base);
    let signature = shared::signing::disable_hook::sign(&t.kommo.secret, &t.client_id, &account_id.to_string());
    let query = format!("account_id={account_id}&client_uuid={}&signature={signature}", t.client_id);
    // The tokens still work: kept.
    let answer = t.http.get(format!("{hook}?{query}")).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(answer.json::<Value>().await.unwrap(), json!({"account_id": account_id, "state": "connected"}));
    assert_eq!(t.ui_presence(account_id, &referer).await, 200, "not taken dark");
    // Disabled for real (Kommo revokes the tokens, then calls): refused, the UI included.
    let disabled =
        t.kommo.admin_post("disable", json!({"subdomain": subdomain, "client_id": t.client_id, "url": hook})).await;
    assert_eq!(disabled["body"], json!({"account_id": account_id, "state": "disconnected"}), "{disabled}");
    assert_eq!(t.ui_presence(account_id, &referer).await, 403, "KOMMO_ACCOUNTS does not bring it back");
}

#[tokio::test]
async fn a_disable_hook_takes_an_account_dark_only_once_kommo_confirms_it_in_memory() {
    a_disable_hook_takes_an_account_dark_only_once_kommo_confirms_it(false).await;
}

#[tokio::test]
async fn a_disable_hook_takes_an_account_dark_only_once_kommo_confirms_it_on_dynamodb() {
    a_disable_hook_takes_an_account_dark_only_once_kommo_confirms_it(true).await;
}
