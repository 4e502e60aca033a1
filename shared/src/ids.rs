//! Randomness the bridge needs: fresh ids for the events it sends, tokens for conditional
//! writes, jitter for retries, and secrets made up for local runs.

/// Random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    bytes
}

/// A fresh Standard Webhooks message id for an event the bridge sends.
pub fn new_webhook_id() -> String {
    format!("msg_{}", hex::encode(random_bytes::<12>()))
}

/// A Standard Webhooks message id derived from what an event is about, so that every send of
/// the one event, whichever worker or retry makes it, carries the same id and the chat service
/// can drop the repeats.
pub fn derived_webhook_id(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for part in parts {
        // Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    format!("msg_{}", hex::encode(&hash.finalize()[..12]))
}

/// An id as the logs carry it: escaped (`\n` for a newline, and so on), so that nothing in an id
/// can start a log line of its own. Ids are checked where they arrive (`rules::ids`); this holds
/// for whatever reaches a log before or despite that.
pub fn for_log(id: &str) -> tracing::field::DisplayValue<std::str::EscapeDebug<'_>> {
    tracing::field::display(id.escape_debug())
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_id_in_a_log_cannot_start_a_line() {
        let forged = "m-1\nINFO request: chat event accepted\r\u{1b}[2J";
        let logged = format!("{:?}", super::for_log(forged));
        assert!(!logged.contains('\n') && !logged.contains('\r') && !logged.contains('\u{1b}'), "{logged}");
        assert!(logged.starts_with("m-1\\nINFO"), "{logged}");
    }
}
