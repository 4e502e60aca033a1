//! What an inbound event must say before the bridge acts on it, checked without the store, so
//! that a malformed event changes nothing at all. A refusal is a domain error ([`Rejection`]);
//! the composition root alone turns it into an HTTP answer.

use super::id_checks::{check_id, check_optional_id, check_path_id};
use super::rejection::Rejection;
use crate::models::chat::{
    ChatEvent, ClientEdit, ClientMessage, ClientReaction, MessageRef, ReportedStatus, StatusReport,
};
use crate::models::kommo::{ConversationRef, KommoWebhook, MessageContent, MessageKind};
use crate::models::status::{DeliveryError, DeliveryStatus};

/// The checks of a chat event that need no store.
pub fn check_chat_event(event: &ChatEvent) -> Result<(), Rejection> {
    match event {
        ChatEvent::TypingStarted(typing) => {
            check_id("conversation_id", &typing.conversation_id)?;
            check_id("user_id", &typing.user_id)?;
            super::typing::client_typing_ttl_ms(typing.ttl_ms).map(drop)
        }
        ChatEvent::TypingStopped(typing) => {
            check_id("conversation_id", &typing.conversation_id)?;
            check_id("user_id", &typing.user_id)
        }
        ChatEvent::MessageCreated(message) => check_client_message(message),
        ChatEvent::MessageStatus(report) => reported_status(report).map(drop),
        ChatEvent::PresenceOnline(presence)
        | ChatEvent::PresenceHeartbeat(presence)
        | ChatEvent::PresenceOffline(presence) => {
            check_id("user_id", &presence.user_id)?;
            check_optional_id("conversation_id", presence.conversation_id.as_deref())?;
            check_optional_id("device_id", presence.device_id.as_deref())
        }
        ChatEvent::MessageEdited(edit) => check_client_edit(edit),
        ChatEvent::ReactionAdded(reaction) => check_client_reaction(reaction, true),
        ChatEvent::ReactionRemoved(reaction) => check_client_reaction(reaction, false),
        ChatEvent::ClientUpdated(profile) => super::profiles::check_client_profile(profile),
    }
}

/// Emoji longer than this are not one emoji (a family with skin tones is 7 to 11 characters).
const MAX_EMOJI_CHARS: usize = 16;

/// A `message.created` names its conversation, message and sender, and a source only as Kommo
/// takes one.
pub fn check_client_message(message: &ClientMessage) -> Result<(), Rejection> {
    check_id("conversation_id", &message.conversation_id)?;
    check_id("msgid", &message.msgid)?;
    check_id("user.id", &message.user.id)?;
    check_optional_id("conversation_ref_id", message.conversation_ref_id.as_deref())?;
    if let Some(source) = &message.source
        && !is_source_id(&source.external_id)
    {
        return Err(Rejection::invalid("source.external_id must be 1 to 40 printable ASCII characters"));
    }
    if let Some(reply_to) = &message.reply_to {
        one_message(reply_to, "reply_to")?;
    }
    check_message_content(&message.message)
}

/// A `message.edited` names the message and says what it reads now, as a new message would,
/// except that a file, picture or video whose media is unchanged comes without it (an edit of
/// the caption only), as Kommo's `edit_message` takes it.
pub fn check_client_edit(edit: &ClientEdit) -> Result<(), Rejection> {
    check_id("conversation_id", &edit.conversation_id)?;
    check_id("msgid", &edit.msgid)?;
    let caption_only = matches!(edit.message.kind, MessageKind::Picture | MessageKind::Video | MessageKind::File)
        && edit.message.media.is_none();
    if caption_only { Ok(()) } else { check_message_content(&edit.message) }
}

/// A reaction names its conversation, client and message, and an emoji when one is added.
pub fn check_client_reaction(reaction: &ClientReaction, added: bool) -> Result<(), Rejection> {
    check_id("conversation_id", &reaction.conversation_id)?;
    check_id("user_id", &reaction.user_id)?;
    match reaction.emoji.as_deref() {
        None | Some("") if added => return Err(Rejection::invalid("reaction.added needs an emoji")),
        Some(emoji) if emoji.chars().count() > MAX_EMOJI_CHARS => {
            return Err(Rejection::invalid(format!("emoji must be at most {MAX_EMOJI_CHARS} characters")));
        }
        _ => {}
    }
    one_message(&reaction.message, "the reaction")
}

