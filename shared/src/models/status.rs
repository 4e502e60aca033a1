//! Delivery status of a manager's message, as Kommo's `delivery_status` takes it, and the rank
//! that makes the status register monotonic: sent (0) < delivered (1) < read (2); failed (-1)
//! only while the message is still sent.
//!
//! The types make the invalid requests unrepresentable: an error code only with a failure,
//! 905 only with its text.

use serde::{Deserialize, Serialize};

/// Kommo's `error` text for 905: non-empty, at most 255 characters, shown to the manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ErrorText(String);

pub const ERROR_TEXT_MAX_CHARS: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    #[error("an error text is required and must not be blank")]
    BlankErrorText,
    #[error("error_code must be one of 901, 902, 903, 904, 905")]
    UnknownErrorCode,
    #[error("error_code and error belong only to delivery_status -1")]
    CodeWithoutFailure,
    #[error("delivery_status must be 1 (delivered), 2 (read) or -1 (error)")]
    UnknownStatus,
    #[error("905 needs an error text")]
    MissingErrorText,
}

impl ErrorText {
    /// Keeps the first line, trimmed and cut to 255 characters: a stack trace or a long
    /// upstream body never reaches the manager's screen.
    pub fn new(text: &str) -> Result<Self, StatusError> {
        let first_line = text.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or("");
        if first_line.is_empty() {
            return Err(StatusError::BlankErrorText);
        }
        Ok(Self(first_line.chars().take(ERROR_TEXT_MAX_CHARS).collect()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ErrorText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ErrorText::new(&text).map_err(serde::de::Error::custom)
    }
}

/// Why a message could not be delivered: Kommo's codes 901–905.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// 901: the user deleted the message or the conversation.
    Deleted,
    /// 902: the integration is disabled on the channel side.
    IntegrationDisabled,
    /// 903: internal server error.
    Internal,
    /// 904: the conversation could not be created (e.g. the user is not registered).
    ConversationNotCreated,
    /// 905: anything else, with the text Kommo shows the manager.
    Other(ErrorText),
}

impl DeliveryError {
    pub fn code(&self) -> u16 {
        match self {
            Self::Deleted => 901,
            Self::IntegrationDisabled => 902,
            Self::Internal => 903,
            Self::ConversationNotCreated => 904,
            Self::Other(_) => 905,
        }
    }

    /// From a code and an optional text, as the chat service reports them.
    pub fn from_code(code: i64, text: Option<&str>) -> Result<Self, StatusError> {
        Ok(match code {
            901 => Self::Deleted,
            902 => Self::IntegrationDisabled,
            903 => Self::Internal,
            904 => Self::ConversationNotCreated,
            905 => Self::Other(ErrorText::new(text.ok_or(StatusError::MissingErrorText)?)?),
            _ => return Err(StatusError::UnknownErrorCode),
        })
    }

    /// The `error` text Kommo shows the manager. Kommo's Russian reference requires one with
    /// every -1 (the English page allows it): 905 carries the chat service's, 901–904 say
    /// what their code means.
    pub fn text(&self) -> &str {
        match self {
            Self::Deleted => "The client deleted the message or the conversation",
            Self::IntegrationDisabled => "The integration is disabled in the messenger",
            Self::Internal => "The message could not be delivered because of an internal error",
            Self::ConversationNotCreated => "The conversation could not be created in the messenger",
            Self::Other(text) => text.as_str(),
        }
    }
}

/// A status Kommo can show on a manager's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryStatus {
    Delivered,
    Read,
    Failed(DeliveryError),
}

impl DeliveryStatus {
    /// Kommo's `delivery_status` number.
    pub fn wire_code(&self) -> i8 {
        match self {
            Self::Delivered => 1,
            Self::Read => 2,
            Self::Failed(_) => -1,
        }
    }

    /// How metrics name it: `delivered`, `read`, or the error's code.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed(error) => match error.code() {
                901 => "901",
                902 => "902",
                903 => "903",
                904 => "904",
                _ => "905",
            },
        }
    }

    /// The register's rank: a status only ever replaces a lower one (see [`Self::may_replace`]).
    pub fn rank(&self) -> i8 {
        self.wire_code()
    }

    /// Where this status comes in the only order the register can take statuses (failed,
    /// delivered, read): Kommo is told a status only when its mark is above the last one told.
    pub fn report_mark(&self) -> i64 {
        match self {
            Self::Failed(_) => 0,
            Self::Delivered => 1,
            Self::Read => 2,
        }
    }

    /// Whether this status may replace a message whose register holds `current`
    /// (`None`: sent, nothing reported yet). Delivered and read only move forward; a
    /// failure is taken only while nothing else has been reported.
    pub fn may_replace(&self, current: Option<i8>) -> bool {
        match (self, current) {
            (Self::Failed(_), None) => true,
            (Self::Failed(_), Some(_)) => false,
            (_, None) => true,
            (status, Some(rank)) => status.rank() > rank,
        }
    }
}

/// `POST /v2/origin/custom/{scope_id}/{msgid}/delivery_status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryStatusRequest {
    /// Kommo's message id (from the manager-message webhook).
    pub msgid: String,
    pub status: DeliveryStatus,
}

