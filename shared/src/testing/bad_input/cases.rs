//! The bad-input table: every route given requests it must refuse, each with the status it
//! must get.

use bytes::Bytes;

use super::super::sim::*;
use crate::app::http::HttpRequest;
use crate::app::routes::EntryPoint;
use crate::ports::store::Store;
use crate::rules::id_checks::{MAX_ID_BYTES, MAX_PATH_ID_BYTES};
use crate::signing::{kommo_webhook, one_time_token};
use crate::time::Clock;

pub struct Case {
    pub name: &'static str,
    pub entry: EntryPoint,
    pub request: HttpRequest,
    pub status: u16,
}

/// A client's `message.created` naming `source` as its source's external id (JSON-escaped).
fn client_message_with_source(source: &str) -> String {
    format!(
        r#"{{"type":"message.created","scope_id":"{SCOPE}","conversation_id":"c","msgid":"m","user":{{"id":"u","name":"U"}},"message":{{"type":"text","text":"hi"}},"timestamp_ms":1,"source":{{"external_id":"{source}"}}}}"#
    )
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

pub fn cases<S: Store + 'static>(sim: &Sim<S>) -> Vec<Case> {
    let channel_secret = sim.bridge.config.channel_secret.expose().to_owned();
    let chat_secret = sim.chat_secret().clone();
    let integration_secret = sim.integration_secret().to_owned();
    let now = sim.clock.now_s();
    let webhook_url = format!("/kommo/webhook/{SCOPE}");
    let typing = manager_typing("conv-1", "manager-1", now + 5);

    let kommo = |name, path: &str, body: &[u8], signature: Option<String>, status| {
        let mut request = http::Request::post(path);
        if let Some(signature) = signature {
            request = request.header("x-signature", signature);
        }
        Case {
            name,
            entry: EntryPoint::KommoWebhook,
            request: request.body(Bytes::copy_from_slice(body)).unwrap(),
            status,
        }
    };
    let signed = |name, body: &str, status| {
        let signature = kommo_webhook::sign(&channel_secret, body.as_bytes());
        kommo(name, &webhook_url, body.as_bytes(), Some(signature), status)
    };
    let chat_with = |name, body: &[u8], id: Option<&str>, ts: Option<String>, sig: Option<String>, status| {
        let mut request = http::Request::post("/chat/events");
        if let Some(id) = id {
            request = request.header("webhook-id", id);
        }
        if let Some(ts) = ts {
            request = request.header("webhook-timestamp", ts);
        }
        if let Some(sig) = sig {
            request = request.header("webhook-signature", sig);
        }
        Case {
            name,
            entry: EntryPoint::ChatCallback,
            request: request.body(Bytes::copy_from_slice(body)).unwrap(),
            status,
        }
    };
    let chat = |name, body: &str, status| {
        let signature = chat_secret.sign("msg_bad", now, body.as_bytes());
        chat_with(name, body.as_bytes(), Some("msg_bad"), Some(now.to_string()), Some(signature), status)
    };
    let presence_pull = |name, query: &str, signed_ok: bool, status| {
        let signature = if signed_ok { chat_secret.sign("msg_get", now, b"") } else { "v1,AAAA".into() };
        let request = http::Request::get(format!("/chat/presence?{query}"))
            .header("webhook-id", "msg_get")
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", signature)
            .body(Bytes::new())
            .unwrap();
        Case { name, entry: EntryPoint::ChatCallback, request, status }
    };
    let ui = |name, method: &str, path: &str, token: Option<String>, body: &str, status| {
        let mut request = http::Request::builder().method(method).uri(path).header("origin", "https://acme.kommo.com");
        if let Some(token) = token {
            request = request.header("x-auth-token", token);
        }
        Case {
            name,
            entry: EntryPoint::KommoWebhook,
            request: request.body(Bytes::from(body.to_owned())).unwrap(),
            status,
        }
    };
    let token = |claims: serde_json::Value, key: &str| Some(one_time_token::issue(key, &claims));
    let good_claims =
        serde_json::json!({"iss": "https://acme.kommo.com", "account_id": 1, "user_id": 42, "exp": now + 60});
    let event = |kind: &str, fields: &str| format!(r#"{{"type":"{kind}","scope_id":"{SCOPE}"{fields}}}"#);
    let status = |fields: &str| event("message.status", &format!(r#","reference":"kommo-1"{fields}"#));
    let status_with_reference =
        |reference: &str| event("message.status", &format!(r#","reference":"{reference}","status":"read""#));
    let ui_presence = "/kommo/ui/conversations/conv-1/presence";
    let sig = |body: &str, secret: &str| Some(kommo_webhook::sign(secret, body.as_bytes()));
    let over = "x".repeat(MAX_ID_BYTES + 1);
    let path_over = "k".repeat(MAX_PATH_ID_BYTES + 1);
    let message = |fields: &str| {
        event(
            "message.created",
            &format!(
                r#","conversation_id":"c","msgid":"m","user":{{"id":"u"}},"message":{{"type":"text","text":"hi"}},"timestamp_ms":1{fields}"#
            ),
        )
    };
    let typing_event = |conversation: &str, user: &str| {
        event("typing.started", &format!(r#","conversation_id":"{conversation}","user_id":"{user}""#))
    };
    let at_scope = |scope: &str| {
        format!(r#"{{"type":"typing.started","scope_id":"{scope}","conversation_id":"c","user_id":"u"}}"#)
    };
    let manager_message_with =
        |from: &str, to: &str| manager_message("conv-1", "manager-1", "kommo-1").replace(from, to);
    let mut cases = vec![
        // --- Kommo webhooks
        kommo("webhook without X-Signature", &webhook_url, typing.as_bytes(), None, 401),
        kommo("webhook signed with another secret", &webhook_url, typing.as_bytes(), sig(&typing, "other"), 401),
        kommo("webhook signature not hex", &webhook_url, typing.as_bytes(), Some("zz".repeat(20)), 401),
        kommo(
            "webhook signature truncated",
            &webhook_url,
            typing.as_bytes(),
            sig(&typing, &channel_secret).map(|s| s[..39].into()),
            401,
        ),
        kommo(
            "webhook body changed after signing",
            &webhook_url,
            typing.replace("manager-1", "manager-2").as_bytes(),
            sig(&typing, &channel_secret),
            401,
        ),
        signed("webhook truncated JSON", &typing[..typing.len() / 2], 400),
        signed("webhook empty body", "", 400),
        signed("webhook JSON array", "[]", 400),
        signed("webhook JSON null", "null", 400),
        signed("webhook account_id a number", r#"{"account_id":5,"time":1}"#, 400),
        signed("webhook without time", r#"{"account_id":"acc-1"}"#, 400),
        signed("webhook for another account of this channel", &typing.replace("acc-1", "acc-2"), 400),
        signed(
            "webhook expired_at a string",
            &typing.replace(&format!("{}}}", now + 5), &format!("\"{}\"}}", now + 5)),
            400,
        ),
        signed("webhook typing without user", &typing.replace(r#""user":{"id":"manager-1"},"#, ""), 400),
        signed(
            "webhook message without its id",
            &manager_message("conv-1", "m-1", "kommo-1").replace(r#""id":"kommo-1","#, ""),
            400,
        ),
        signed(
            "webhook message without receiver",
            &manager_message("conv-1", "m-1", "kommo-1")
                .replace(r#""receiver":{"id":"r","client_id":"client-1","name":"","phone":"","email":""},"#, ""),
            400,
        ),
        signed("webhook nested 10,000 deep", &nested(10_000), 400),
        signed(
            "webhook over 248 KiB",
            &format!(r#"{{"account_id":"acc-1","time":1,"pad":"{}"}}"#, "x".repeat(300_000)),
            413,
        ),
        kommo(
            "webhook not UTF-8",
            &webhook_url,
            b"{\"account_id\":\"\xff\xfe\",\"time\":1}",
            Some(kommo_webhook::sign(&channel_secret, b"{\"account_id\":\"\xff\xfe\",\"time\":1}")),
            400,
        ),
        kommo(
            "webhook for another channel's scope",
            "/kommo/webhook/other-channel_acc-1",
            typing.as_bytes(),
            sig(&typing, &channel_secret),
            404,
        ),
        kommo("webhook with an empty scope", "/kommo/webhook/", typing.as_bytes(), sig(&typing, &channel_secret), 404),
        Case {
            name: "webhook with GET",
            entry: EntryPoint::KommoWebhook,
            request: http::Request::get(&webhook_url).body(Bytes::new()).unwrap(),
            status: 405,
        },
        // --- Chat-service events: signatures
        chat_with(
            "event without headers",
            client_typing("typing.started", "conv-1", None).as_bytes(),
            None,
            None,
            None,
            401,
        ),
        {
            let long_id = "m".repeat(257);
            let signature = chat_secret.sign(&long_id, now, br#"{"type":"presence.heartbeat"}"#);
            chat_with(
                "webhook-id longer than 256 bytes",
                br#"{"type":"presence.heartbeat"}"#,
                Some(long_id.as_str()),
                Some(now.to_string()),
                Some(signature),
                401,
            )
        },
        chat_with(
            "event without webhook-id",
            b"{}",
            None,
            Some(now.to_string()),
            Some(chat_secret.sign("x", now, b"{}")),
            401,
        ),
        chat_with("event without timestamp", b"{}", Some("x"), None, Some(chat_secret.sign("x", now, b"{}")), 401),
        chat_with(
            "event 5 min 1 s old",
            b"{}",
            Some("x"),
            Some((now - 301).to_string()),
            Some(chat_secret.sign("x", now - 301, b"{}")),
            401,
        ),
        chat_with(
            "event 5 min 1 s ahead",
            b"{}",
            Some("x"),
            Some((now + 301).to_string()),
            Some(chat_secret.sign("x", now + 301, b"{}")),
            401,
        ),
        chat_with(
            "event timestamp not a number",
            b"{}",
            Some("x"),
            Some("soon".into()),
            Some(chat_secret.sign("x", now, b"{}")),
            401,
        ),
        chat_with(
            "event with only a v2 signature",
            b"{}",
            Some("x"),
            Some(now.to_string()),
            Some("v2,AAAA".into()),
            401,
        ),
        chat_with(
            "event signed with another secret",
            b"{}",
            Some("x"),
            Some(now.to_string()),
            Some(crate::signing::standard_webhooks::WebhookSecret::from_key(vec![1; 32]).sign("x", now, b"{}")),
            401,
        ),
        chat_with(
            "event body changed after signing",
            b"{\"a\":2}",
            Some("x"),
            Some(now.to_string()),
            Some(chat_secret.sign("x", now, b"{\"a\":1}")),
            401,
        ),
        chat_with(
            "event id changed after signing",
            b"{}",
            Some("y"),
            Some(now.to_string()),
            Some(chat_secret.sign("x", now, b"{}")),
            401,
        ),
        // --- Chat-service events: bodies
        chat("event truncated JSON", r#"{"type":"typing.started","scope_id""#, 400),
        chat("event of unknown type", &event("typing.paused", r#","conversation_id":"c","user_id":"u""#), 400),
        chat("event without type", &format!(r#"{{"scope_id":"{SCOPE}"}}"#), 400),
        chat("typing without user_id", &event("typing.started", r#","conversation_id":"c""#), 400),
        chat("typing with an empty user_id", &event("typing.started", r#","conversation_id":"c","user_id":"""#), 400),
        chat(
            "typing stop with an empty conversation",
            &event("typing.stopped", r#","conversation_id":"","user_id":"u""#),
            400,
        ),
        chat("heartbeat with an empty user_id", &event("presence.heartbeat", r#","user_id":"""#), 400),
        chat("status whose reference is a path", &status_with_reference("a b?c#d"), 400),
        chat("message with a 41-character source", &client_message_with_source(&"s".repeat(41)), 400),
        chat("message with an empty source", &client_message_with_source(""), 400),
        chat("message with a source that is not printable ASCII", &client_message_with_source("line\u{e9}"), 400),
        chat("status whose reference is not ASCII", &status_with_reference("g\\u00adqp"), 400),
        chat(
            "typing with a negative ttl",
            &event("typing.started", r#","conversation_id":"c","user_id":"u","ttl_ms":-5"#),
            400,
        ),
        chat("typing with ttl 0", &event("typing.started", r#","conversation_id":"c","user_id":"u","ttl_ms":0"#), 400),
        chat(
            "event for another channel's scope",
            &client_typing("typing.started", "c", None).replace(SCOPE, "other_acc-1"),
            404,
        ),
        chat("status of unknown kind", &status(r#","status":"seen""#), 400),
        chat("failed without error_code", &status(r#","status":"failed""#), 400),
        chat("failed with error_code 900", &status(r#","status":"failed","error_code":900"#), 400),
        chat("failed with error_code 906", &status(r#","status":"failed","error_code":906"#), 400),
        chat("905 without text", &status(r#","status":"failed","error_code":905"#), 400),
        chat("905 with blank text", &status(r#","status":"failed","error_code":905,"error":" \n "#), 400),
        chat("delivered with an error_code", &status(r#","status":"delivered","error_code":903"#), 400),
        chat("up_to with delivered", &status(r#","status":"delivered","up_to":true"#), 400),
        chat("status naming no message", &event("message.status", r#","status":"read""#), 400),
        chat(
            "status for an unknown chat msgid",
            &event("message.status", r#","msgid":"chat-404","status":"read""#),
            404,
        ),
        chat("error_code a string", &status(r#","status":"failed","error_code":"905","error":"x""#), 400),
        chat("message with an empty msgid", &client_message("conv-1", ""), 400),
        chat(
            "message without user",
            &client_message("conv-1", "chat-1")
                .replace(r#""user":{"id":"client-1","name":"Adam","phone":"+100"},"#, ""),
            400,
        ),
        chat("message without its type", &client_message("conv-1", "chat-1").replace(r#""type":"text","#, ""), 400),
        chat(
            "message timestamp a string",
            &client_message("conv-1", "chat-1").replace("1700000000000", "\"now\""),
            400,
        ),
        chat("presence without user_id", &event("presence.online", r#","conversation_id":"c""#), 400),
        // --- per-type content, replies, edits and reactions
        chat("text message without text", &client_message("c", "m").replace(r#","text":"hi""#, ""), 400),
        chat(
            "picture without file_size",
            &client_message("c", "m")
                .replace(r#""type":"text","text":"hi""#, r#""type":"picture","media":"https://example.com/p.png""#),
            400,
        ),
        chat(
            "location without lon",
            &client_message("c", "m")
                .replace(r#""type":"text","text":"hi""#, r#""type":"location","location":{"lat":1}"#),
            400,
        ),
        chat(
            "contact without name or phone",
            &client_message("c", "m").replace(r#""type":"text","text":"hi""#, r#""type":"contact","contact":{}"#),
            400,
        ),
        chat(
            "contact without a phone (Kommo requires one)",
            &client_message("c", "m")
                .replace(r#""type":"text","text":"hi""#, r#""type":"contact","contact":{"name":"Ann"}"#),
            400,
        ),
        chat("message of unknown type", &client_message("c", "m").replace(r#""type":"text""#, r#""type":"poll""#), 400),
        chat(
            "reply naming both ids",
            &client_message("c", "m")
                .replace(r#""timestamp_ms""#, r#""reply_to":{"msgid":"a","reference":"b"},"timestamp_ms""#),
            400,
        ),
        chat(
            "reply naming no message",
            &client_message("c", "m").replace(r#""timestamp_ms""#, r#""reply_to":{},"timestamp_ms""#),
            400,
        ),
        chat(
            "empty conversation_ref_id",
            &client_message("c", "m").replace(r#""timestamp_ms""#, r#""conversation_ref_id":"","timestamp_ms""#),
            400,
        ),
        chat("edit without message", &event("message.edited", r#","conversation_id":"c","msgid":"m""#), 400),
        chat(
            "edit to an empty text",
            &event("message.edited", r#","conversation_id":"c","msgid":"m","message":{"type":"text","text":""}"#),
            400,
        ),
        chat(
            "reaction added without emoji",
            &event("reaction.added", r#","conversation_id":"c","user_id":"u","msgid":"m""#),
            400,
        ),
        chat(
            "reaction with a 17-character emoji",
            &event(
                "reaction.added",
                &format!(r#","conversation_id":"c","user_id":"u","msgid":"m","emoji":"{}""#, "x".repeat(17)),
            ),
            400,
        ),
        chat("reaction naming no message", &event("reaction.removed", r#","conversation_id":"c","user_id":"u""#), 400),
        chat(
            "reaction whose reference is a path",
            &event("reaction.removed", r#","conversation_id":"c","user_id":"u","reference":"../x""#),
            400,
        ),
        chat(
            "reaction without user_id",
            &event("reaction.added", r#","conversation_id":"c","msgid":"m","emoji":"x""#),
            400,
        ),
        chat(
            "client.updated saying nothing",
            &event("client.updated", r#","conversation_id":"c","user":{"id":"u"}"#),
            400,
        ),
        chat(
            "client.updated with a name over two lines",
            &event("client.updated", r#","conversation_id":"c","user":{"id":"u","name":"Ann\nINFO forged"}"#),
            400,
        ),
        // The simulated scope is served from KOMMO_ACCOUNTS: no REST tokens.
        chat(
            "client.updated for an account without REST tokens",
            &event("client.updated", r#","conversation_id":"c","user":{"id":"u","name":"Ann"}"#),
            409,
        ),
        chat("event nested 10,000 deep", &nested(10_000), 400),
        chat(
            "event over 248 KiB",
            &event("typing.started", &format!(r#","conversation_id":"{}","user_id":"u""#, "c".repeat(300_000))),
            413,
        ),
        chat_with(
            "event not UTF-8",
            b"{\"type\":\"typing.started\",\"scope_id\":\"\xff\"}",
            Some("x"),
            Some(now.to_string()),
            Some(chat_secret.sign("x", now, b"{\"type\":\"typing.started\",\"scope_id\":\"\xff\"}")),
            400,
        ),
        // --- Presence pull
        presence_pull("presence pull unsigned", &format!("scope_id={SCOPE}&conversation_id=c"), false, 401),
        presence_pull("presence pull without conversation_id", &format!("scope_id={SCOPE}"), true, 400),
        presence_pull("presence pull for another channel", "scope_id=other_acc-1&conversation_id=c", true, 404),
        // --- Kommo UI
        ui("UI without a token", "GET", ui_presence, None, "", 401),
        ui(
            "UI with an expired token",
            "GET",
            ui_presence,
            token(serde_json::json!({"account_id": 1, "user_id": 42, "exp": now - 60}), &integration_secret),
            "",
            401,
        ),
        ui(
            "UI with a token signed by another key",
            "GET",
            ui_presence,
            token(good_claims.clone(), "other-key"),
            "",
            401,
        ),
        ui(
            "UI with an alg none token",
            "GET",
            ui_presence,
            Some(format!(
                "eyJhbGciOiJub25lIn0.{}.",
                token(good_claims.clone(), &integration_secret).unwrap().split('.').nth(1).unwrap()
            )),
            "",
            401,
        ),
        ui(
            "UI for an account not served",
            "GET",
            ui_presence,
            token(
                serde_json::json!({"iss": "https://acme.kommo.com", "account_id": 7, "user_id": 42, "exp": now + 60}),
                &integration_secret,
            ),
            "",
            403,
        ),
        ui(
            "UI presence with an unknown state",
            "POST",
            ui_presence,
            token(good_claims.clone(), &integration_secret),
            r#"{"state":"away"}"#,
            400,
        ),
        ui(
            "UI presence with malformed JSON",
            "POST",
            ui_presence,
            token(good_claims.clone(), &integration_secret),
            r#"{"state":"#,
            400,
        ),
        ui("UI read with no token", "POST", "/kommo/ui/conversations/conv-1/read", None, "", 401),
        ui(
            "UI token made to live ten years",
            "GET",
            ui_presence,
            token(
                serde_json::json!({"iss": "https://acme.kommo.com", "account_id": 1, "user_id": 42, "iat": now,
                                   "exp": now + 10 * 365 * 86_400}),
                &integration_secret,
            ),
            "",
            401,
        ),
        ui(
            "UI token without iss",
            "GET",
            ui_presence,
            token(serde_json::json!({"account_id": 1, "user_id": 42, "exp": now + 60}), &integration_secret),
            "",
            401,
        ),
        ui(
            "UI token issued by a host that is not Kommo's",
            "GET",
            ui_presence,
            token(
                serde_json::json!({"iss": "https://evil.example", "account_id": 1, "user_id": 42, "exp": now + 60}),
                &integration_secret,
            ),
            "",
            401,
        ),
        Case {
            name: "preflight from a foreign origin",
            entry: EntryPoint::KommoWebhook,
            request: http::Request::options(ui_presence)
                .header("origin", "https://evil.example")
                .body(Bytes::new())
                .unwrap(),
            status: 403,
        },
        Case {
            name: "an unknown route",
            entry: EntryPoint::KommoWebhook,
            request: http::Request::get("/admin").body(Bytes::new()).unwrap(),
            status: 404,
        },
        Case {
            name: "a chat route at the Kommo function",
            entry: EntryPoint::KommoWebhook,
            request: http::Request::post("/chat/events").body(Bytes::new()).unwrap(),
            status: 404,
        },
    ];
    // --- The id discipline (rules/ids.rs): every id that becomes part of a store key or an
    // amojo path, one byte over its limit, with the key separator, a control character, or a
    // path to steer; each a 400 before anything is stored or signed.
    let id_cases = [
        ("typing conversation_id over 256 bytes", typing_event(&over, "u")),
        ("typing user_id over 256 bytes", typing_event("c", &over)),
        ("typing conversation_id with the key separator", typing_event("c#msg#1", "u")),
        ("typing user_id with a newline (a forged log line)", typing_event("c", "u\\nlevel=INFO forged")),
        ("message msgid over 256 bytes", message("").replace(r#""msgid":"m""#, &format!(r#""msgid":"{over}""#))),
        ("message user.id over 256 bytes", message("").replace(r#""id":"u""#, &format!(r#""id":"{over}""#))),
        ("message conversation_ref_id over 256 bytes", message(&format!(r#","conversation_ref_id":"{over}""#))),
        ("message reply_to msgid over 256 bytes", message(&format!(r#","reply_to":{{"msgid":"{over}"}}"#))),
        ("message reply_to reference a dot-segment", message(r#","reply_to":{"reference":".."}"#)),
        ("status reference .", status_with_reference(".")),
        ("status reference ..", status_with_reference("..")),
        ("status reference over 128 bytes", status_with_reference(&path_over)),
        ("status reference with a query", status_with_reference("k?x=1")),
        ("status msgid over 256 bytes", event("message.status", &format!(r#","msgid":"{over}","status":"read""#))),
        (
            "presence device_id over 256 bytes",
            event("presence.online", &format!(r#","user_id":"u","device_id":"{over}""#)),
        ),
        ("presence user_id with the key separator", event("presence.online", r#","user_id":"u#1""#)),
        (
            "edit msgid over 256 bytes",
            event(
                "message.edited",
                &format!(r#","conversation_id":"c","msgid":"{over}","message":{{"type":"text","text":"x"}}"#),
            ),
        ),
        (
            "reaction user_id over 256 bytes",
            event("reaction.added", &format!(r#","conversation_id":"c","user_id":"{over}","emoji":"x","msgid":"m""#)),
        ),
        ("scope_id with a path after the account", at_scope(&format!("{SCOPE}/extra/segment"))),
        ("scope_id climbing the path", at_scope(&format!("{SCOPE}/../../connect"))),
        ("scope_id with a query", at_scope(&format!("{SCOPE}?x=1"))),
        ("scope_id with a fragment", at_scope(&format!("{SCOPE}#x"))),
        ("scope_id with the key separator and more", at_scope(&format!("{SCOPE}#msg#1"))),
    ];
    for (name, body) in id_cases {
        cases.push(chat(name, &body, 400));
    }
    for (name, body) in [
        (
            "webhook conversation client_id over 256 bytes",
            typing.replace(r#""client_id":"conv-1""#, &format!(r#""client_id":"{over}""#)),
        ),
        ("webhook typing user id with the key separator", typing.replace("manager-1", "manager#1")),
        ("webhook manager message id a dot-segment", manager_message_with(r#""id":"kommo-1""#, r#""id":"..""#)),
        ("webhook manager message id over 128 bytes", manager_message_with("kommo-1", &path_over)),
        ("webhook sender id over 256 bytes", manager_message_with("manager-1", &over)),
    ] {
        cases.push(signed(name, &body, 400));
    }
    let bad_scope_url = format!("{webhook_url}%2Fx");
    cases.push(kommo(
        "webhook scope with an escaped slash",
        &bad_scope_url,
        typing.as_bytes(),
        sig(&typing, &channel_secret),
        400,
    ));
    cases.push(presence_pull(
        "presence pull conversation_id over 256 bytes",
        &format!("scope_id={SCOPE}&conversation_id={over}"),
        true,
        400,
    ));
    cases.push(presence_pull(
        "presence pull scope with a path",
        &format!("scope_id={SCOPE}/x&conversation_id=c"),
        true,
        400,
    ));
    let long_conversation = format!("/kommo/ui/conversations/{over}/presence");
    cases.push(ui(
        "UI conversation id over 256 bytes",
        "GET",
        &long_conversation,
        token(good_claims.clone(), &integration_secret),
        "",
        400,
    ));
    let signature = chat_secret.sign("msg#bad", now, typing_event("c", "u").as_bytes());
    cases.push(chat_with(
        "webhook-id with the key separator",
        typing_event("c", "u").as_bytes(),
        Some("msg#bad"),
        Some(now.to_string()),
        Some(signature),
        400,
    ));
    cases
}
