//! The one id discipline: every id that becomes part of a store key or of a path sent to amojo
//! has an alphabet and a length, checked where it is parsed, so that nothing an outsider sends
//! can overflow a key, collide with another key, or steer a signed URL.
//!
//! | kind | where | rule |
//! |---|---|---|
//! | [`check_id`] | the chat service's and Kommo's ids (conversations, users, messages) | 1 to [`MAX_ID_BYTES`] bytes of printable characters, no `#` (the store's key separator) |
//! | [`check_path_id`] | a Kommo msgid that goes into an amojo path | 1 to 128 of URL's unreserved characters (`A-Z a-z 0-9 - . _ ~`), never `.` or `..` |
//! | [`check_account_part`] | the account part of a `scope_id` (`{channel_id}_{account}`) | 1 to 64 of `A-Z a-z 0-9 -` (amojo ids are UUIDs) |
//!
//! DynamoDB limits a partition key to 2,048 bytes and a sort key to 1,024: the longest key the
//! bridge makes joins a scope (under 200 bytes) and two ids, so 256 bytes an id keeps every key
//! inside both.

use super::rejection::Rejection;

/// The longest id accepted, in bytes (UTF-8).
pub const MAX_ID_BYTES: usize = 256;
/// The longest Kommo msgid accepted where it becomes part of an amojo path.
pub const MAX_PATH_ID_BYTES: usize = 128;
/// The longest account part of a scope id (an amojo id is a 36-character UUID).
pub const MAX_ACCOUNT_PART_BYTES: usize = 64;
/// What joins the parts of a store key: no id may hold it.
pub const KEY_SEPARATOR: char = '#';

/// An id that becomes part of a store key: 1 to [`MAX_ID_BYTES`] bytes, no control character,
/// no [`KEY_SEPARATOR`]. The refusal names `field`.
pub fn check_id(field: &str, id: &str) -> Result<(), Rejection> {
    if id.is_empty() {
        return Err(Rejection::invalid(format!("{field} must not be empty")));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(Rejection::invalid(format!("{field} is longer than {MAX_ID_BYTES} bytes")));
    }
    if id.chars().any(char::is_control) {
        return Err(Rejection::invalid(format!("{field} must not contain control characters")));
    }
    if id.contains(KEY_SEPARATOR) {
        return Err(Rejection::invalid(format!("{field} must not contain {KEY_SEPARATOR:?}")));
    }
    Ok(())
}

/// [`check_id`] for an id that may be absent.
pub fn check_optional_id(field: &str, id: Option<&str>) -> Result<(), Rejection> {
    id.map_or(Ok(()), |id| check_id(field, id))
}

/// A Kommo msgid that goes into an amojo path segment: URL's unreserved characters only, so the
/// path signed is the path sent, and never a dot-segment, which would climb the path.
pub fn check_path_id(field: &str, id: &str) -> Result<(), Rejection> {
    if is_path_segment(id, MAX_PATH_ID_BYTES) {
        return Ok(());
    }
    Err(Rejection::invalid(format!("{field} must be 1 to {MAX_PATH_ID_BYTES} of A-Z a-z 0-9 - . _ ~ (not . or ..)")))
}

/// Whether `segment` can go into an amojo path as it is: 1 to `max` unreserved characters, not
/// `.` or `..`.
pub fn is_path_segment(segment: &str, max: usize) -> bool {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
    (1..=max).contains(&segment.len()) && segment != "." && segment != ".." && segment.bytes().all(unreserved)
}

/// The account part of a scope id (`{channel_id}_{account}`).
pub fn check_account_part(account: &str) -> Result<(), Rejection> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'-';
    if (1..=MAX_ACCOUNT_PART_BYTES).contains(&account.len()) && account.bytes().all(allowed) {
        return Ok(());
    }
    Err(Rejection::invalid(format!(
        "the scope_id's account part must be 1 to {MAX_ACCOUNT_PART_BYTES} of A-Z a-z 0-9 -"
    )))
}

/// An id as the logs carry it: escaped (`\n` for a newline, and so on), so that nothing in an id
/// can start a log line of its own. Ids are checked where they arrive (here); this holds
/// for whatever reaches a log before or despite that.
pub fn for_log(id: &str) -> tracing::field::DisplayValue<std::str::EscapeDebug<'_>> {
    tracing::field::display(id.escape_debug())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_in_a_log_cannot_start_a_line() {
        let forged = "m-1\nINFO request: chat event accepted\r\u{1b}[2J";
        let logged = format!("{:?}", for_log(forged));
        assert!(!logged.contains('\n') && !logged.contains('\r') && !logged.contains('\u{1b}'), "{logged}");
        assert!(logged.starts_with("m-1\\nINFO"), "{logged}");
    }

    #[test]
    fn an_id_is_bounded_printable_and_never_holds_the_key_separator() {
        let at_limit = "é".repeat(MAX_ID_BYTES / 2);
        for ok in ["c", "conv-1", "+7 999 000-00-00", "ünïcödé id", "a/b?c", at_limit.as_str()] {
            assert_eq!(check_id("conversation_id", ok), Ok(()), "{ok:?}");
        }
        let over = format!("{at_limit}x");
        for (bad, says) in [
            ("", "must not be empty"),
            (over.as_str(), "longer than 256 bytes"),
            ("a\nb", "control characters"),
            ("a\u{7f}", "control characters"),
            ("acc#msg#1", "must not contain '#'"),
        ] {
            let refused = check_id("conversation_id", bad).unwrap_err().to_string();
            assert!(refused.contains("conversation_id") && refused.contains(says), "{bad:?}: {refused}");
        }
        assert_eq!(check_optional_id("msgid", None), Ok(()));
        assert!(check_optional_id("msgid", Some("")).is_err());
    }

    #[test]
    fn a_path_id_is_unreserved_characters_and_never_a_dot_segment() {
        let at_limit = "a".repeat(MAX_PATH_ID_BYTES);
        for ok in ["kommo-1", "a.b_c~d", "...", at_limit.as_str()] {
            assert!(check_path_id("reference", ok).is_ok(), "{ok:?}");
        }
        let over = format!("{at_limit}a");
        for bad in ["", ".", "..", "a/b", "a?b", "a#b", "a%2Fb", "a b", over.as_str(), "ü"] {
            assert!(check_path_id("reference", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_scope_account_part_is_an_amojo_id_shape() {
        for ok in ["af9945ff-1490-4cad-807d-945c15d88bec", "acc-1", "A"] {
            assert_eq!(check_account_part(ok), Ok(()), "{ok:?}");
        }
        let over = "a".repeat(MAX_ACCOUNT_PART_BYTES + 1);
        for bad in ["", "acc/extra/segment", "../x", "acc?x", "acc#msg#1", "acc_1", "acc.1", over.as_str()] {
            assert!(check_account_part(bad).is_err(), "{bad:?}");
        }
    }
}
