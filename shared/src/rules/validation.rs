//! What an inbound event must say before the bridge acts on it, checked without the store, so
//! that a malformed event changes nothing at all. A refusal is a domain error ([`Rejection`]);
//! the composition root alone turns it into an HTTP answer.

use super::rejection::Rejection;
use crate::models::chat::{ChatEvent, ClientMessage, ReportedStatus, StatusReport};
use crate::models::status::{DeliveryError, DeliveryStatus};

/// The checks of a chat event that need no store.
pub fn check_chat_event(event: &ChatEvent) -> Result<(), Rejection> {
    match event {
        ChatEvent::TypingStarted(typing) => {
            require_non_empty(&[("conversation_id", &typing.conversation_id), ("user_id", &typing.user_id)])?;
            super::typing::client_typing_ttl_ms(typing.ttl_ms).map(drop)
        }
        ChatEvent::TypingStopped(typing) => {
            require_non_empty(&[("conversation_id", &typing.conversation_id), ("user_id", &typing.user_id)])
        }
        ChatEvent::MessageCreated(message) => check_client_message(message),
        ChatEvent::MessageStatus(report) => reported_status(report).map(drop),
        ChatEvent::PresenceOnline(presence)
        | ChatEvent::PresenceHeartbeat(presence)
        | ChatEvent::PresenceOffline(presence) => require_non_empty(&[("user_id", &presence.user_id)]),
    }
}

/// A `message.created` names its conversation, message and sender, and a source only as Kommo
/// takes one.
pub fn check_client_message(message: &ClientMessage) -> Result<(), Rejection> {
    require_non_empty(&[
        ("conversation_id", &message.conversation_id),
        ("msgid", &message.msgid),
        ("user.id", &message.user.id),
    ])?;
    match &message.source {
        Some(source) if !is_source_id(&source.external_id) => {
            Err(Rejection::invalid("source.external_id must be 1 to 40 printable ASCII characters"))
        }
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
    let names_a_message = report.reference.as_deref().is_some_and(|r| !r.is_empty())
        || report.msgid.as_deref().is_some_and(|m| !m.is_empty());
    if !names_a_message {
        return Err(Rejection::invalid("name the message by msgid or reference"));
    }
    // A reference is a Kommo msgid, which goes into the path of amojo's delivery_status call:
    // Kommo's ids are short and URL-safe, anything else is not one of them.
    if let Some(reference) = report.reference.as_deref().filter(|r| !r.is_empty())
        && !is_url_safe_id(reference)
    {
        return Err(Rejection::invalid("reference is not a Kommo msgid"));
    }
    Ok(status)
}

/// A refusal naming the first of `fields` that is empty.
pub fn require_non_empty(fields: &[(&str, &str)]) -> Result<(), Rejection> {
    match fields.iter().find(|(_, value)| value.is_empty()) {
        Some((field, _)) => Err(Rejection::invalid(format!("{field} must not be empty"))),
        None => Ok(()),
    }
}

/// Up to 128 of URL's unreserved characters (letters, digits, `-._~`).
fn is_url_safe_id(id: &str) -> bool {
    id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
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
            (json!({"reference": "a/b", "status": "read"}), Err("reference is not a Kommo msgid")),
            (json!({"reference": "x".repeat(129), "status": "read"}), Err("reference is not a Kommo msgid")),
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
    fn an_empty_field_is_named() {
        assert_eq!(require_non_empty(&[("a", "x"), ("b", "")]), Err(Rejection::invalid("b must not be empty")));
        assert_eq!(require_non_empty(&[("a", "x")]), Ok(()));
    }
}
