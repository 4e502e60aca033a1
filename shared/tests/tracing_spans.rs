//! One span per request and per piece of due work carries the ids it names, so a log search by
//! message id shows a message's whole path: the webhook that brought it, its relay, the chat
//! service's refusal, the status reported to Kommo. Logged as Lambda logs them (JSON lines with
//! the span's fields), captured here. No line carries the message's text or a secret.
//!
//! One test in this file: it installs the process's global subscriber.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use shared::ports::chat::ChatError;
use support::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_search_by_message_id_finds_its_whole_path_and_never_its_text() {
    let captured = Captured::default();
    let writer = captured.clone();
    // What lambda_runtime's default subscriber does with AWS_LAMBDA_LOG_FORMAT=JSON.
    tracing_subscriber::fmt().json().with_writer(move || writer.clone()).init();

    // GIVEN a manager's message that the chat service refuses, so its relay reports 905.
    let sim = Sim::new();
    sim.chat.fail_next([ChatError::Rejected {
        status: 422,
        code: "blocked".into(),
        message: "The user blocked this business".into(),
    }]);
    // WHEN Kommo sends it and the queued work runs.
    assert_eq!(sim.kommo_webhook(&manager_message("conv-9", "manager-1", "kommo-77")).await.status(), 200);
    sim.advance_to(T0 + 60_000).await;
    assert_eq!(kommo_statuses(&sim), [("kommo-77".to_owned(), -1, Some(905))]);

    // THEN every line about it names the message in its span, from each step of its path.
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let about_it: Vec<_> = lines.iter().filter(|line| line["span"]["msgid"] == "kommo-77").collect();
    let said: Vec<_> = about_it.iter().map(|line| line["fields"]["message"].as_str().unwrap_or_default()).collect();
    for step in [
        "manager message accepted",
        "kommo webhook accepted",
        "the chat service refused the message",
        "delivery status reported to Kommo",
    ] {
        assert!(said.contains(&step), "{step:?} not found under the message's id: {said:?}");
    }
    let spans: Vec<_> = about_it.iter().map(|line| line["span"]["name"].as_str().unwrap_or_default()).collect();
    assert!(spans.contains(&"request") && spans.contains(&"due_work"), "{spans:?}");
    let kinds: Vec<_> = about_it.iter().filter_map(|line| line["span"]["kind"].as_str()).collect();
    assert!(kinds.contains(&"manager_message") && kinds.contains(&"relay_manager_message"), "{kinds:?}");
    assert!(kinds.contains(&"report_delivery_status"), "the report is due work of its own: {kinds:?}");
    for line in &about_it {
        assert_eq!(line["span"]["scope_id"], SCOPE, "{line}");
    }
    // Neither the manager's words nor any secret reach the log.
    assert!(!text.contains("hello"), "message text in the log");
    assert!(!text.contains(sim.bridge.config.channel_secret.expose()), "a secret in the log");
    assert!(!text.contains(sim.integration_secret()), "a secret in the log");
}
