//! The HTTP shape every entry point shares (Lambda or the dev server): a request with its raw
//! body, a response, and the one place where errors become JSON.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

pub type HttpRequest = http::Request<Bytes>;
pub type HttpResponse = http::Response<Bytes>;

/// Bodies larger than this are refused with 413 before anything reads them.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// An expected failure, answered with `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
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
        json_response(self.status, &Body { error: Inner { code: self.code, message: &self.message } })
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
