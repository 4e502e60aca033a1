//! Regression tests of due work found by the fault suite and the load test, each on a
//! simulated bridge (manual clock, manual timers, recording fakes) that makes the race happen
//! on purpose: held calls let one send overtake another.

use shared::ports::kommo::KommoError;
use shared::testing::KommoCall;
use shared::testing::sim::*;

#[tokio::test]
async fn a_typing_started_held_back_by_a_failure_is_not_sent_after_the_lease_ended() {
    // Found by tests/suites/faults.rs: the retry of typing.started reached the chat service
    // after the typing.stopped of the manager's message, leaving the manager typing there.
    let sim = Sim::new();
    sim.chat.fail_next([chat_down()]);
    assert_eq!(sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000 + 5)).await.status(), 200);
    sim.advance_to(T0 + 10).await; // typing.started fails, and waits for its retry
    assert_eq!(sim.kommo_webhook(&manager_message("conv-1", "manager-1", "kommo-1")).await.status(), 200);
    sim.advance_to(T0 + 60_000).await;
    // The start that failed may not have landed: it goes again before the stop that ends it
    // (under its own id, so a chat service that had it drops it), never a stop alone.
    assert_eq!(sim.chat_events(), ["started", "stopped", "message"], "the chat service's last word is not a start");
    assert_eq!(sim.chat_events_once(), sim.chat_events(), "each under an id of its own: none dropped as a repeat");
}

#[tokio::test]
async fn a_typing_started_never_confirmed_goes_again_before_its_stop() {
    // Found by bridge-chaos: a start is recorded as shown before it is sent; its worker was
    // killed before sending it (here: every attempt fails while the lease lives), and the
    // lease's expiry then sent a stop the chat service had no start for.
    let sim = Sim::new();
    assert_eq!(sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000 + 5)).await.status(), 200);
    sim.chat.fail_next([chat_down(), chat_down(), chat_down()]);
    sim.advance_to(T0 + 60_000).await; // the start fails while the lease lives; the expiry stops it
    assert_eq!(sim.chat_events(), ["started", "stopped"]);
}

#[tokio::test]
async fn a_typing_started_that_failed_is_sent_again_while_the_manager_types() {
    // The first attempt failed in a way that may have shown it: counted as shown (so a
    // stop is owed), but its retry must still go out, or the manager is never seen typing.
    let sim = Sim::new();
    sim.chat.fail_next([chat_down()]);
    assert_eq!(sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000 + 5)).await.status(), 200);
    sim.advance_to(T0 + 60_000).await;
    assert_eq!(sim.chat_events(), ["started", "stopped"]);
}

#[tokio::test]
async fn a_slow_typing_stopped_is_never_overtaken_by_the_next_typing_started() {
    // Found by bridge-load (200 conversations): the expiry timer's typing.stopped was slow;
    // the manager typed again, and the new typing.started landed first, then the stop: the
    // chat service showed no typing while the manager typed.
    let sim = Sim::new();
    assert_eq!(sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000 + 5)).await.status(), 200);
    sim.advance_to(T0 + 5_000).await; // started; the lease runs to 6 s (its grace)
    sim.clock.set_ms(T0 + 6_500);
    let [expiry] = <[_; 1]>::try_from(sim.timers.take_due(T0 + 6_500)).unwrap();
    let slow_network = sim.chat.hold_next();
    let (stop, restart) = tokio::join!(sim.run_due(expiry), async {
        assert_eq!(sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000 + 11)).await.status(), 200);
        for work in sim.timers.take_due(T0 + 6_500) {
            sim.run_due(work).await?;
        }
        slow_network.notify_one();
        Ok::<_, shared::flows::FlowError>(())
    });
    stop.unwrap();
    restart.unwrap();
    sim.advance_to(T0 + 60_000).await;
    assert_eq!(sim.chat_events(), ["started", "stopped", "started", "stopped"]);
}

