//! Presence both ways, and the Kommo UI's routes, simulated with a manual clock.

mod support;

use shared::models::chat::BridgeEvent;
use shared::ports::store::Store;
use shared::time::Clock;
use support::*;

const UI_PRESENCE: &str = "/kommo/ui/conversations/conv-1/presence";

async fn client_view(sim: &Sim) -> serde_json::Value {
    Sim::json(&sim.ui("GET", UI_PRESENCE, Some(sim.token(42)), "").await)
}

async fn open_conversation(sim: &Sim, conversation: &str) -> serde_json::Value {
    let path = format!("/kommo/ui/conversations/{conversation}/read");
    Sim::json(&sim.ui("POST", &path, Some(sim.token(42)), "").await)["read"].clone()
}

async fn viewing(sim: &Sim, user: u64) {
    let response = sim.ui("POST", UI_PRESENCE, Some(sim.token(user)), r#"{"state":"viewing"}"#).await;
    assert_eq!(response.status(), 200, "{:?}", response.body());
}

async fn left(sim: &Sim, user: u64) {
    assert_eq!(sim.ui("POST", UI_PRESENCE, Some(sim.token(user)), r#"{"state":"left"}"#).await.status(), 200);
}

#[tokio::test]
async fn a_ten_minute_visit_pushes_one_online_and_one_offline_and_a_reconnect_adds_none() {
    let sim = Sim::new();
    let mut t = T0;
    while t < T0 + 600_000 {
        sim.advance_to(t).await;
        viewing(&sim, 42).await;
        if t == T0 + 300_000 {
            // A page reload: left, then viewing again 2 s later.
            left(&sim, 42).await;
            sim.advance_to(t + 2000).await;
            viewing(&sim, 42).await;
        }
        t += 15_000;
    }
    sim.advance_to(T0 + 600_000).await;
    left(&sim, 42).await;
    sim.advance_to(T0 + 700_000).await;
    let grace = sim.bridge.config.presence.grace_ms;
    assert_eq!(sim.presence_pushes(), vec![(T0, true), (T0 + 600_000 + grace, false)]);
}

#[tokio::test]
async fn a_closed_tab_goes_offline_when_its_window_lapses() {
    let sim = Sim::new();
    viewing(&sim, 42).await;
    sim.advance_to(T0 + 15_000).await;
    viewing(&sim, 42).await; // coalesced: the window still ends 60 s after the first write
    sim.advance_to(T0 + 300_000).await;
    let window = sim.bridge.config.presence.window_ms;
    assert_eq!(sim.presence_pushes(), vec![(T0, true), (T0 + window, false)]);
    assert!(sim.timers.pending().is_empty());
}

#[tokio::test]
async fn two_managers_in_one_conversation_are_pushed_each_and_pulled_together() {
    let sim = Sim::new();
    viewing(&sim, 42).await;
    viewing(&sim, 43).await;
    sim.advance_to(T0 + 1).await;
    let managers: Vec<String> = sim
        .chat
        .events()
        .into_iter()
        .filter_map(|e| match e.call {
            BridgeEvent::PresenceChanged { manager, online: true, .. } => Some(manager.id),
            _ => None,
        })
        .collect();
    assert_eq!(managers, vec!["42", "43"]);
}

#[tokio::test]
async fn a_thousand_client_heartbeats_in_30_s_cost_two_writes_in_all() {
    let sim = Sim::new();
    let before = sim.store.op_counts().writes;
    for i in 0..1000 {
        sim.clock.set_ms(T0 + i * 30);
        assert_eq!(sim.chat_event(&presence_event("presence.heartbeat", "phone")).await.status(), 200);
    }
    // Coming online writes the window and notes the client's conversation (for the Kommo UI),
    // once each; every later heartbeat falls within the 30 s coalescing and writes nothing.
    // Heartbeats are not remembered by webhook-id (shared::rules::replay): no write for that.
    assert_eq!(sim.store.op_counts().writes - before, 2);
    assert_eq!(client_view(&sim).await["client"]["online"], true);
    // The first heartbeat past the coalescing is written, and carries the window on.
    let before = sim.store.op_counts().writes;
    sim.clock.set_ms(T0 + 30_000);
    assert_eq!(sim.chat_event(&presence_event("presence.heartbeat", "phone")).await.status(), 200);
    assert_eq!(sim.store.op_counts().writes - before, 1, "the window");
    sim.clock.set_ms(T0 + 89_999);
    assert_eq!(client_view(&sim).await["client"]["online"], true);
}

#[tokio::test]
async fn the_kommo_ui_sees_the_client_online_typing_and_last_seen_exactly_at_the_window_edges() {
    let sim = Sim::new();
    sim.chat_event(&presence_event("presence.online", "phone")).await;
    sim.chat_event(&client_typing("typing.started", "conv-1", None)).await;
    assert_eq!(
        client_view(&sim).await["client"],
        serde_json::json!({"online": true, "last_seen_at": T0 / 1000, "typing": true})
    );
    let window = sim.bridge.config.presence.window_ms;
    sim.clock.set_ms(T0 + window - 1000);
    assert_eq!(client_view(&sim).await["client"]["online"], true);
    assert_eq!(client_view(&sim).await["client"]["typing"], false, "the typing lease lapsed");
    sim.clock.set_ms(T0 + window + 1000);
    assert_eq!(
        client_view(&sim).await["client"],
        serde_json::json!({"online": false, "last_seen_at": T0 / 1000, "typing": false})
    );
}

#[tokio::test]
async fn the_most_present_device_wins_and_offline_keeps_last_seen() {
    let sim = Sim::new();
    sim.chat_event(&presence_event("presence.online", "phone")).await;
    sim.clock.set_ms(T0 + 5000);
    sim.chat_event(&presence_event("presence.online", "laptop")).await;
    sim.clock.set_ms(T0 + 6000);
    sim.chat_event(&presence_event("presence.offline", "phone")).await;
    let body = Sim::json(&sim.ui("GET", UI_PRESENCE, Some(sim.token(42)), "").await);
    assert_eq!(body["client"]["online"], true);
    sim.chat_event(&presence_event("presence.offline", "laptop")).await;
    let body = Sim::json(&sim.ui("GET", UI_PRESENCE, Some(sim.token(42)), "").await);
    assert_eq!(
        (body["client"]["online"].clone(), body["client"]["last_seen_at"].clone()),
        (false.into(), (T0 / 1000 + 6).into())
    );
}

#[tokio::test]
async fn bad_tokens_get_401_and_change_nothing() {
    use base64::Engine;
    let sim = Sim::new();
    let secret = sim.integration_secret().to_owned();
    let now = sim.clock.now_s();
    let issue = |claims: serde_json::Value, key: &str| shared::signing::one_time_token::issue(key, &claims);
    let base = serde_json::json!({"account_id": 1, "user_id": 42, "exp": now + 60});
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(base.to_string());
    let header = |alg: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}"}}"#));
    let bad = [
        None,
        Some(issue(base.clone(), "not-the-integration-secret")),
        Some(issue(serde_json::json!({"account_id": 1, "user_id": 42, "exp": now - 60}), &secret)),
        Some(issue(serde_json::json!({"account_id": 1, "user_id": 42, "exp": now + 600, "nbf": now + 300}), &secret)),
        Some(format!("{}.{payload}.", header("none"))),
        Some(format!("{}.{payload}.c2lnbmF0dXJl", header("RS256"))),
        Some("not-a-jwt".into()),
    ];
    for token in bad {
        let response = sim.ui("POST", UI_PRESENCE, token.clone(), r#"{"state":"viewing"}"#).await;
        assert_eq!(response.status(), 401, "{token:?}");
        assert_eq!(Sim::json(&response)["error"]["code"], "bad_token");
        assert_eq!(
            response.headers()["access-control-allow-origin"],
            "https://acme.kommo.com",
            "errors carry CORS too"
        );
    }
    sim.advance_to(T0 + 120_000).await;
    assert!(sim.chat.events().is_empty());
    assert_eq!(sim.store.op_counts().writes, 0);
}

#[tokio::test]
async fn an_account_the_bridge_does_not_serve_is_refused() {
    let sim = Sim::with_env(&[("KOMMO_ACCOUNTS", "2:acc-2")]);
    let response = sim.ui("GET", UI_PRESENCE, Some(sim.token(42)), "").await;
    assert_eq!(response.status(), 403);
    assert_eq!(Sim::json(&response)["error"]["code"], "account_not_linked");
}

#[tokio::test]
async fn cors_preflight_answers_kommo_origins_only() {
    let sim = Sim::new();
    let response = sim.ui("OPTIONS", UI_PRESENCE, None, "").await;
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["access-control-allow-origin"], "https://acme.kommo.com");
    assert!(response.headers()["access-control-allow-headers"].to_str().unwrap().contains("X-Auth-Token"));
    let request =
        http::Request::options(UI_PRESENCE).header("origin", "https://evil.example").body(bytes::Bytes::new()).unwrap();
    let response = sim.bridge.handle(shared::app::routes::EntryPoint::KommoWebhook, request).await;
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn opening_a_conversation_reads_the_newest_client_message_once() {
    let sim = Sim::new();
    assert_eq!(open_conversation(&sim, "conv-1").await, serde_json::Value::Null, "nothing to read yet");
    for msgid in ["chat-1", "chat-2"] {
        let body = client_message("conv-1", msgid)
            .replace("1700000000000", &(T0 + if msgid == "chat-1" { 0 } else { 1000 }).to_string());
        sim.chat_event(&body).await;
    }
    sim.advance_to(T0 + 5000).await;
    assert_eq!(open_conversation(&sim, "conv-1").await, "chat-2");
    assert_eq!(open_conversation(&sim, "conv-1").await, serde_json::Value::Null, "already reported");
    // The widget names the conversation by Kommo's chat id (the import recorded it).
    let body = client_message("conv-1", "chat-3").replace("1700000000000", &(T0 + 2000).to_string());
    sim.chat_event(&body).await;
    sim.advance_to(T0 + 6000).await;
    assert_eq!(open_conversation(&sim, "chat-conv-1").await, "chat-3");
    sim.advance_to(T0 + 7000).await;
    let reads: Vec<String> = sim
        .chat
        .events()
        .into_iter()
        .filter_map(|e| match e.call {
            BridgeEvent::MessageRead { msgid, conversation_id, .. } => Some(format!("{conversation_id}/{msgid}")),
            _ => None,
        })
        .collect();
    assert_eq!(reads, vec!["conv-1/chat-2", "conv-1/chat-3"]);
}

#[tokio::test]
async fn with_the_privacy_switches_off_nothing_of_that_kind_is_forwarded_or_invented() {
    let sim = Sim::with_env(&[
        ("FORWARD_MANAGER_TYPING", "false"),
        ("FORWARD_READ_RECEIPTS", "off"),
        ("FORWARD_MANAGER_PRESENCE", "0"),
    ]);
    viewing(&sim, 42).await;
    sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000 + 5)).await;
    sim.chat_event(&client_message("conv-1", "chat-1")).await;
    sim.advance_to(T0 + 1000).await;
    let token = sim.token(42);
    let read = Sim::json(&sim.ui("POST", "/kommo/ui/conversations/conv-1/read", Some(token), "").await);
    assert_eq!(read["read"], serde_json::Value::Null);
    sim.advance_to(T0 + 300_000).await;
    // Only what became of the client's own message, which no switch is about.
    let told: Vec<_> = sim.chat.events().into_iter().map(|e| e.call).collect();
    assert!(matches!(&told[..], [BridgeEvent::MessageDelivered { .. }]), "{told:?}");
}

#[tokio::test]
async fn a_short_window_never_flaps_while_heartbeats_keep_coming() {
    let sim = Sim::with_env(&[("PRESENCE_WINDOW_S", "5"), ("PRESENCE_GRACE_S", "1")]);
    for i in 0..60 {
        sim.advance_to(T0 + i * 1000).await;
        viewing(&sim, 42).await;
    }
    sim.advance_to(T0 + 120_000).await;
    let pushes = sim.presence_pushes();
    assert_eq!(pushes.len(), 2, "one online, one offline: {pushes:?}");
    assert_eq!(pushes[0], (T0, true));
    // Offline one window after the last written heartbeat (written at most every half window).
    let (offline_at, online) = pushes[1];
    assert!(!online && (T0 + 59_000 + 2500..=T0 + 59_000 + 5000).contains(&offline_at), "{pushes:?}");
}
