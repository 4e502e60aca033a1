//! Signing requests to amojo, Kommo's Chat API.
//!
//! ```text
//! Content-MD5    = lowercase hex MD5 of the exact body bytes
//! string_to_sign = METHOD "\n" Content-MD5 "\n" Content-Type "\n" Date "\n" path
//! X-Signature    = lowercase hex HMAC-SHA1(channel secret, string_to_sign)
//! ```
//! The Date is valid for 15 minutes, so every attempt of a retried call is signed anew.

use md5::{Digest, Md5};

pub const CONTENT_TYPE: &str = "application/json";

/// The four headers that make an amojo request authentic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmojoHeaders {
    pub date: String,
    pub content_type: &'static str,
    pub content_md5: String,
    pub signature: String,
}

impl AmojoHeaders {
    pub fn as_pairs(&self) -> [(&'static str, &str); 4] {
        [
            ("Date", &self.date),
            ("Content-Type", self.content_type),
            ("Content-MD5", &self.content_md5),
            ("X-Signature", &self.signature),
        ]
    }
}

/// Signs one request. `path` is the URL path only: no scheme, host or query string.
/// `date` is the exact `Date` header value that will be sent (see [`crate::time::rfc2822`]).
pub fn sign(channel_secret: &str, method: &str, path: &str, body: &[u8], date: &str) -> AmojoHeaders {
    let content_md5 = hex::encode(Md5::digest(body));
    let string_to_sign =
        format!("{}\n{}\n{}\n{}\n{}", method.to_ascii_uppercase(), content_md5, CONTENT_TYPE, date, path);
    let signature = hex::encode(super::hmac_sha1(channel_secret.as_bytes(), string_to_sign.as_bytes()));
    AmojoHeaders { date: date.to_owned(), content_type: CONTENT_TYPE, content_md5, signature }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "5a44c5dff55f3c15a4cce8d7c4cc27e207c7e189";
    // The reference's own date string, weekday included (2020-10-03 was a Saturday; the
    // signature covers the text as written, so the vector keeps it).
    const DATE: &str = "Mon, 03 Oct 2020 15:11:21 +0000";

    #[test]
    fn reproduces_the_connect_vector() {
        let body = br#"{"account_id":"af9945ff-1490-4cad-807d-945c15d88bec","title":"ChatIntegration","hook_api_version":"v2"}"#;
        let headers =
            sign(SECRET, "POST", "/v2/origin/custom/f90ba33d-c9d9-44da-b76c-c349b0ecbe41/connect", body, DATE);
        assert_eq!(headers.content_md5, "7e961b6b58c7f8d85f273526d3757f92");
        assert_eq!(headers.signature, "86c25b87f43a5939e130e9adb9c8d1705f3c7ef2");
        assert_eq!(headers.content_type, "application/json");
        assert_eq!(headers.date, DATE);
    }

    #[test]
    fn reproduces_the_history_get_vector_with_an_empty_body() {
        let headers = sign(
            SECRET,
            "get",
            "/v2/origin/custom/f90ba33d-c9d9-44da-b76c-c349b0ecbe41_af9945ff-1490-4cad-807d-945c15d88bec/chats/6cbab3d5-c4c1-46ff-b710-ad59ad10805f/history",
            b"",
            DATE,
        );
        assert_eq!(headers.content_md5, "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(headers.signature, "d030cff9ed3f53d4b29e8652da44723be7092573");
    }

    #[test]
    fn a_different_date_gives_a_different_signature() {
        let a = sign(SECRET, "POST", "/v2/origin/custom/x/typing", b"{}", DATE);
        let b = sign(SECRET, "POST", "/v2/origin/custom/x/typing", b"{}", "Mon, 03 Oct 2020 15:11:22 +0000");
        assert_ne!(a.signature, b.signature);
    }
}
