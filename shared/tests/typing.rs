//! Typing both ways, simulated: a manual clock, the in-memory store, manual timers and
//! recording peers, so minutes of typing run in milliseconds and every count is exact.

mod support;

use shared::models::chat::BridgeEvent;
use shared::ports::timers::DueWork;
use shared::testing::KommoCall;
use support::*;

fn typing_calls(sim: &Sim) -> Vec<i64> {
    sim.kommo.calls().iter().filter(|c| matches!(c.call, KommoCall::Typing(_))).map(|c| c.at_ms).collect()
}

fn chat_events(sim: &Sim) -> Vec<(i64, &'static str)> {
    sim.chat
        .events()
        .iter()
        .map(|e| {
            let kind = match e.call {
                BridgeEvent::TypingStarted { .. } => "started",
                BridgeEvent::TypingStopped { .. } => "stopped",
                BridgeEvent::MessageCreated { .. } => "message",
                _ => "other",
            };
            (e.at_ms, kind)
        })
        .collect()
}

#[tokio::test]
async fn a_client_typing_for_a_minute_on_every_keystroke_reaches_kommo_12_to_20_times_and_never_after_stopping() {
    let sim = Sim::new();
    sim.kommo_has_chat("conv-1").await;
    let stop_at = T0 + 60_000;
    let mut t = T0;
    while t < stop_at {
        sim.advance_to(t).await;
        assert_eq!(sim.chat_event(&client_typing("typing.started", "conv-1", None)).await.status(), 200);
        t += 50;
    }
    // The stop arrives at the very moment a refresh falls due, and wins: no call at or after it.
    sim.clock.set_ms(stop_at);
    assert_eq!(sim.chat_event(&client_typing("typing.stopped", "conv-1", None)).await.status(), 200);
    sim.advance_to(stop_at + 120_000).await;

    let calls = typing_calls(&sim);
    println!("{} amojo typing calls for 60 s of typing.started every 50 ms", calls.len());
    assert!((12..=20).contains(&calls.len()), "{} typing calls", calls.len());
    assert!(calls.iter().all(|at| *at < stop_at), "no typing call after typing.stopped");
    for pair in calls.windows(2) {
        assert!(pair[1] - pair[0] >= 3000, "at most one call per 3 s: {pair:?}");
        assert!(pair[1] - pair[0] <= 5000, "the indicator (5 s a call) never flickers: {pair:?}");
    }
    assert!(sim.timers.pending().is_empty(), "the refresh chain ended with the lease");
}

#[tokio::test]
async fn one_typing_started_keeps_kommos_indicator_up_for_its_ttl_by_itself() {
    let sim = Sim::new();
    sim.kommo_has_chat("conv-1").await;
    sim.chat_event(&client_typing("typing.started", "conv-1", Some(12_000))).await;
    sim.advance_to(T0 + 60_000).await;
    assert_eq!(typing_calls(&sim), vec![T0, T0 + 4000, T0 + 8000], "refreshed every 4 s while the 12 s lease lived");
    // The lease ends at 12 s: no call at 12 s, whose indicator would outlive it by 5 s.
    assert!(sim.timers.pending().is_empty());
}

#[tokio::test]
async fn a_typing_ttl_is_capped_at_30_seconds_and_zero_is_refused() {
    let sim = Sim::new();
    sim.kommo_has_chat("conv-1").await;
    assert_eq!(sim.chat_event(&client_typing("typing.started", "conv-1", Some(600_000))).await.status(), 200);
    sim.advance_to(T0 + 120_000).await;
    // A 10-minute ttl holds for 30 s: one call every 4 s while it lives, none at 32 s.
    let expected: Vec<i64> = (0..8).map(|i| T0 + i * 4000).collect();
    assert_eq!(typing_calls(&sim), expected);
    assert!(sim.timers.pending().is_empty(), "the refresh chain ended with the lease");
    assert_eq!(sim.chat_event(&client_typing("typing.started", "conv-2", Some(0))).await.status(), 400);
}

#[tokio::test]
async fn the_client_typing_hot_path_is_one_write_and_no_read() {
    let sim = Sim::new();
    sim.kommo_has_chat("conv-1").await;
    for i in 0..3 {
        let before = shared::ports::store::Store::op_counts(&*sim.store);
        sim.chat_event(&client_typing("typing.started", "conv-1", None)).await;
        let after = shared::ports::store::Store::op_counts(&*sim.store);
        // One conditional write extends the lease; the signal that starts it also remembers its
        // webhook-id (shared::rules::replay) and reads the conversation, to call Kommo only for
        // a chat it has. The instance reads the scope's state once a minute (app/scopes.rs), not
        // per event.
        let starts = u64::from(i == 0);
        assert_eq!((after.writes - before.writes, after.reads - before.reads), (1 + starts, 2 * starts));
    }
}