/// Exactly one of `msgid` and `reference`, not empty; a reference is a Kommo msgid.
fn one_message(message: &MessageRef, what: &str) -> Result<(), Rejection> {
    match (message.msgid.as_deref(), message.reference.as_deref()) {
        (Some(msgid), None) => check_id(&format!("{what}: msgid"), msgid),
        (None, Some(reference)) => check_path_id(&format!("{what}: reference"), reference),
        _ => Err(Rejection::invalid(format!("{what} names its message by exactly one of msgid and reference"))),
    }
}

/// What Kommo needs of each type of message, so that a message it would refuse is refused at
/// once, while the chat service is still there to hear it, rather than dead-lettered later.
pub fn check_message_content(message: &MessageContent) -> Result<(), Rejection> {
    let given = |value: &Option<String>| value.as_deref().is_some_and(|v| !v.trim().is_empty());
    let field = |name: &str| message.extra.get(name).and_then(serde_json::Value::as_object);
    let kind: String = message.kind.clone().into();
    match &message.kind {
        MessageKind::Text if !given(&message.text) => Err(Rejection::invalid("a text message needs message.text")),
        MessageKind::Picture | MessageKind::Video | MessageKind::File
            if !given(&message.media) || message.file_size.is_none() =>
        {
            Err(Rejection::invalid(format!("a {kind} message needs message.media and message.file_size")))
        }
        MessageKind::Voice | MessageKind::Audio | MessageKind::Sticker if !given(&message.media) => {
            Err(Rejection::invalid(format!("a {kind} message needs message.media")))
        }
        MessageKind::Location => {
            let coordinate = |name, range: std::ops::RangeInclusive<f64>| {
                field("location")
                    .and_then(|l| l.get(name))
                    .and_then(serde_json::Value::as_f64)
                    .filter(|v| range.contains(v))
            };
            match (coordinate("lat", -90.0..=90.0), coordinate("lon", -180.0..=180.0)) {
                (Some(_), Some(_)) => Ok(()),
                _ => Err(Rejection::invalid("a location message needs message.location.lat and .lon")),
            }
        }
        MessageKind::Contact => {
            let named = |name| {
                field("contact")
                    .and_then(|c| c.get(name))
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(|v| !v.trim().is_empty())
            };
            // Kommo requires both; a missing name is filled from the phone
            // (`super::kommo_content`), a phone cannot be made up.
            if named("phone") {
                Ok(())
            } else {
                Err(Rejection::invalid("a contact message needs message.contact.phone (the name may be left out)"))
            }
        }
        MessageKind::Other(_) => Err(Rejection::invalid(format!("message.type {kind:?} is not one Kommo takes"))),
        _ => Ok(()),
    }
}

