//! Randomness the bridge needs: fresh ids for the events it sends, tokens for conditional
//! writes, jitter for retries, nonces for sealed tokens, and secrets made up for local runs.

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
