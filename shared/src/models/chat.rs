//! The chat-service contract, v1: one JSON envelope both ways,
//! `{"type": "...", "scope_id": "...", "conversation_id": "...", ...}`.
//!
//! Ids here are the integration's: the conversation id, the client's user id, the chat
//! service's message id. The bridge keeps the mapping to Kommo's ids. `docs/openapi.yaml`
//! is the normative form.

use serde::{Deserialize, Serialize};

use super::kommo::MessageContent;

/// Events the chat service posts to `POST /chat/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ChatEvent {
    #[serde(rename = "message.created")]
    MessageCreated(Box<ClientMessage>),
    #[serde(rename = "message.status")]
    MessageStatus(StatusReport),
    #[serde(rename = "typing.started")]
    TypingStarted(ClientTypingSignal),
    #[serde(rename = "typing.stopped")]
    TypingStopped(ClientTypingSignal),
    #[serde(rename = "presence.online")]
    PresenceOnline(ClientPresenceSignal),
    #[serde(rename = "presence.heartbeat")]
    PresenceHeartbeat(ClientPresenceSignal),
    #[serde(rename = "presence.offline")]
    PresenceOffline(ClientPresenceSignal),
    #[serde(rename = "message.edited")]
    MessageEdited(Box<ClientEdit>),
    #[serde(rename = "reaction.added")]
    ReactionAdded(ClientReaction),
    #[serde(rename = "reaction.removed")]
    ReactionRemoved(ClientReaction),
    #[serde(rename = "client.updated")]
    ClientUpdated(Box<ClientProfile>),
}

impl ChatEvent {
    pub fn scope_id(&self) -> &str {
        match self {
            Self::MessageCreated(e) => &e.scope_id,
            Self::MessageStatus(e) => &e.scope_id,
            Self::TypingStarted(e) | Self::TypingStopped(e) => &e.scope_id,
            Self::PresenceOnline(e) | Self::PresenceHeartbeat(e) | Self::PresenceOffline(e) => &e.scope_id,
            Self::MessageEdited(e) => &e.scope_id,
            Self::ReactionAdded(e) | Self::ReactionRemoved(e) => &e.scope_id,
            Self::ClientUpdated(e) => &e.scope_id,
        }
    }

    /// Typing and presence: signals a chat service repeats while they hold, idempotent and
    /// ending by themselves.
    pub fn is_signal(&self) -> bool {
        matches!(
            self,
            Self::TypingStarted(_)
                | Self::TypingStopped(_)
                | Self::PresenceOnline(_)
                | Self::PresenceHeartbeat(_)
                | Self::PresenceOffline(_)
        )
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Self::MessageCreated(_) => "message.created",
            Self::MessageStatus(_) => "message.status",
            Self::TypingStarted(_) => "typing.started",
            Self::TypingStopped(_) => "typing.stopped",
            Self::PresenceOnline(_) => "presence.online",
            Self::PresenceHeartbeat(_) => "presence.heartbeat",
            Self::PresenceOffline(_) => "presence.offline",
            Self::MessageEdited(_) => "message.edited",
            Self::ReactionAdded(_) => "reaction.added",
            Self::ReactionRemoved(_) => "reaction.removed",
            Self::ClientUpdated(_) => "client.updated",
        }
    }

    pub fn conversation_id(&self) -> Option<&str> {
        match self {
            Self::MessageCreated(e) => Some(&e.conversation_id),
            Self::MessageStatus(e) => e.conversation_id.as_deref(),
            Self::TypingStarted(e) | Self::TypingStopped(e) => Some(&e.conversation_id),
            Self::PresenceOnline(e) | Self::PresenceHeartbeat(e) | Self::PresenceOffline(e) => {
                e.conversation_id.as_deref()
            }
            Self::MessageEdited(e) => Some(&e.conversation_id),
            Self::ReactionAdded(e) | Self::ReactionRemoved(e) => Some(&e.conversation_id),
            Self::ClientUpdated(e) => Some(&e.conversation_id),
        }
    }

    /// The message an event names: the chat service's msgid, or for a status the Kommo msgid
    /// (`reference`) when it gives one.
    pub fn msgid(&self) -> Option<&str> {
        match self {
            Self::MessageCreated(e) => Some(&e.msgid),
            Self::MessageStatus(e) => e.reference.as_deref().or(e.msgid.as_deref()),
            Self::MessageEdited(e) => Some(&e.msgid),
            Self::ReactionAdded(e) | Self::ReactionRemoved(e) => e.message.id(),
            _ => None,
        }
    }
}

