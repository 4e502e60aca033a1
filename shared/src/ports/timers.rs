//! Work that falls due later, behind one [`Timers`] port: SQS message timers in AWS (consumed by
//! the `typing-expiry` function), an in-process timer loop in the dev server, and a manual one
//! for simulations (the adapters). Whoever runs the work when it falls due is the other port
//! here, [`DueWorkRunner`]: the queued-work dispatcher. A timer only says "look again at this moment": whoever runs the work
//! re-reads the store and acts only if the work is still due, so late, early and duplicate
//! timers are harmless.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::models::chat::{BridgeEvent, ClientEdit, ClientMessage, ClientProfile, ClientReaction};
use crate::models::kommo::ManagerMessage;
use crate::models::status::DeliveryStatusRequest;

/// One piece of deferred work, as it travels in an SQS message body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "work", rename_all = "snake_case")]
pub enum DueWork {
    /// A manager's typing lease may have lapsed: end it once and tell the chat service.
    ManagerTypingCheck { scope_id: String, conversation_id: String, manager_id: String },
    /// A manager's presence window may have lapsed (or they left): push offline once.
    ManagerPresenceCheck { scope_id: String, conversation_id: String, manager_id: String },
    /// Keep Kommo's client-typing indicator up while the client's lease lives.
    ClientTypingRefresh { scope_id: String, conversation_id: String, user_id: String },
    /// Deliver an event to the chat service; `attempt` counts earlier tries.
    DeliverChatEvent { event: BridgeEvent, webhook_id: String, attempt: u32 },
    /// Relay a manager's message (`event` is its message.created), typing.stopped first if the
    /// chat service shows the manager typing.
    RelayManagerMessage {
        scope_id: String,
        kommo_msgid: String,
        event: Box<BridgeEvent>,
        webhook_id: String,
        attempt: u32,
        /// When Kommo's webhook reached the bridge (0: not known, queued by an older version).
        #[serde(default)]
        received_at_ms: i64,
    },
    /// Record and relay a manager's message whose webhook could not record it in time (the
    /// store stalled): what the webhook does, done when the store answers again.
    AcceptManagerMessage {
        scope_id: String,
        message: Box<ManagerMessage>,
        /// When Kommo's webhook reached the bridge.
        received_at_ms: i64,
    },
    /// Tell Kommo a status change that stuck; `attempt` counts earlier tries.
    ReportDeliveryStatus {
        scope_id: String,
        request: DeliveryStatusRequest,
        #[serde(default)]
        attempt: u32,
    },
    /// Import a client's message into Kommo.
    ImportClientMessage {
        message: Box<ClientMessage>,
        attempt: u32,
        /// When the chat event reached the bridge (0: not known, queued by an older version).
        #[serde(default)]
        received_at_ms: i64,
    },
    /// Change a client's message in Kommo, once it is imported; `waits` counts the looks at an
    /// import still under way (not attempts).
    EditClientMessage {
        edit: Box<ClientEdit>,
        attempt: u32,
        #[serde(default)]
        waits: u32,
    },
    /// Put a client's reaction into Kommo (`added`), or take it back; `waits` as for an edit.
    SendClientReaction {
        reaction: Box<ClientReaction>,
        added: bool,
        attempt: u32,
        #[serde(default)]
        waits: u32,
    },
    /// Change the Kommo contact linked to a conversation's chat to a client's profile.
    UpdateClientProfile {
        profile: Box<ClientProfile>,
        #[serde(default)]
        attempt: u32,
        /// When the chat event reached the bridge.
        #[serde(default)]
        received_at_ms: i64,
    },
    /// Finish an installation whose code was spent: read the account when it could not be at
    /// install (its tokens then travel sealed for `host`), connect its channel, retried with
    /// backoff until it succeeds.
    FinishInstall {
        host: String,
        #[serde(default)]
        account_id: Option<u64>,
        #[serde(default)]
        sealed_tokens: Option<String>,
        #[serde(default)]
        attempt: u32,
    },
    /// Renew the refresh tokens renewed a month ago or more, before Kommo lets an unused one
    /// lapse (sent daily by the template's schedule as `{"work":"sweep_account_tokens"}`).
    SweepAccountTokens,
    /// Read an installed account's users from Kommo into its scope's manager directory.
    RefreshManagers {
        scope_id: String,
        #[serde(default)]
        attempt: u32,
    },
    /// Ask Kommo again, after its disable hook, whether the account's tokens stopped working.
    ConfirmDisable {
        account_id: u64,
        #[serde(default)]
        attempt: u32,
    },
}