#[derive(Serialize, Deserialize)]
struct DeliveryStatusWire<'a> {
    #[serde(borrow)]
    msgid: std::borrow::Cow<'a, str>,
    delivery_status: i8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    error: Option<std::borrow::Cow<'a, str>>,
}

impl Serialize for DeliveryStatusRequest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (error_code, error) = match &self.status {
            DeliveryStatus::Failed(e) => (Some(i64::from(e.code())), Some(e.text().into())),
            _ => (None, None),
        };
        DeliveryStatusWire {
            msgid: self.msgid.as_str().into(),
            delivery_status: self.status.wire_code(),
            error_code,
            error,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for DeliveryStatusRequest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = DeliveryStatusWire::deserialize(deserializer)?;
        let status = match (wire.delivery_status, wire.error_code) {
            (1, None) => DeliveryStatus::Delivered,
            (2, None) => DeliveryStatus::Read,
            (1 | 2, Some(_)) => return Err(serde::de::Error::custom(StatusError::CodeWithoutFailure)),
            (-1, Some(code)) => DeliveryStatus::Failed(
                DeliveryError::from_code(code, wire.error.as_deref()).map_err(serde::de::Error::custom)?,
            ),
            (-1, None) => return Err(serde::de::Error::custom(StatusError::UnknownErrorCode)),
            _ => return Err(serde::de::Error::custom(StatusError::UnknownStatus)),
        };
        Ok(Self { msgid: wire.msgid.into_owned(), status })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wire(request: &DeliveryStatusRequest) -> serde_json::Value {
        serde_json::to_value(request).unwrap()
    }

    #[test]
    fn serialises_each_status_as_kommo_numbers() {
        let delivered = DeliveryStatusRequest { msgid: "m1".into(), status: DeliveryStatus::Delivered };
        assert_eq!(wire(&delivered), json!({"msgid": "m1", "delivery_status": 1}));
        let read = DeliveryStatusRequest { msgid: "m1".into(), status: DeliveryStatus::Read };
        assert_eq!(wire(&read), json!({"msgid": "m1", "delivery_status": 2}));
        let failed =
            DeliveryStatusRequest { msgid: "m1".into(), status: DeliveryStatus::Failed(DeliveryError::Internal) };
        assert_eq!(
            wire(&failed),
            json!({"msgid": "m1", "delivery_status": -1, "error_code": 903,
                   "error": "The message could not be delivered because of an internal error"})
        );
    }

    #[test]
    fn every_failure_carries_a_short_error_text_and_old_queued_ones_still_read() {
        for code in 901..=905 {
            let error = DeliveryError::from_code(code, Some("Blocked")).unwrap();
            let request = DeliveryStatusRequest { msgid: "m1".into(), status: DeliveryStatus::Failed(error) };
            let text = wire(&request)["error"].as_str().unwrap().to_owned();
            assert!(!text.trim().is_empty() && text.chars().count() <= ERROR_TEXT_MAX_CHARS, "{code}: {text:?}");
        }
        // Queued before every failure had its text: read, and written with it.
        let old: DeliveryStatusRequest =
            serde_json::from_value(json!({"msgid": "m1", "delivery_status": -1, "error_code": 901})).unwrap();
        assert_eq!(old.status, DeliveryStatus::Failed(DeliveryError::Deleted));
        assert!(wire(&old)["error"].is_string());
    }

    #[test]
    fn a_905_always_carries_its_text_cut_to_one_line_of_255_characters() {
        let long = format!("{}\n   at stack frame", "x".repeat(300));
        let error = DeliveryError::from_code(905, Some(&long)).unwrap();
        assert_eq!(error.text().chars().count(), 255);
        assert_eq!(DeliveryError::from_code(905, None), Err(StatusError::MissingErrorText));
        assert_eq!(DeliveryError::from_code(905, Some("  \n ")), Err(StatusError::BlankErrorText));
        assert_eq!(DeliveryError::from_code(900, None), Err(StatusError::UnknownErrorCode));
    }

    #[test]
    fn refuses_wire_forms_kommo_would_refuse() {
        for bad in [
            json!({"msgid": "m", "delivery_status": 1, "error_code": 903}),
            json!({"msgid": "m", "delivery_status": -1}),
            json!({"msgid": "m", "delivery_status": -1, "error_code": 905}),
            json!({"msgid": "m", "delivery_status": -1, "error_code": 906}),
            json!({"msgid": "m", "delivery_status": 3}),
        ] {
            assert!(serde_json::from_value::<DeliveryStatusRequest>(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_register_only_moves_forward_and_takes_a_failure_only_while_sent() {
        let failed = DeliveryStatus::Failed(DeliveryError::Deleted);
        assert!(DeliveryStatus::Delivered.may_replace(None));
        assert!(DeliveryStatus::Read.may_replace(Some(1)));
        assert!(!DeliveryStatus::Delivered.may_replace(Some(2)));
        assert!(!DeliveryStatus::Read.may_replace(Some(2)));
        assert!(failed.may_replace(None));
        assert!(!failed.may_replace(Some(1)));
        assert!(!failed.may_replace(Some(-1)));
        assert!(DeliveryStatus::Delivered.may_replace(Some(-1)));
    }
}