/// The client as the chat service knows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatUser {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_link: Option<String>,
}

/// `client.updated` from the chat service: what it knows of the client now (name, avatar,
/// phone, email), for the Kommo contact linked to the conversation's chat. A field left out is
/// not changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientProfile {
    pub scope_id: String,
    pub conversation_id: String,
    pub user: ChatUser,
}

/// `message.created` from the chat service: a client wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientMessage {
    pub scope_id: String,
    pub conversation_id: String,
    /// The chat service's message id.
    pub msgid: String,
    pub user: ChatUser,
    pub message: MessageContent,
    /// Unix milliseconds when the client sent it.
    pub timestamp_ms: i64,
    /// Which of the channel's sources (numbers, pages) the client wrote to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<MessageSource>,
    /// On a conversation a manager started in Kommo: the conversation id the bridge gave for it,
    /// when the chat service answers under an id of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_ref_id: Option<String>,
    /// The message this one replies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageRef>,
}

/// A message named by the chat service's id (`msgid`) or by Kommo's (`reference`): exactly one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msgid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

impl MessageRef {
    /// Whichever id names the message.
    pub fn id(&self) -> Option<&str> {
        self.reference.as_deref().or(self.msgid.as_deref())
    }
}

/// `message.edited` from the chat service: a client changed a message they sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientEdit {
    pub scope_id: String,
    pub conversation_id: String,
    /// The chat service's id of the edited message.
    pub msgid: String,
    /// The message as it reads now.
    pub message: MessageContent,
    /// Unix milliseconds of the edit (the bridge's clock when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_ms: Option<i64>,
}

/// `reaction.added` / `reaction.removed` from the chat service: a client reacted to a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientReaction {
    pub scope_id: String,
    pub conversation_id: String,
    pub user_id: String,
    /// Required with `reaction.added`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
    #[serde(flatten)]
    pub message: MessageRef,
}

/// One of a channel's sources in Kommo (several numbers or pages behind one channel): Kommo's
/// `source.external_id`, at most 40 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSource {
    pub external_id: String,
}

/// How a status names its message: the chat service's id, or Kommo's (`reference`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub scope_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msgid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub status: ReportedStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With `read`: every earlier manager message of the conversation is read too.
    #[serde(default)]
    pub up_to: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportedStatus {
    Delivered,
    Read,
    Failed,
}

/// `typing.started` / `typing.stopped` from the chat service: the client types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientTypingSignal {
    pub scope_id: String,
    pub conversation_id: String,
    pub user_id: String,
    /// How long the chat service vouches for the typing (default 6000, at most 30000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u32>,
}

/// `presence.*` from the chat service: the client's liveness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientPresenceSignal {
    pub scope_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

/// Events the bridge posts to `CHAT_SERVICE_URL`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum BridgeEvent {
    /// A manager wrote; `reference` is Kommo's message id.
    #[serde(rename = "message.created")]
    MessageCreated {
        scope_id: String,
        conversation_id: String,
        reference: String,
        client_id: String,
        sender: ManagerRef,
        message: Box<MessageContent>,
        timestamp_ms: i64,
        /// The source the manager wrote from, as Kommo's webhook named it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<MessageSource>,
        /// Whom the message is for, as Kommo knows them (on a chat a manager started, all the
        /// chat service learns of the client).
        receiver: Box<Receiver>,
    },
    /// A client's message is in Kommo; `reference` is Kommo's msgid when its answer named one.
    #[serde(rename = "message.delivered")]
    MessageDelivered {
        scope_id: String,
        conversation_id: String,
        msgid: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    /// A client's message could not be put into Kommo, for good.
    #[serde(rename = "message.failed")]
    MessageFailed { scope_id: String, conversation_id: String, msgid: String, error: ImportFailure },
    /// A manager reacted to a message: `msgid` names a client's message by the chat service's
    /// id, `reference` any message by Kommo's.
    #[serde(rename = "reaction.added")]
    ReactionAdded(ManagerReaction),
    #[serde(rename = "reaction.removed")]
    ReactionRemoved(ManagerReaction),
    /// A manager opened the conversation: the client's messages up to `msgid` are read.
    #[serde(rename = "message.read")]
    MessageRead { scope_id: String, conversation_id: String, msgid: String, read_at: i64 },
    #[serde(rename = "typing.started")]
    TypingStarted { scope_id: String, conversation_id: String, manager: ManagerRef, expires_at: i64 },
    #[serde(rename = "typing.stopped")]
    TypingStopped { scope_id: String, conversation_id: String, manager: ManagerRef },
    #[serde(rename = "presence.changed")]
    PresenceChanged { scope_id: String, conversation_id: String, manager: ManagerRef, online: bool },
}