impl DueWork {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ManagerTypingCheck { .. } => "manager_typing_check",
            Self::ClientTypingRefresh { .. } => "client_typing_refresh",
            Self::ManagerPresenceCheck { .. } => "manager_presence_check",
            Self::DeliverChatEvent { .. } => "deliver_chat_event",
            Self::AcceptManagerMessage { .. } => "accept_manager_message",
            Self::RelayManagerMessage { .. } => "relay_manager_message",
            Self::ReportDeliveryStatus { .. } => "report_delivery_status",
            Self::ImportClientMessage { .. } => "import_client_message",
            Self::EditClientMessage { .. } => "edit_client_message",
            Self::SendClientReaction { .. } => "send_client_reaction",
            Self::UpdateClientProfile { .. } => "update_client_profile",
            Self::FinishInstall { .. } => "finish_install",
            Self::SweepAccountTokens => "sweep_account_tokens",
            Self::RefreshManagers { .. } => "refresh_managers",
            Self::ConfirmDisable { .. } => "confirm_disable",
        }
    }

    /// A delivery of `event` to the chat service, first attempt, with a fresh message id.
    pub fn deliver(event: BridgeEvent) -> Self {
        Self::DeliverChatEvent { event, webhook_id: crate::random::new_webhook_id(), attempt: 0 }
    }
}

/// The largest message every [`Timers`] adapter must take: SQS's classic 256 KiB (262,144
/// bytes), the timer queue's `MaximumMessageSize` in the template. Work is measured as it is
/// queued ([`queue_body`]), which is not as it arrived: serde_json writes a number back in its
/// own form (`1e15`, 4 bytes, as `1000000000000000.0`, 18), so a request well under the body
/// limit can queue larger than this.
pub const QUEUED_WORK_MAX_BYTES: usize = 262_144;

/// What work must leave free when it is accepted: the copies of it queued later carry larger
/// counters (`attempt`, `waits`), and a refusal at acceptance is a clear 413 where a refusal by
/// the queue later would lose the work.
pub const QUEUED_WORK_HEADROOM_BYTES: usize = 1024;

/// Work too large to queue: refused before it is accepted, so nothing is stored or queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("queued, it would take {bytes} bytes, more than the {limit} a queued request may take")]
pub struct TooLargeToQueue {
    pub bytes: usize,
    pub limit: usize,
}

impl From<TooLargeToQueue> for crate::rules::rejection::Rejection {
    fn from(TooLargeToQueue { bytes, limit }: TooLargeToQueue) -> Self {
        Self::TooLargeToQueue { bytes, limit }
    }
}

/// `work` as a queue message carries it: its JSON, with the two characters SQS refuses in a
/// message body that JSON may carry raw (U+FFFE, U+FFFF) escaped. Both can stand only inside
/// a JSON string, where `\ufffe` reads back as the same character.
pub fn queue_body(work: &DueWork) -> String {
    let json = serde_json::to_string(work).expect("due work serialises");
    if !json.contains(['\u{fffe}', '\u{ffff}']) {
        return json;
    }
    json.replace('\u{fffe}', "\\ufffe").replace('\u{ffff}', "\\uffff")
}

