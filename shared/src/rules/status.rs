//! The delivery-status decisions, pure: what the chat service's refusal of a manager's message
//! means to Kommo (the automatic 901–905), and whether a status report still goes to Kommo
//! once its lane is taken. The register itself (what may replace what) is
//! [`DeliveryStatus::may_replace`], applied by the store in one conditional write.

use crate::models::status::{DeliveryError, DeliveryStatus, ErrorText};

/// What the chat service's refusal of a message means to Kommo: its code if it names one of
/// 901–904; 902 for 403 and 410 (the channel is disabled there); 905 with its text otherwise.
pub fn refusal_to_error(status: u16, code: &str, message: &str) -> DeliveryError {
    match code.trim() {
        "901" => return DeliveryError::Deleted,
        "902" => return DeliveryError::IntegrationDisabled,
        "903" => return DeliveryError::Internal,
        "904" => return DeliveryError::ConversationNotCreated,
        _ => {}
    }
    if status == 403 || status == 410 {
        return DeliveryError::IntegrationDisabled;
    }
    let text = ErrorText::new(message)
        .or_else(|_| ErrorText::new(&format!("The chat service refused the message (HTTP {status} {code})")))
        .expect("the fallback text is not blank");
    DeliveryError::Other(text)
}

/// What Kommo is told when a manager's message could not be relayed at all: its retries ran
/// out, or the relay could not even be queued. 903, the bridge's own fault.
pub const RELAY_GIVEN_UP: DeliveryError = DeliveryError::Internal;

/// A status report that holds its message's lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    Send,
    /// A status as good or better has already reached Kommo: sending this one would move
    /// Kommo backwards (read, then delivered).
    Overtaken,
}

/// Whether `status` still goes to Kommo, given the lane's mark of what Kommo was last told.
pub fn report_decision(sent_mark: Option<i64>, status: &DeliveryStatus) -> Report {
    if sent_mark >= Some(status.report_mark()) { Report::Overtaken } else { Report::Send }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn other(text: &str) -> DeliveryError {
        DeliveryError::Other(ErrorText::new(text).unwrap())
    }

    #[test]
    fn refusals_map_to_kommos_error_codes() {
        // (HTTP status, the refusal's code, its message) -> what Kommo shows
        let cases = [
            (404, "901", "gone", DeliveryError::Deleted),
            (422, " 901 ", "", DeliveryError::Deleted),
            (422, "902", "", DeliveryError::IntegrationDisabled),
            (422, "904", "no such user", DeliveryError::ConversationNotCreated),
            (403, "forbidden", "", DeliveryError::IntegrationDisabled),
            (410, "", "", DeliveryError::IntegrationDisabled),
            (422, "blocked", "The user blocked this business\n  at x.rs:1", other("The user blocked this business")),
            (400, "bad", "", other("The chat service refused the message (HTTP 400 bad)")),
            (400, "bad", "  \n ", other("The chat service refused the message (HTTP 400 bad)")),
            (500, "903", "down", DeliveryError::Internal), // its own fault, named
            (422, "903", "", DeliveryError::Internal),
            (409, "905", "duplicate", other("duplicate")),
        ];
        for (status, code, message, expected) in cases {
            assert_eq!(refusal_to_error(status, code, message), expected, "{status} {code:?} {message:?}");
        }
        assert_eq!(RELAY_GIVEN_UP.code(), 903);
    }

    #[test]
    fn a_report_goes_to_kommo_only_above_what_kommo_was_told() {
        let failed = DeliveryStatus::Failed(DeliveryError::Internal);
        // (lane's mark, status) -> decision
        let cases = [
            (None, &DeliveryStatus::Delivered, Report::Send),
            (None, &failed, Report::Send),
            (Some(0), &DeliveryStatus::Delivered, Report::Send), // delivered after a failure
            (Some(0), &failed, Report::Overtaken),
            (Some(1), &DeliveryStatus::Read, Report::Send),
            (Some(1), &DeliveryStatus::Delivered, Report::Overtaken),
            (Some(2), &DeliveryStatus::Delivered, Report::Overtaken),
            (Some(2), &DeliveryStatus::Read, Report::Overtaken),
            (Some(2), &failed, Report::Overtaken),
        ];
        for (mark, status, expected) in cases {
            assert_eq!(report_decision(mark, status), expected, "{mark:?} {status:?}");
        }
    }
}