/// Kommo's `source.external_id`: 1 to 40 printable ASCII characters.
fn is_source_id(id: &str) -> bool {
    (1..=40).contains(&id.len()) && id.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// What a `message.status` report says: a status the register knows, error codes only with
/// `failed`, `up_to` only with `read`, and a message named.
pub fn reported_status(report: &StatusReport) -> Result<DeliveryStatus, Rejection> {
    let status = match (report.status, report.error_code) {
        (ReportedStatus::Failed, Some(code)) => DeliveryStatus::Failed(
            DeliveryError::from_code(code, report.error.as_deref()).map_err(|e| Rejection::invalid(e.to_string()))?,
        ),
        (ReportedStatus::Failed, None) => return Err(Rejection::invalid("a failed status needs error_code 901-905")),
        (_, Some(_)) => return Err(Rejection::invalid("error_code belongs only to status failed")),
        (ReportedStatus::Delivered, None) => DeliveryStatus::Delivered,
        (ReportedStatus::Read, None) => DeliveryStatus::Read,
    };
    if report.up_to && status != DeliveryStatus::Read {
        return Err(Rejection::invalid("up_to belongs only to status read"));
    }
    // An empty id is as good as none (the contract has always read it so).
    fn given(id: &Option<String>) -> Option<&str> {
        id.as_deref().filter(|id| !id.is_empty())
    }
    if given(&report.reference).is_none() && given(&report.msgid).is_none() {
        return Err(Rejection::invalid("name the message by msgid or reference"));
    }
    check_optional_id("conversation_id", given(&report.conversation_id))?;
    check_optional_id("msgid", given(&report.msgid))?;
    // A reference is a Kommo msgid, which goes into the path of amojo's delivery_status call.
    if let Some(reference) = given(&report.reference) {
        check_path_id("reference", reference)?;
    }
    Ok(status)
}

/// The ids of a Kommo webhook, each as [`check_id`] (a message's Kommo msgid as
/// [`check_path_id`]: a status for it goes into an amojo path), before anything is stored.
pub fn check_webhook_ids(webhook: &KommoWebhook) -> Result<(), Rejection> {
    let conversation = |conversation: &ConversationRef| {
        check_id("conversation.id", &conversation.id)?;
        check_optional_id("conversation.client_id", conversation.client_id.as_deref())
    };
    if let Some(message) = &webhook.message {
        conversation(&message.conversation)?;
        check_id("message.sender.id", &message.sender.id)?;
        check_id("message.receiver.id", &message.receiver.id)?;
        check_optional_id("message.receiver.client_id", message.receiver.client_id.as_deref())?;
        if let Some(msgid) = message.message.id.as_deref() {
            check_path_id("message.message.id", msgid)?;
        }
    }
    if let Some(typing) = webhook.action.as_ref().and_then(|action| action.typing.as_ref()) {
        conversation(&typing.conversation)?;
        check_id("action.typing.user.id", &typing.user.id)?;
    }
    if let Some(reaction) = webhook.action.as_ref().and_then(|action| action.reaction.as_ref()) {
        if let Some(conversation_ref) = &reaction.conversation {
            conversation(conversation_ref)?;
        }
        let user_id = reaction.user.as_ref().and_then(|user| user.id.as_deref());
        check_optional_id("action.reaction.user.id", user_id.filter(|id| !id.is_empty()))?;
        for (field, kommo_msgid) in [
            ("action.reaction.msgid", reaction.msgid.as_deref()),
            ("action.reaction.message.id", reaction.message.as_ref().and_then(|m| m.id.as_deref())),
        ] {
            if let Some(kommo_msgid) = kommo_msgid.filter(|id| !id.is_empty()) {
                check_path_id(field, kommo_msgid)?;
            }
        }
        let client_id = reaction.message.as_ref().and_then(|m| m.client_id.as_deref());
        check_optional_id("action.reaction.message.client_id", client_id.filter(|id| !id.is_empty()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(fields: serde_json::Value) -> StatusReport {
        let mut body = json!({"scope_id": "chan_acc"});
        body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn a_status_report_is_checked_before_anything_is_stored() {
        let failed = |code| DeliveryStatus::Failed(DeliveryError::from_code(code, Some("x")).unwrap());
        let cases = [
            (json!({"reference": "k-1", "status": "delivered"}), Ok(DeliveryStatus::Delivered)),
            (json!({"msgid": "c-1", "status": "read", "up_to": true}), Ok(DeliveryStatus::Read)),
            (json!({"reference": "k-1", "status": "failed", "error_code": 902}), Ok(failed(902))),
            (json!({"reference": "k-1", "status": "failed"}), Err("a failed status needs error_code 901-905")),
            (
                json!({"reference": "k-1", "status": "read", "error_code": 903}),
                Err("error_code belongs only to status failed"),
            ),
            (
                json!({"reference": "k-1", "status": "delivered", "up_to": true}),
                Err("up_to belongs only to status read"),
            ),
            (json!({"status": "read"}), Err("name the message by msgid or reference")),
            (json!({"reference": "", "msgid": "", "status": "read"}), Err("name the message by msgid or reference")),
            (
                json!({"reference": "a/b", "status": "read"}),
                Err("reference must be 1 to 128 of A-Z a-z 0-9 - . _ ~ (not . or ..)"),
            ),
            (
                json!({"reference": "x".repeat(129), "status": "read"}),
                Err("reference must be 1 to 128 of A-Z a-z 0-9 - . _ ~ (not . or ..)"),
            ),
        ];
        for (fields, expected) in cases {
            let outcome = reported_status(&report(fields.clone())).map_err(|e| e.to_string());
            assert_eq!(outcome, expected.map_err(str::to_owned), "{fields}");
        }
    }

    #[test]
    fn a_source_is_what_kommo_takes() {
        for (id, valid) in [
            ("whatsapp-1", true),
            ("+1 555 0100", true),
            (&"x".repeat(40)[..], true),
            (&"x".repeat(41)[..], false),
            ("", false),
            ("tab\there", false),
            ("café", false),
        ] {
            assert_eq!(is_source_id(id), valid, "{id:?}");
        }
    }

    #[test]
    fn each_message_type_has_what_kommo_needs() {
        let cases = [
            (json!({"type": "text", "text": "hi"}), true),
            (json!({"type": "text"}), false),
            (json!({"type": "text", "text": "  "}), false),
            (json!({"type": "picture", "media": "https://example.com/p.png", "file_size": 10}), true),
            (json!({"type": "picture", "media": "https://example.com/p.png"}), false),
            (json!({"type": "file", "file_size": 10}), false),
            (json!({"type": "video", "media": "https://example.com/v.mp4", "file_size": 0}), true),
            (json!({"type": "voice", "media": "https://example.com/v.ogg"}), true),
            (json!({"type": "sticker"}), false),
            (json!({"type": "location", "location": {"lat": 52.5, "lon": 13.4}}), true),
            (json!({"type": "location", "location": {"lat": 91, "lon": 13.4}}), false),
            (json!({"type": "location", "location": {"lat": "52.5", "lon": 13.4}}), false),
            (json!({"type": "location"}), false),
            (json!({"type": "contact", "contact": {"phone": "+1 555 0100"}}), true),
            (json!({"type": "contact", "contact": {"name": "Ann", "phone": "+1 555 0100"}}), true),
            (json!({"type": "contact", "contact": {"name": "Ann"}}), false),
            (json!({"type": "contact", "contact": {"name": "Ann", "phone": " "}}), false),
            (json!({"type": "contact", "contact": {"name": ""}}), false),
            (json!({"type": "hologram", "text": "hi"}), false),
        ];
        for (content, valid) in cases {
            let message: MessageContent = serde_json::from_value(content.clone()).unwrap();
            assert_eq!(check_message_content(&message).is_ok(), valid, "{content}");
        }
    }

    #[test]
    fn an_edit_may_leave_its_media_out_when_only_the_caption_changes() {
        let edit = |message: serde_json::Value| {
            let body = json!({"scope_id": "chan_acc", "conversation_id": "c-1", "msgid": "m-1", "message": message});
            check_client_edit(&serde_json::from_value(body).unwrap()).is_ok()
        };
        assert!(edit(json!({"type": "picture", "text": "new caption"})));
        assert!(edit(json!({"type": "file"})));
        assert!(edit(json!({"type": "video", "media": "https://example.com/v2.mp4", "file_size": 9})));
        assert!(!edit(json!({"type": "video", "media": "https://example.com/v2.mp4"})), "new media needs its size");
        assert!(!edit(json!({"type": "voice", "text": "x"})), "a voice message is its media");
        assert!(!edit(json!({"type": "text"})));
    }

    #[test]
    fn a_message_is_named_by_exactly_one_id() {
        let named = |msgid: Option<&str>, reference: Option<&str>| {
            one_message(&MessageRef { msgid: msgid.map(Into::into), reference: reference.map(Into::into) }, "x").is_ok()
        };
        assert!(named(Some("m-1"), None));
        assert!(named(None, Some("k-1")));
        assert!(!named(None, None));
        assert!(!named(Some("m-1"), Some("k-1")));
        assert!(!named(Some(""), None));
        assert!(!named(None, Some("../x")));
    }
}
