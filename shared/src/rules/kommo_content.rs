//! A client's message content as Kommo's import and edit take it. Kommo's Russian reference
//! requires fields the chat service may leave out (a contact's name, a file's name); they are
//! filled here from what the chat service gave, so a message it sent is never refused for them.

use serde_json::Value;

use crate::models::kommo::{MessageContent, MessageKind};

/// Kommo shows a file name of at most this many characters.
const MAX_FILE_NAME_CHARS: usize = 255;
/// A file name for media whose URL ends in no name at all.
const UNNAMED_FILE: &str = "file";

/// `content` with what Kommo requires filled in: a contact's `name` from its phone when it has
/// none; a file's, picture's or video's `file_name` from the last segment of its media URL.
/// An edit that leaves the media as it was (a caption-only edit) carries no media and is
/// passed as it came.
pub fn for_kommo(content: &MessageContent) -> MessageContent {
    let mut content = content.clone();
    match content.kind {
        MessageKind::Contact => {
            if let Some(Value::Object(contact)) = content.extra.get_mut("contact") {
                let named = contact.get("name").and_then(Value::as_str).is_some_and(|name| !name.trim().is_empty());
                if !named && let Some(phone) = contact.get("phone").cloned() {
                    contact.insert("name".into(), phone);
                }
            }
        }
        MessageKind::File | MessageKind::Picture | MessageKind::Video => {
            let named = content.file_name.as_deref().is_some_and(|name| !name.trim().is_empty());
            if !named && let Some(media) = content.media.as_deref().filter(|media| !media.trim().is_empty()) {
                content.file_name = Some(file_name_of(media));
            }
        }
        _ => {}
    }
    content
}

/// The name a media URL gives its file: the last path segment, percent-decoded when that makes
/// text, else as written.
pub fn file_name_of(media_url: &str) -> String {
    let path = media_url.split(['?', '#']).next().unwrap_or_default();
    let after_host = path.split_once("://").map_or(path, |(_, rest)| rest.split_once('/').map_or("", |(_, p)| p));
    let segment = after_host.rsplit('/').next().unwrap_or_default();
    let name = percent_decoded(segment).unwrap_or_else(|| segment.to_owned());
    let name = name.trim();
    if name.is_empty() || name.chars().all(char::is_control) {
        return UNNAMED_FILE.to_owned();
    }
    name.chars().filter(|c| !c.is_control()).take(MAX_FILE_NAME_CHARS).collect()
}

fn percent_decoded(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = text.get(at + 1..at + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            decoded.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filled(content: Value) -> Value {
        let content: MessageContent = serde_json::from_value(content).unwrap();
        serde_json::to_value(for_kommo(&content)).unwrap()
    }

    #[test]
    fn what_kommo_requires_is_filled_from_what_was_given() {
        let cases = [
            (
                json!({"type": "contact", "contact": {"phone": "+1 555 0100"}}),
                json!({"type": "contact", "contact": {"phone": "+1 555 0100", "name": "+1 555 0100"}}),
            ),
            (
                json!({"type": "contact", "contact": {"name": " ", "phone": "+1"}}),
                json!({"type": "contact", "contact": {"name": "+1", "phone": "+1"}}),
            ),
            (
                json!({"type": "contact", "contact": {"name": "Ann", "phone": "+1"}}),
                json!({"type": "contact", "contact": {"name": "Ann", "phone": "+1"}}),
            ),
            (
                json!({"type": "file", "media": "https://cdn.example/a/Invoice%20May.pdf?sig=x", "file_size": 3}),
                json!({"type": "file", "media": "https://cdn.example/a/Invoice%20May.pdf?sig=x", "file_size": 3,
                       "file_name": "Invoice May.pdf"}),
            ),
            (
                json!({"type": "picture", "media": "https://cdn.example/", "file_size": 3}),
                json!({"type": "picture", "media": "https://cdn.example/", "file_size": 3, "file_name": "file"}),
            ),
            (
                json!({"type": "video", "media": "https://cdn.example/v.mp4", "file_size": 3, "file_name": "Mine.mp4"}),
                json!({"type": "video", "media": "https://cdn.example/v.mp4", "file_size": 3, "file_name": "Mine.mp4"}),
            ),
            // A caption-only edit: no media, so nothing to name.
            (json!({"type": "picture", "text": "new caption"}), json!({"type": "picture", "text": "new caption"})),
            (json!({"type": "text", "text": "hi"}), json!({"type": "text", "text": "hi"})),
        ];
        for (given, expected) in cases {
            assert_eq!(filled(given.clone()), expected, "{given}");
        }
    }

    #[test]
    fn a_file_name_is_the_urls_last_segment_never_blank_or_with_control_characters() {
        for (url, name) in [
            ("https://cdn.example/x/report.pdf", "report.pdf"),
            ("https://cdn.example/x/r%C3%A9sum%C3%A9.pdf", "résumé.pdf"),
            ("https://cdn.example/x/bad%FF.pdf", "bad%FF.pdf"),
            ("https://cdn.example/x/a%0Ab.pdf", "ab.pdf"),
            ("https://cdn.example", "file"),
            ("https://cdn.example/x/%20", "file"),
            ("https://cdn.example/x/50%", "50%"),
        ] {
            assert_eq!(file_name_of(url), name, "{url}");
        }
        assert_eq!(file_name_of(&format!("https://cdn.example/{}", "n".repeat(300))).chars().count(), 255);
    }
}