#[tokio::test]
async fn typing_again_before_a_late_expiry_timer_goes_on_without_a_second_start() {
    // Found by bridge-load (200 conversations): the lease lapsed, its timer ran late, and
    // the next webhook started a new lease: typing.started twice, the first never stopped.
    let sim = Sim::new();
    assert_eq!(sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000 + 5)).await.status(), 200);
    sim.advance_to(T0 + 100).await;
    sim.clock.set_ms(T0 + 6_500); // past the lease (6 s), its timer not run yet
    assert_eq!(sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000 + 11)).await.status(), 200);
    sim.advance_to(T0 + 60_000).await;
    assert_eq!(sim.chat_events(), ["started", "stopped"]);
    let stopped_at = sim.chat.events().last().map(|event| event.at_ms);
    assert_eq!(stopped_at, Some(T0 + 12_000), "stopped when the extended lease ran out");
}

#[tokio::test]
async fn the_typing_stopped_before_a_message_is_retried_with_it_not_dropped() {
    // Found by tests/suites/faults.rs: with the chat service failing as the manager's message
    // came, the typing.stopped before it was dropped, and the manager typed on forever there.
    let sim = Sim::new();
    assert_eq!(sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000 + 5)).await.status(), 200);
    sim.advance_to(T0 + 10).await;
    sim.chat.fail_next([chat_down()]);
    assert_eq!(sim.kommo_webhook(&manager_message("conv-1", "manager-1", "kommo-1")).await.status(), 200);
    sim.advance_to(T0 + 60_000).await;
    assert_eq!(sim.chat_events(), ["started", "stopped", "message"]);
}

