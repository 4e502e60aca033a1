//! The signature verifiers called directly, with arbitrary secrets, header strings and bodies:
//! Kommo's webhook `X-Signature`, Standard Webhooks (header parsing, several signatures, the
//! timestamp window) and the `whsec_` secret parser; amojo request signing for shape.
//!
//! Beyond never panicking, each verifier must never accept what the secret did not sign: an
//! accepted signature is recomputed here with an independent HMAC and must match. What the
//! bridge signs must verify, and a one-byte change to a signed body must not.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use shared::signing::standard_webhooks::{MAX_ID_BYTES, SignatureHeaders, TOLERANCE_S, WebhookSecret};
use shared::signing::{amojo, kommo_webhook};

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    secret: &'a str,
    body: &'a [u8],
    /// A Kommo `X-Signature` as received.
    kommo_header: Option<&'a str>,
    /// `whsec_…` text as configured.
    whsec: &'a str,
    key: Vec<u8>,
    id: Option<&'a str>,
    timestamp: Option<&'a str>,
    signature: Option<&'a str>,
    /// The verifier's clock, relative to a fixed moment.
    now_offset: i32,
    /// Which byte of the body to change, and how.
    flip_at: usize,
    flip: u8,
    method: &'a str,
    path: &'a str,
    date: &'a str,
}

const NOW_S: i64 = 1_700_000_000;

fn hmac_sha1(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// `body` with one byte changed (`None` for an empty body or a zero change).
fn flipped(body: &[u8], at: usize, flip: u8) -> Option<Vec<u8>> {
    if body.is_empty() || flip == 0 {
        return None;
    }
    let mut changed = body.to_vec();
    changed[at % body.len()] ^= flip;
    Some(changed)
}

fn kommo(input: &Input<'_>) {
    let secret = input.secret.as_bytes();
    if kommo_webhook::verify(input.secret, input.body, input.kommo_header).is_ok() {
        let claimed = hex::decode(input.kommo_header.expect("accepted without a header").trim()).expect("not hex");
        let stripped = [&b"\r\n"[..], b"\n", b"\r"]
            .iter()
            .find_map(|ending| input.body.strip_suffix(*ending))
            .unwrap_or(input.body);
        assert!(
            claimed == hmac_sha1(secret, input.body) || claimed == hmac_sha1(secret, stripped),
            "X-Signature accepted that the secret did not make"
        );
    }
    let signature = kommo_webhook::sign(input.secret, input.body);
    assert_eq!(signature, hex::encode(hmac_sha1(secret, input.body)));
    assert_eq!(kommo_webhook::verify(input.secret, input.body, Some(&signature)), Ok(()));
    assert_eq!(kommo_webhook::verify(input.secret, input.body, Some(&signature.to_uppercase())), Ok(()));
    // One line ending added after signing is tolerated (a body that ends in CR would make it
    // CRLF, and CRLF is stripped whole, so that case is not this property).
    if !input.body.ends_with(b"\r") {
        let mut with_newline = input.body.to_vec();
        with_newline.push(b'\n');
        assert_eq!(kommo_webhook::verify(input.secret, &with_newline, Some(&signature)), Ok(()));
    }
    if let Some(changed) = flipped(input.body, input.flip_at, input.flip) {
        assert!(kommo_webhook::verify(input.secret, &changed, Some(&signature)).is_err(), "a changed body verified");
    }
}

fn standard_webhooks(input: &Input<'_>) {
    // The secret parser: what it accepts is a 24–64 byte key whose text form is exactly the
    // configured one (canonical base64), so no two texts name one key.
    if let Ok(secret) = WebhookSecret::parse(input.whsec) {
        assert_eq!(secret.expose(), input.whsec, "a whsec secret that does not round-trip");
        assert_eq!(WebhookSecret::parse(&secret.expose()), Ok(secret));
    }

    let key = if input.key.is_empty() { vec![0x5a; 32] } else { input.key.clone() };
    let secret = WebhookSecret::from_key(key.clone());
    let now = NOW_S + i64::from(input.now_offset);
    let headers = SignatureHeaders { id: input.id, timestamp: input.timestamp, signature: input.signature };
    if secret.verify(&headers, input.body, now).is_ok() {
        let id = input.id.expect("accepted without webhook-id");
        assert!(!id.is_empty(), "accepted an empty webhook-id");
        assert!(id.len() <= MAX_ID_BYTES, "accepted a webhook-id of {} bytes", id.len());
        let timestamp: i64 = input.timestamp.expect("accepted without a timestamp").trim().parse().expect("a number");
        assert!((timestamp - now).abs() <= TOLERANCE_S, "accepted a timestamp outside the window");
        let mut signed = format!("{id}.{timestamp}.").into_bytes();
        signed.extend_from_slice(input.body);
        let expected = hmac_sha256(&key, &signed);
        let matched = input
            .signature
            .expect("accepted without a signature")
            .split(' ')
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .any(|encoded| STANDARD.decode(encoded).is_ok_and(|claimed| claimed == expected));
        assert!(matched, "webhook-signature accepted that the key did not make");
    }

    // What it signs verifies, alone or among other signatures, and nothing else does.
    let id = input.id.filter(|id| !id.is_empty() && id.len() <= MAX_ID_BYTES).unwrap_or("msg_1");
    let timestamp = now + i64::from(input.now_offset % 300);
    let signature = secret.sign(id, timestamp, input.body);
    let stamp = timestamp.to_string();
    let signed = SignatureHeaders { id: Some(id), timestamp: Some(&stamp), signature: Some(&signature) };
    assert_eq!(secret.verify(&signed, input.body, now), Ok(()));
    let several = format!("{} {signature}", input.signature.unwrap_or("v1,AAAA").replace(' ', ""));
    assert_eq!(secret.verify(&SignatureHeaders { signature: Some(&several), ..signed }, input.body, now), Ok(()));
    if let Some(changed) = flipped(input.body, input.flip_at, input.flip) {
        assert!(secret.verify(&signed, &changed, now).is_err(), "a changed body verified");
    }
    let mut other_key = key;
    let at = input.flip_at % other_key.len();
    other_key[at] ^= input.flip.max(1);
    assert!(WebhookSecret::from_key(other_key).verify(&signed, input.body, now).is_err(), "another key verified");
}

fn amojo_shape(input: &Input<'_>) {
    let headers = amojo::sign(input.secret, input.method, input.path, input.body, input.date);
    assert_eq!(headers.content_md5.len(), 32);
    assert_eq!(headers.signature.len(), 40);
    assert!(headers.signature.bytes().chain(headers.content_md5.bytes()).all(|b| b.is_ascii_hexdigit()));
    assert_eq!(headers.date, input.date);
}

fuzz_target!(|input: Input<'_>| {
    kommo(&input);
    standard_webhooks(&input);
    amojo_shape(&input);
});