/// The receiver of a manager's message as Kommo's webhook names them; `id` is Kommo's id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receiver {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
}

/// Why a client's message is not in Kommo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportFailure {
    pub code: ImportFailureCode,
    /// A short description for people (never the message's text).
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportFailureCode {
    /// Kommo refused the message (a 4xx): sending it again as it is would not help.
    KommoRefused,
    /// Kommo could not be reached until the attempts ran out.
    KommoUnavailable,
}

/// A manager's reaction, as the chat service receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerReaction {
    pub scope_id: String,
    pub conversation_id: String,
    pub manager: ManagerRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
    #[serde(flatten)]
    pub message: MessageRef,
}

/// A manager, named the same way in every event: `id` is their Chat API (amojo) id, with their
/// numeric Kommo user id when the bridge knows it (see `crate::flows::managers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerRef {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kommo_user_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ManagerRef {
    /// A manager as Kommo's chat webhooks name them: by their amojo id.
    /// A manager as a Kommo webhook names them. Real webhooks carry `sender.name: ""`: a blank
    /// name is none, so the directory's name takes its place and none is ever sent empty.
    pub fn by_amojo_id(id: impl Into<String>, name: Option<String>) -> Self {
        Self { id: id.into(), kommo_user_id: None, name: name.filter(|name| !name.trim().is_empty()) }
    }
}

impl BridgeEvent {
    /// The manager the event names (the sender of `message.created`), to name them the same way
    /// in every event.
    pub fn manager_mut(&mut self) -> Option<&mut ManagerRef> {
        match self {
            Self::MessageCreated { sender, .. } => Some(sender),
            Self::TypingStarted { manager, .. }
            | Self::TypingStopped { manager, .. }
            | Self::PresenceChanged { manager, .. } => Some(manager),
            Self::ReactionAdded(reaction) | Self::ReactionRemoved(reaction) => Some(&mut reaction.manager),
            Self::MessageDelivered { .. } | Self::MessageFailed { .. } | Self::MessageRead { .. } => None,
        }
    }

    pub fn scope_id(&self) -> &str {
        match self {
            Self::MessageCreated { scope_id, .. }
            | Self::MessageRead { scope_id, .. }
            | Self::MessageDelivered { scope_id, .. }
            | Self::MessageFailed { scope_id, .. }
            | Self::TypingStarted { scope_id, .. }
            | Self::TypingStopped { scope_id, .. }
            | Self::PresenceChanged { scope_id, .. } => scope_id,
            Self::ReactionAdded(reaction) | Self::ReactionRemoved(reaction) => &reaction.scope_id,
        }
    }

    pub fn conversation_id(&self) -> &str {
        match self {
            Self::MessageCreated { conversation_id, .. }
            | Self::MessageRead { conversation_id, .. }
            | Self::MessageDelivered { conversation_id, .. }
            | Self::MessageFailed { conversation_id, .. }
            | Self::TypingStarted { conversation_id, .. }
            | Self::TypingStopped { conversation_id, .. }
            | Self::PresenceChanged { conversation_id, .. } => conversation_id,
            Self::ReactionAdded(reaction) | Self::ReactionRemoved(reaction) => &reaction.conversation_id,
        }
    }

    /// The message an event speaks of: Kommo's msgid of a manager's message, the chat
    /// service's of a client's message read.
    pub fn msgid(&self) -> Option<&str> {
        match self {
            Self::MessageCreated { reference, .. } => Some(reference),
            Self::MessageRead { msgid, .. }
            | Self::MessageDelivered { msgid, .. }
            | Self::MessageFailed { msgid, .. } => Some(msgid),
            Self::ReactionAdded(reaction) | Self::ReactionRemoved(reaction) => reaction.message.id(),
            Self::TypingStarted { .. } | Self::TypingStopped { .. } | Self::PresenceChanged { .. } => None,
        }
    }
}
