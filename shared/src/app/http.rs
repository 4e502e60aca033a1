//! The HTTP shape every entry point shares (Lambda or the dev server): a request with its raw
//! body, a response, and the one place where errors become HTTP answers: a flow's domain
//! error ([`FlowError`]) is mapped here, and every error leaves as JSON.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use crate::flows::FlowError;
use crate::rules::rejection::Rejection;

pub type HttpRequest = http::Request<Bytes>;
pub type HttpResponse = http::Response<Bytes>;

/// Bodies larger than this are refused with 413 before anything reads them. 248 KiB, so that
/// the largest request of text accepted, queued with its envelope (one copy of its content and
/// a few ids, under 2 KiB), fits one SQS message of the classic 256 KiB
/// (`the_largest_accepted_request_queues_as_one_sqs_message`). Numbers in the fields kept as
/// sent can queue larger than they came (`1e15` as `1000000000000000.0`): what a request queues
/// is measured before it is accepted ([`crate::ports::timers::check_queueable`], a 413
/// `too_large_to_queue` when it would not fit).
pub const MAX_BODY_BYTES: usize = 248 * 1024;

/// An expected failure, answered with `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds after which a retry may succeed, as `Retry-After` (a 503 that will pass).
    pub retry_after_s: Option<i64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after_s: None }
    }
    /// The same error, telling the sender when a retry may succeed.
    pub fn with_retry_after(self, seconds: i64) -> Self {
        Self { retry_after_s: Some(seconds), ..self }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// A missing or wrong signature: 401, and nothing is changed.
    pub fn bad_signature(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "bad_signature", message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    /// An id in a path or query that breaks `crate::rules::id_checks`: 400 naming it.
    pub fn invalid_id(rejection: Rejection) -> Self {
        Self::bad_request("invalid_id", rejection.to_string())
    }
    pub fn unknown_scope() -> Self {
        Self::not_found("unknown_scope", "the scope_id does not belong to this channel")
    }
    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        )
    }
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the bridge failed; the request may be retried")
    }

    pub fn into_response(self) -> HttpResponse {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'a str,
            message: &'a str,
        }
        let mut response =
            json_response(self.status, &Body { error: Inner { code: self.code, message: &self.message } });
        if let Some(seconds) = self.retry_after_s {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(0)));
        }
        response
    }
}

impl From<FlowError> for ApiError {
    /// The sender's mistakes are 4xx; a store or queue fault is the bridge's own (500, logged
    /// here, once), which the sender may retry.
    fn from(error: FlowError) -> Self {
        match error {
            FlowError::Rejected(Rejection::Invalid(message)) => Self::bad_request("invalid_body", message),
            FlowError::Rejected(rejection @ Rejection::TooLargeToQueue { .. }) => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large_to_queue", rejection.to_string())
            }
            FlowError::Rejected(Rejection::UnknownMessage) => {
                Self::not_found("unknown_message", Rejection::UnknownMessage.to_string())
            }
            FlowError::Store(error) => {
                tracing::error!(%error, "store failed");
                Self::internal()
            }
            FlowError::Timer(error) => {
                tracing::error!(%error, "work not queued");
                Self::internal()
            }
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        FlowError::from(rejection).into()
    }
}

pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> HttpResponse {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = HttpResponse::new(Bytes::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A header's value as text, if present and visible ASCII.
pub fn header_str<'a>(request: &'a HttpRequest, name: &str) -> Option<&'a str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The three Standard Webhooks headers of a request.
pub fn standard_webhook_headers(request: &HttpRequest) -> crate::signing::standard_webhooks::SignatureHeaders<'_> {
    crate::signing::standard_webhooks::SignatureHeaders {
        id: header_str(request, "webhook-id"),
        timestamp: header_str(request, "webhook-timestamp"),
        signature: header_str(request, "webhook-signature"),
    }
}

/// Parses a JSON body, turning serde's complaint into a 400 that names the problem
/// (the message never echoes the body).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let code = if e.is_syntax() || e.is_eof() { "malformed_json" } else { "invalid_body" };
        ApiError::bad_request(code, e.to_string())
    })
}

/// One query parameter, percent-decoded (`+` as a space).
pub(crate) fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| percent_decode(value))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_found_and_decoded() {
        let query = "scope_id=chan_acc%2D1&conversation_id=conv+1&x=%zz";
        assert_eq!(query_param(query, "scope_id").as_deref(), Some("chan_acc-1"));
        assert_eq!(query_param(query, "conversation_id").as_deref(), Some("conv 1"));
        assert_eq!(query_param(query, "x").as_deref(), Some("%zz"));
        assert_eq!(query_param(query, "missing"), None);
        assert_eq!(percent_decode("100%"), "100%");
    }
}