/// Whether `work`, queued now, leaves [`QUEUED_WORK_HEADROOM_BYTES`] of the queue's
/// [`QUEUED_WORK_MAX_BYTES`] free. Every path that accepts a request and queues work built from
/// it checks that work here before its first write.
pub fn check_queueable(work: &DueWork) -> Result<(), TooLargeToQueue> {
    let limit = QUEUED_WORK_MAX_BYTES - QUEUED_WORK_HEADROOM_BYTES;
    let bytes = queue_body(work).len();
    if bytes > limit { Err(TooLargeToQueue { bytes, limit }) } else { Ok(()) }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the timer could not be scheduled: {0}")]
pub struct TimerError(pub String);

#[async_trait]
pub trait Timers: Send + Sync {
    /// Runs `work` at `due_at_ms` or shortly after, at least once.
    async fn schedule(&self, work: DueWork, due_at_ms: i64) -> Result<(), TimerError>;
}

/// Runs a piece of due work when it falls due (the queued-work dispatcher). An `Err` is
/// transient: the work is to be delivered again later.
#[async_trait]
pub trait DueWorkRunner: Send + Sync {
    type Error: std::fmt::Display + Send;
    async fn run_due(&self, work: DueWork) -> Result<(), Self::Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit_with(extra_numbers: usize, text: &str) -> DueWork {
        let mut message = crate::models::kommo::MessageContent::text(text);
        let numbers = vec![serde_json::Value::from(1e15); extra_numbers];
        message.extra.insert("metrics".into(), serde_json::Value::from(numbers));
        let edit = ClientEdit {
            scope_id: "chan_acc".into(),
            conversation_id: "conv-1".into(),
            msgid: "m-1".into(),
            message,
            timestamp_ms: None,
        };
        DueWork::EditClientMessage { edit: Box::new(edit), attempt: 0, waits: 0 }
    }

    #[test]
    fn work_is_measured_as_queued_not_as_it_arrived() {
        // GIVEN 20,000 numbers sent as `1e15`: 100 KB as they arrived (`1e15,` each)...
        let work = edit_with(20_000, "hi");
        // THEN queued they are 19 bytes each (`1000000000000000.0,`), and refused.
        let too_large = check_queueable(&work).unwrap_err();
        assert!(too_large.bytes > 20_000 * 19, "{too_large:?}");
        assert_eq!(too_large.limit, QUEUED_WORK_MAX_BYTES - QUEUED_WORK_HEADROOM_BYTES);
        // A tenth of them fits.
        assert_eq!(check_queueable(&edit_with(2_000, "hi")), Ok(()));
    }

    #[test]
    fn work_at_the_limit_fits_and_one_byte_more_does_not() {
        let limit = QUEUED_WORK_MAX_BYTES - QUEUED_WORK_HEADROOM_BYTES;
        let overhead = queue_body(&edit_with(0, "")).len();
        let at_limit = edit_with(0, &"x".repeat(limit - overhead));
        assert_eq!(queue_body(&at_limit).len(), limit);
        assert_eq!(check_queueable(&at_limit), Ok(()));
        let over = edit_with(0, &"x".repeat(limit - overhead + 1));
        assert_eq!(check_queueable(&over), Err(TooLargeToQueue { bytes: limit + 1, limit }));
    }

    #[test]
    fn characters_sqs_refuses_are_queued_escaped_and_read_back_unchanged() {
        let work = edit_with(0, "a\u{fffe}b\u{ffff}c\u{fffd}");
        let body = queue_body(&work);
        assert!(!body.contains(['\u{fffe}', '\u{ffff}']), "{body}");
        assert!(body.contains(r"a\ufffeb\uffffc"), "{body}");
        assert_eq!(serde_json::from_str::<DueWork>(&body).unwrap(), work);
        // Counted as queued: the escapes take 6 bytes where the characters took 3.
        let plain = queue_body(&edit_with(0, "a\u{fffd}b\u{fffd}c\u{fffd}"));
        assert_eq!(body.len(), plain.len() + 6);
    }

    #[test]
    fn due_work_travels_as_tagged_json() {
        let work =
            DueWork::ManagerTypingCheck { scope_id: "s".into(), conversation_id: "c".into(), manager_id: "m".into() };
        let text = serde_json::to_string(&work).unwrap();
        assert_eq!(text, r#"{"work":"manager_typing_check","scope_id":"s","conversation_id":"c","manager_id":"m"}"#);
        assert_eq!(serde_json::from_str::<DueWork>(&text).unwrap(), work);
    }

    #[test]
    fn the_daily_schedules_fixed_body_is_the_token_sweep() {
        let body = r#"{"work":"sweep_account_tokens"}"#;
        assert_eq!(serde_json::from_str::<DueWork>(body).unwrap(), DueWork::SweepAccountTokens);
        assert_eq!(serde_json::to_string(&DueWork::SweepAccountTokens).unwrap(), body);
        let finish = r#"{"work":"finish_install","host":"acme.kommo.com","account_id":7}"#;
        let parsed = serde_json::from_str::<DueWork>(finish).unwrap();
        let expected = DueWork::FinishInstall {
            host: "acme.kommo.com".into(),
            account_id: Some(7),
            sealed_tokens: None,
            attempt: 0,
        };
        assert_eq!(parsed, expected);
    }
}
