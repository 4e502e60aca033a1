//! Kommo Chat API (amojo) payloads, tolerant of what they do not name.
//!
//! Webhooks from Kommo: [`KommoWebhook`] (outgoing manager message, manager typing, reactions,
//! anything else). Calls to amojo: connect, create chat, import message, typing, delivery status.

use serde::{Deserialize, Serialize};

use super::ExtraFields;

// ---------------------------------------------------------------------------------------------
// Webhooks from Kommo

/// Every chat webhook Kommo posts to `…/kommo/webhook/{scope_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KommoWebhook {
    pub account_id: String,
    pub time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<ManagerMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<WebhookAction>,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// What a webhook is about, from the bridge's point of view.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WebhookKind<'a> {
    ManagerMessage(&'a ManagerMessage),
    ManagerTyping(&'a TypingAction),
    Reaction(&'a ReactionAction),
    /// Acknowledged and otherwise ignored, so Kommo never demotes the channel for it.
    Other,
}

impl KommoWebhook {
    pub fn kind(&self) -> WebhookKind<'_> {
        if let Some(message) = &self.message {
            return WebhookKind::ManagerMessage(message);
        }
        match &self.action {
            Some(WebhookAction { typing: Some(typing), .. }) => WebhookKind::ManagerTyping(typing),
            Some(WebhookAction { reaction: Some(reaction), .. }) => WebhookKind::Reaction(reaction),
            _ => WebhookKind::Other,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typing: Option<TypingAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaction: Option<ReactionAction>,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// A manager typing in the Kommo interface (sent every 5 s while typing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypingAction {
    pub user: IdRef,
    pub conversation: ConversationRef,
    /// Unix seconds at which Kommo considers the typing over.
    pub expired_at: i64,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// A manager reacting to a message in Kommo. Kommo does not document this webhook; public
/// clients read it in two shapes, both taken here: the message as `msgid` (Kommo's id), or as
/// `message: {id, client_id}` (Kommo's id and the integration's). Every field is optional so
/// that a shape seen nowhere yet is refused by the flow with a clear error, not by the parser.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReactionAction {
    /// `react` or `unreact`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<ReactionUser>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<ConversationRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msgid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<ReactedMessage>,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReactionUser {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// The message reacted to: Kommo's id, and the integration's when Kommo knows one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReactedMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdRef {
    pub id: String,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// Kommo's chat id (`id`) and the integration's conversation id (`client_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationRef {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

impl ConversationRef {
    /// The integration's id when Kommo knows it, else Kommo's own: prefer `client_id`.
    pub fn integration_id(&self) -> &str {
        self.client_id.as_deref().filter(|id| !id.is_empty()).unwrap_or(&self.id)
    }
}

/// An outgoing message written by a manager in Kommo (the `message` of the webhook).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManagerMessage {
    pub receiver: Participant,
    pub sender: Participant,
    pub conversation: ConversationRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msec_timestamp: Option<i64>,
    pub message: MessageContent,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// A person in a chat: Kommo's id, and the integration's (`client_id` / `ref_id`) when known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Participant {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_link: Option<String>,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

impl Participant {
    pub fn with_id(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            client_id: None,
            ref_id: None,
            name: None,
            avatar: None,
            phone: None,
            email: None,
            profile: None,
            profile_link: None,
            extra: ExtraFields::new(),
        }
    }

    /// The integration's id when Kommo knows it, else Kommo's own: prefer `client_id`.
    pub fn integration_id(&self) -> &str {
        self.client_id.as_deref().filter(|id| !id.is_empty()).unwrap_or(&self.id)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Source {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// A message's content, of any type. Fields beyond the documented ones are kept, so a type
/// Kommo adds later is relayed as it came rather than dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageContent {
    /// Kommo's message id, present on webhooks: the id `delivery_status` needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub kind: MessageKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

impl MessageContent {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            id: None,
            kind: MessageKind::Text,
            text: Some(text.into()),
            media: None,
            thumbnail: None,
            file_name: None,
            file_size: None,
            extra: ExtraFields::new(),
        }
    }
}

/// Kommo's message types; one it does not know yet is carried by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum MessageKind {
    Text,
    Contact,
    File,
    Video,
    Picture,
    Voice,
    Audio,
    Sticker,
    Location,
    Other(String),
}

const MESSAGE_KINDS: [(MessageKind, &str); 9] = [
    (MessageKind::Text, "text"),
    (MessageKind::Contact, "contact"),
    (MessageKind::File, "file"),
    (MessageKind::Video, "video"),
    (MessageKind::Picture, "picture"),
    (MessageKind::Voice, "voice"),
    (MessageKind::Audio, "audio"),
    (MessageKind::Sticker, "sticker"),
    (MessageKind::Location, "location"),
];

impl From<String> for MessageKind {
    fn from(name: String) -> Self {
        MESSAGE_KINDS
            .iter()
            .find(|(_, known)| *known == name)
            .map(|(kind, _)| kind.clone())
            .unwrap_or(MessageKind::Other(name))
    }
}

impl From<MessageKind> for String {
    fn from(kind: MessageKind) -> Self {
        match kind {
            MessageKind::Other(name) => name,
            known => {
                MESSAGE_KINDS.iter().find(|(k, _)| *k == known).map(|(_, name)| (*name).to_owned()).unwrap_or_default()
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Calls to amojo

/// `POST /v2/origin/custom/{channel_id}/connect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectRequest {
    pub account_id: String,
    pub title: String,
    /// Always `"v2"`: v1 webhooks are obsolete.
    pub hook_api_version: String,
}

impl ConnectRequest {
    pub fn v2(account_id: impl Into<String>, title: impl Into<String>) -> Self {
        Self { account_id: account_id.into(), title: title.into(), hook_api_version: "v2".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectResponse {
    pub scope_id: String,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// `DELETE /v2/origin/custom/{channel_id}/disconnect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisconnectRequest {
    pub account_id: String,
}

/// `POST /v2/origin/custom/{scope_id}/chats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateChatRequest {
    pub conversation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    pub user: Participant,
}

/// What the bridge reads of amojo's answer: only the ids it uses, each optional, so that a
/// thinner answer than documented never turns a chat that was made into a failure.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateChatResponse {
    /// Kommo's chat id for the conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// `POST /v2/origin/custom/{scope_id}`: send or import a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportMessageRequest {
    /// Always `"new_message"`.
    pub event_type: String,
    pub payload: ImportPayload,
}

impl ImportMessageRequest {
    pub fn new_message(payload: ImportPayload) -> Self {
        Self { event_type: "new_message".into(), payload }
    }
}

/// `POST /v2/origin/custom/{scope_id}` with `event_type: "edit_message"`: a message imported
/// before, as it reads now (documented in Kommo's Russian Chat API pages only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditMessageRequest {
    /// Always `"edit_message"`.
    pub event_type: String,
    pub payload: EditPayload,
}

impl EditMessageRequest {
    pub fn edit_message(payload: EditPayload) -> Self {
        Self { event_type: "edit_message".into(), payload }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditPayload {
    pub timestamp: i64,
    pub msec_timestamp: i64,
    /// The integration's id of the message edited.
    pub msgid: String,
    pub conversation_id: String,
    pub message: MessageContent,
}

/// The message a new one replies to, as amojo takes it: `msgid` is the integration's id,
/// `id` Kommo's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyTo {
    pub message: KommoMessageRef,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KommoMessageRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msgid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `POST /v2/origin/custom/{scope_id}/react`: a client's reaction to a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactRequest {
    pub conversation_id: String,
    /// Kommo's chat id, on a chat a manager started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_ref_id: Option<String>,
    /// The message, by the integration's id (`msgid`) or Kommo's (`id`).
    #[serde(flatten)]
    pub message: KommoMessageRef,
    pub user: SenderRef,
    /// `react` or `unreact`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportPayload {
    pub timestamp: i64,
    pub msec_timestamp: i64,
    /// The integration's message id.
    pub msgid: String,
    pub conversation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_ref_id: Option<String>,
    /// A client message carries only the sender; a manager's also the receiver.
    pub sender: Participant,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver: Option<Participant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    pub message: MessageContent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<ReplyTo>,
    #[serde(default)]
    pub silent: bool,
}

/// amojo's answer to an import, read for the ids only (see [`CreateChatResponse`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImportMessageResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_message: Option<ImportedMessage>,
}

impl ImportMessageResponse {
    /// Kommo's msgid for the message, when the answer names it.
    pub fn kommo_msgid(&self) -> Option<&str> {
        self.new_message.as_ref()?.msgid.as_deref().filter(|id| !id.is_empty())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImportedMessage {
    /// Kommo's chat id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver_id: Option<String>,
    /// Kommo's message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msgid: Option<String>,
    /// The integration's message id, echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_id: Option<String>,
}

/// `POST /v2/origin/custom/{scope_id}/typing`: Kommo shows the client typing for 5 s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypingRequest {
    /// The integration's conversation id.
    pub conversation_id: String,
    pub sender: SenderRef,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderRef {
    /// The integration's user id of the client.
    pub id: String,
}

pub use super::status::{DeliveryError, DeliveryStatus, DeliveryStatusRequest};