#[tokio::test]
async fn an_amojo_failure_on_typing_is_dropped_without_failing_the_event() {
    let sim = Sim::new();
    sim.kommo_has_chat("conv-1").await;
    sim.kommo.fail_next([shared::ports::kommo::KommoError::Unavailable {
        attempts: 2,
        status: Some(500),
        reason: "HTTP 500".into(),
        retry_after: None,
    }]);
    assert_eq!(sim.chat_event(&client_typing("typing.started", "conv-1", None)).await.status(), 200);
    sim.advance_to(T0 + 20_000).await;
    // The failed call was made and dropped; the lease stood and its refresh went on.
    assert_eq!(typing_calls(&sim), [T0, T0 + 4000]);
    assert_eq!(sim.kommo.calls().len(), 2, "nothing but the two typing calls");
}

#[tokio::test]
async fn three_identical_manager_typing_webhooks_send_one_typing_started() {
    let sim = Sim::new();
    let body = manager_typing("conv-1", "manager-1", T0 / 1000 + 5);
    for _ in 0..3 {
        assert_eq!(sim.kommo_webhook(&body).await.status(), 200);
    }
    sim.advance_to(T0 + 1).await;
    assert_eq!(chat_events(&sim), vec![(T0, "started")]);
}

#[tokio::test]
async fn a_manager_typing_in_bursts_gets_one_start_and_one_stop_at_the_last_expiry() {
    let sim = Sim::new();
    // Kommo re-sends every 5 s while the manager types, each time 5 s ahead.
    for i in 0..5 {
        let t = T0 + i * 5000;
        sim.advance_to(t).await;
        sim.kommo_webhook(&manager_typing("conv-1", "manager-1", t / 1000 + 5)).await;
    }
    let last_expiry = T0 + 25_000;
    sim.advance_to(T0 + 60_000).await;
    let stopped_at = last_expiry + shared::rules::typing::MANAGER_TYPING_GRACE_MS;
    assert_eq!(chat_events(&sim), vec![(T0, "started"), (stopped_at, "stopped")], "no flapping between webhooks");
    assert!(sim.timers.pending().is_empty());
}

#[tokio::test]
async fn a_late_timer_still_stops_typing_exactly_once() {
    let sim = Sim::new();
    sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000 + 5)).await;
    sim.advance_to(T0 + 1).await;
    // The queue runs late, twice over: the lease was extended, then lapsed, before any timer ran.
    sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000 + 10)).await;
    sim.clock.set_ms(T0 + 30_000);
    let due: Vec<DueWork> = sim.timers.take_due(i64::MAX);
    for work in due.iter().cloned().chain(due.iter().cloned()) {
        sim.run_due(work).await.unwrap();
    }
    assert_eq!(chat_events(&sim).iter().filter(|(_, kind)| *kind == "stopped").count(), 1);
}

#[tokio::test]
async fn an_expired_manager_typing_webhook_starts_nothing() {
    let sim = Sim::new();
    assert_eq!(sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000)).await.status(), 200);
    sim.advance_to(T0 + 60_000).await;
    assert!(chat_events(&sim).is_empty());
}

#[tokio::test]
async fn the_managers_message_stops_typing_at_once_before_the_message_and_the_timer_adds_nothing() {
    let sim = Sim::new();
    sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000 + 5)).await;
    sim.advance_to(T0 + 2000).await;
    sim.kommo_webhook(&manager_message("conv-1", "manager-1", "kommo-msg-1")).await;
    sim.advance_to(T0 + 60_000).await;
    assert_eq!(chat_events(&sim), vec![(T0, "started"), (T0 + 2000, "stopped"), (T0 + 2000, "message")]);
}

#[tokio::test]
async fn the_manager_typing_hot_path_is_one_write_and_no_read() {
    let sim = Sim::new();
    for i in 0..3 {
        let before = shared::ports::store::Store::op_counts(&*sim.store);
        sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000 + 5 + i)).await;
        let after = shared::ports::store::Store::op_counts(&*sim.store);
        // The scope's state is read once a minute per instance (app/scopes.rs), not per event.
        let scope_state_read = u64::from(i == 0);
        assert_eq!((after.writes - before.writes, after.reads - before.reads), (1, scope_state_read));
    }
}