#[tokio::test]
async fn a_client_message_refused_for_a_queue_fault_is_imported_when_the_chat_service_retries() {
    // Found by tests/suites/faults.rs: the record was written (the dedupe claim), then
    // queueing the import failed: 500. The chat service's retry got 200 "duplicate ignored"
    // and the message never reached Kommo. Now the retry queues the import.
    let sim = Sim::new();
    let message = serde_json::json!({"type": "message.created", "scope_id": SCOPE, "conversation_id": "conv-1",
        "msgid": "chat-1", "user": {"id": "client-1"}, "message": {"type": "text", "text": "hi"},
        "timestamp_ms": T0})
    .to_string();
    sim.queue.refuse_next.store(1, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(sim.chat_event(&message).await.status(), 500, "not accepted: the sender retries");
    assert_eq!(sim.chat_event(&message).await.status(), 200);
    sim.advance_to(T0 + 60_000).await;
    let imported = sim.kommo.calls().into_iter().filter(|c| matches!(c.call, KommoCall::Import(_))).count();
    assert_eq!(imported, 1, "the acknowledged message reached Kommo");
}

#[tokio::test]
async fn a_status_report_overtaken_while_kommo_was_down_never_moves_kommo_backwards() {
    // Found by tests/suites/faults.rs: delivered waited out an amojo outage, read was
    // reported meanwhile, and Kommo was told delivered after read.
    let sim = Sim::new();
    let down =
        KommoError::Unavailable { attempts: 3, status: None, reason: "could not connect".into(), retry_after: None };
    sim.kommo.fail_next([down]);
    assert_eq!(sim.chat_event(&status_event("kommo-1", "delivered", "")).await.status(), 200);
    sim.advance_to(T0 + 10).await; // delivered fails, and waits for its retry
    assert_eq!(sim.chat_event(&status_event("kommo-1", "read", "")).await.status(), 200);
    sim.advance_to(T0 + 60_000).await;
    let told: Vec<i8> = kommo_statuses(&sim).into_iter().map(|(_, status, _)| status).collect();
    assert_eq!(told, [1, 2], "the failed delivered, then read; never delivered again after read");
}

#[tokio::test]
async fn two_status_reports_run_at_once_reach_kommo_in_the_registers_order() {
    // Found by bridge-load (200 conversations): delivered and read, queued a moment apart,
    // ran in two workers at once; the delivered call was slower and landed after read.
    let sim = Sim::new();
    assert_eq!(sim.chat_event(&status_event("kommo-1", "delivered", "")).await.status(), 200);
    let [delivered] = <[_; 1]>::try_from(sim.timers.take_due(T0)).unwrap();
    assert_eq!(sim.chat_event(&status_event("kommo-1", "read", "")).await.status(), 200);
    let [read] = <[_; 1]>::try_from(sim.timers.take_due(T0)).unwrap();
    let slow_network = sim.kommo.hold_next_status();
    let (first, second) = tokio::join!(sim.run_due(delivered), async {
        let outcome = sim.run_due(read).await;
        slow_network.notify_one();
        outcome
    });
    first.unwrap();
    second.unwrap();
    sim.advance_to(T0 + 60_000).await; // the report that found its lane busy runs again
    let told: Vec<i8> = kommo_statuses(&sim).into_iter().map(|(_, status, _)| status).collect();
    assert_eq!(told, [1, 2], "delivered landed first, then read");
}

#[tokio::test]
async fn a_relay_whose_claim_landed_after_its_call_gave_up_is_still_delivered() {
    // Found by bridge-load with DynamoDB stalling: the relay's claim (a 60 s hold) was written
    // but its call timed out, so the work failed and ran again; the retry found the message
    // held, took it for another worker's and stopped. Nothing relayed it, ever.
    use shared::ports::store::{MessageRecords, RelayClaim};
    let sim = Sim::new();
    assert_eq!(sim.kommo_webhook(&manager_message("conv-1", "manager-1", "kommo-1")).await.status(), 200);
    // The claim of the first run, written though its caller never heard back.
    let phantom = sim.store.claim_relay(SCOPE, "kommo-1", T0, 60_000).await.unwrap();
    assert_eq!(phantom, RelayClaim::Claimed);
    sim.advance_to(T0 + 10).await; // the work runs again and finds the message held
    assert!(sim.chat_events().is_empty(), "held: not sent yet");
    sim.advance_to(T0 + 120_000).await;
    assert_eq!(sim.chat_events(), ["message"], "relayed once the hold ended");
}

#[tokio::test]
async fn a_slow_offline_push_is_never_overtaken_by_the_online_push_after_it() {
    // Found by bridge-load (200 conversations, the arm64 build beside it): a manager's offline
    // push was slow; they came back, and the new online push landed first, then the offline:
    // the chat service showed the manager gone while they read the conversation.
    const UI_PRESENCE: &str = "/kommo/ui/conversations/conv-1/presence";
    let sim = Sim::new();
    let ui = |state: &'static str| sim.ui("POST", UI_PRESENCE, Some(sim.token(42)), state);
    assert_eq!(ui(r#"{"state":"viewing"}"#).await.status(), 200);
    sim.advance_to(T0 + 1_000).await; // online pushed
    assert_eq!(ui(r#"{"state":"left"}"#).await.status(), 200);
    let grace_ends = T0 + 1_000 + sim.bridge.config.presence.grace_ms;
    sim.clock.set_ms(grace_ends);
    let [check] = <[_; 1]>::try_from(sim.timers.take_due(grace_ends)).unwrap();
    let slow_network = sim.chat.hold_next();
    let (offline, back) = tokio::join!(sim.run_due(check), async {
        // While the offline push is on its way, the manager is back: online is decided.
        assert_eq!(ui(r#"{"state":"viewing"}"#).await.status(), 200);
        for work in sim.timers.take_due(grace_ends) {
            sim.run_due(work).await?;
        }
        slow_network.notify_one();
        Ok::<_, shared::flows::FlowError>(())
    });
    offline.unwrap();
    back.unwrap();
    sim.advance_to(grace_ends + 30_000).await;
    let pushes: Vec<bool> = sim.presence_pushes().into_iter().map(|(_, online)| online).collect();
    assert_eq!(pushes, [true, false, true], "each change once, in order, the last one true");
}

#[tokio::test]
async fn a_client_message_recorded_by_a_delivery_cut_off_before_its_import_is_imported_once() {
    // Found by bridge-chaos: the delivery was killed after it recorded the message and before it
    // queued the import; the sender's retry found the record and took the message for a
    // duplicate, and it never reached Kommo. Now the retry queues the import again, and every
    // copy of an import claims it first.
    use shared::ports::store::MessageRecords;
    let sim = Sim::new();
    assert!(sim.store.insert_incoming(SCOPE, "chat-1", "conv-1", T0).await.unwrap(), "the cut-off delivery's record");
    for _ in 0..3 {
        assert_eq!(sim.chat_event(&client_message("conv-1", "chat-1")).await.status(), 200);
    }
    sim.advance_to(T0 + 120_000).await;
    let imported = sim.kommo.calls().into_iter().filter(|c| matches!(c.call, KommoCall::Import(_))).count();
    assert_eq!(imported, 1, "imported, once");
}

#[tokio::test]
async fn a_status_applied_by_a_delivery_cut_off_before_its_report_is_reported_once() {
    // Found by bridge-chaos: the delivery of a read was killed after the register moved and
    // before the report was queued; the retry found the status applied, and Kommo never heard it.
    use shared::models::status::DeliveryStatus;
    use shared::ports::store::MessageRecords;
    let sim = Sim::new();
    sim.store.advance_status(SCOPE, "kommo-1", &DeliveryStatus::Read, T0).await.unwrap();
    for at in [T0 + 10_000, T0 + 20_000] {
        assert_eq!(sim.chat_event(&status_event("kommo-1", "read", "")).await.status(), 200);
        sim.advance_to(at).await;
    }
    let told: Vec<i8> = kommo_statuses(&sim).into_iter().map(|(_, status, _)| status).collect();
    assert_eq!(told, [2], "read reported, once");
}

#[tokio::test]
async fn a_reaction_waits_out_an_import_slower_than_its_attempts() {
    // Found by bridge-chaos: two kills held a client message's import for over a minute; the
    // reaction to it spent its attempts waiting and was dropped, though the message then
    // reached Kommo. Waiting for an import under way no longer spends attempts.
    use shared::ports::store::{IncomingState, MessageRecords};
    let sim = Sim::new();
    assert!(sim.store.insert_incoming(SCOPE, "chat-1", "conv-1", T0).await.unwrap(), "recorded, its import slow");
    let reaction = serde_json::json!({"type": "reaction.added", "scope_id": SCOPE, "conversation_id": "conv-1",
        "user_id": "client-1", "msgid": "chat-1", "emoji": "👍"});
    assert_eq!(sim.chat_event(&reaction.to_string()).await.status(), 200);
    let reacted = |sim: &Sim| sim.kommo.calls().into_iter().filter(|c| matches!(c.call, KommoCall::React(_))).count();
    sim.advance_to(T0 + 300_000).await;
    assert_eq!(reacted(&sim), 0, "Kommo cannot take a reaction to a message it does not have");
    let imported = IncomingState::Imported { kommo_msgid: Some("kommo-1".into()) };
    sim.store.finish_incoming(SCOPE, "chat-1", &imported).await.unwrap();
    sim.advance_to(T0 + 320_000).await;
    assert_eq!(reacted(&sim), 1, "the reaction follows its message");
}

#[tokio::test]
async fn a_copy_cut_off_between_claiming_its_wait_and_queuing_itself_is_not_lost() {
    // Found by bridge-chaos: a relay found its message held by a killed worker, claimed the wait
    // for it and was killed before it queued its copy; the queue's redelivery found the wait
    // claimed, took it for a copy already queued and dropped itself: the message was never
    // relayed. A wait is done only once its copy is queued; one merely claimed is queued again.
    use shared::ports::store::MessageRecords;
    let sim = Sim::new();
    assert_eq!(sim.kommo_webhook(&manager_message("conv-1", "manager-1", "kommo-1")).await.status(), 200);
    let [relay] = <[_; 1]>::try_from(sim.timers.take_due(T0)).unwrap();
    // The worker that took it first was killed holding it.
    sim.store.claim_relay(SCOPE, "kommo-1", T0, 20_000).await.unwrap();
    sim.queue.refuse_next.store(1, std::sync::atomic::Ordering::SeqCst);
    assert!(sim.run_due(relay.clone()).await.is_err(), "its copy not queued: cut off");
    sim.run_due(relay).await.unwrap(); // the queue hands the same work again
    sim.advance_to(T0 + 60_000).await;
    assert_eq!(sim.chat_events(), ["message"]);
}