#[tokio::test]
async fn a_chat_service_outage_retries_the_stop_and_never_leaves_a_start_last() {
    use shared::ports::chat::ChatError;
    let sim = Sim::new();
    let down = || ChatError::Unavailable { attempts: 2, status: Some(503), reason: "HTTP 503".into() };
    sim.chat.fail_next([down(), down()]);
    sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000 + 1)).await;
    sim.advance_to(T0 + 120_000).await;
    // The start failed (it may have landed) and its retry came past its expiry, so it was not
    // sent then; the stop owed goes with the start again right before it, so the chat service
    // never gets a stop alone, and its last word is the stop.
    let events = chat_events(&sim);
    assert_eq!(events, [(T0 + 2000, "started"), (T0 + 2000, "stopped")]);
}

#[tokio::test]
async fn typing_expiry_reports_an_unreadable_record_and_runs_the_rest() {
    use shared::queued::QueuedRecord;
    let sim = Sim::new();
    let good = serde_json::to_string(&DueWork::ManagerTypingCheck {
        scope_id: SCOPE.into(),
        conversation_id: "conv-1".into(),
        manager_id: "m".into(),
    })
    .unwrap();
    let read = serde_json::to_string(&DueWork::deliver(BridgeEvent::MessageRead {
        scope_id: SCOPE.into(),
        conversation_id: "conv-1".into(),
        msgid: "chat-1".into(),
        read_at: T0 / 1000,
    }))
    .unwrap();
    let records = vec![
        QueuedRecord { message_id: "ok-1".into(), body: good },
        QueuedRecord { message_id: "ok-2".into(), body: read },
        QueuedRecord { message_id: "bad-1".into(), body: "{not json".into() },
        QueuedRecord { message_id: "bad-2".into(), body: r#"{"work":"unknown"}"#.into() },
    ];
    let failed = sim.bridge.dispatcher().unwrap().run_batch(records).await;
    assert_eq!(failed, ["bad-1", "bad-2"]);
    let delivered: Vec<_> = sim.chat.events().into_iter().map(|recorded| recorded.call).collect();
    assert!(matches!(&delivered[..], [BridgeEvent::MessageRead { msgid, .. }] if msgid == "chat-1"), "{delivered:?}");
}

/// A batch about to outlive its invocation: the work still running is handed back to the queue
/// (a copy due at once) and its record reported done, rather than dying with the invocation and
/// coming back only after the queue's visibility timeout.
#[tokio::test]
async fn typing_expiry_hands_back_work_still_running_when_its_time_runs_out() {
    use shared::queued::QueuedRecord;
    let sim = Sim::new();
    let read = DueWork::deliver(BridgeEvent::MessageRead {
        scope_id: SCOPE.into(),
        conversation_id: "conv-1".into(),
        msgid: "chat-1".into(),
        read_at: T0 / 1000,
    });
    let records = vec![QueuedRecord { message_id: "slow-1".into(), body: serde_json::to_string(&read).unwrap() }];
    let _chat_never_answers = sim.chat.hold_next();
    let budget = Some(std::time::Duration::from_millis(50));
    let failed = sim.bridge.dispatcher().unwrap().run_batch_within(records, budget).await;
    assert!(failed.is_empty(), "handed back, not failed: {failed:?}");
    assert_eq!(sim.timers.pending(), [(T0, read)], "a copy due at once");
    assert!(sim.chat.events().is_empty());
}

/// Kommo says `expired_at` 5 s ahead; one years ahead (or at i64's end) must neither overflow nor
/// leave the indicator on: the lease is capped at 30 s and the stop follows.
#[tokio::test]
async fn a_far_future_manager_expired_at_is_capped_and_the_stop_follows() {
    let sim = Sim::new();
    for (conversation, expired_at_s) in [("conv-1", T0 / 1000 + 31_536_000), ("conv-2", i64::MAX / 1000)] {
        assert_eq!(sim.kommo_webhook(&manager_typing(conversation, "manager-1", expired_at_s)).await.status(), 200);
    }
    sim.advance_to(T0 + 60_000).await;
    let stops: Vec<_> = chat_events(&sim).into_iter().filter(|(_, kind)| *kind == "stopped").collect();
    assert_eq!(stops.len(), 2, "{stops:?}");
    assert!(stops.iter().all(|(at, _)| *at <= T0 + 32_000), "{stops:?}");
}
