//! What an installation's redirect may make the bridge do. Kommo sends the installing admin's
//! browser (or, for a widget, a request of its own) to the Redirect URI with `code` and
//! `referer`, the account's host; the bridge then posts the code, with the integration's secret,
//! to that host. Anyone can call the Redirect URI with any `referer`, so the host is checked
//! here before anything is sent: only one of Kommo's account hosts, named exactly, is ever
//! called.

use super::rejection::Rejection;

/// The domains under which Kommo's accounts live (`{subdomain}.kommo.com`, and the amoCRM
/// hosts older accounts have).
pub const KOMMO_ACCOUNT_DOMAINS: [&str; 3] = ["kommo.com", "amocrm.ru", "amocrm.com"];

/// The account host a `referer` names: `{subdomain}.{one of KOMMO_ACCOUNT_DOMAINS}`, lowercased,
/// one DNS label for the subdomain (letters, digits, inner hyphens, at most 63). Nothing else is
/// accepted: no scheme, port, path, user info, trailing dot, or deeper name, so the result can
/// be put after `https://` as it is.
pub fn kommo_account_host(referer: &str) -> Result<String, Rejection> {
    let refused = || Rejection::invalid("referer is not a Kommo account host ({subdomain}.kommo.com)");
    let host = referer.to_ascii_lowercase();
    let (subdomain, domain) = host.split_once('.').ok_or_else(refused)?;
    if !KOMMO_ACCOUNT_DOMAINS.contains(&domain) || !is_dns_label(subdomain) {
        return Err(refused());
    }
    Ok(host)
}

/// One DNS label: 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen.
fn is_dns_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// An authorization code as Kommo issues it: printable ASCII without spaces, at most 4 KiB (a
/// real one is a JWT-like string of about 1,000 characters). Anything else is not sent anywhere.
pub fn check_authorization_code(code: &str) -> Result<(), Rejection> {
    if code.is_empty() {
        return Err(Rejection::invalid("code is required"));
    }
    if code.len() > 4096 || !code.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Rejection::invalid("code is not an authorization code"));
    }
    Ok(())
}

/// An access token is refreshed this long before it expires, so no call to Kommo races its end.
pub const REFRESH_AHEAD_MS: i64 = 10 * 60_000;

/// Whether an account's stored access token must be refreshed before use: it expires within
/// [`REFRESH_AHEAD_MS`], or it is the very token Kommo just refused (a 401). A 401 for an older
/// token says nothing of the stored one, which another refresh has already replaced.
pub fn refresh_due(access_expires_at_ms: i64, now_ms: i64, stored_is_the_refused_one: bool) -> bool {
    stored_is_the_refused_one || access_expires_at_ms - now_ms <= REFRESH_AHEAD_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_kommo_account_host_is_ever_called() {
        let cases = [
            ("acme.kommo.com", Some("acme.kommo.com")),
            ("ACME.Kommo.com", Some("acme.kommo.com")),
            ("shop-42.amocrm.ru", Some("shop-42.amocrm.ru")),
            ("shop.amocrm.com", Some("shop.amocrm.com")),
            ("kommo.com", None),
            (".kommo.com", None),
            ("a.b.kommo.com", None),
            ("acme.kommo.com.example.com", None),
            ("acme.kommo.com:8443", None),
            ("acme.kommo.com/oauth2", None),
            ("https://acme.kommo.com", None),
            ("user@acme.kommo.com", None),
            ("acme.kommo.com.", None),
            ("-acme.kommo.com", None),
            ("acme-.kommo.com", None),
            ("ac me.kommo.com", None),
            ("acme.kommo.co", None),
            ("acme.example.com", None),
            ("127.0.0.1", None),
            ("acme.kommo.com#.example.com", None),
            ("acme.kommo.com?x=.example.com", None),
            ("", None),
        ];
        for (referer, expected) in cases {
            assert_eq!(kommo_account_host(referer).ok().as_deref(), expected, "{referer:?}");
        }
        assert!(kommo_account_host(&format!("{}.kommo.com", "a".repeat(64))).is_err());
        assert!(kommo_account_host(&format!("{}.kommo.com", "a".repeat(63))).is_ok());
    }

    #[test]
    fn a_token_is_refreshed_ahead_of_its_end_or_when_kommo_refused_it() {
        let now = 1_000_000_000;
        // (expires in, the stored token is the one refused, refresh due)
        let cases = [
            (REFRESH_AHEAD_MS + 1, false, false),
            (REFRESH_AHEAD_MS, false, true),
            (1, false, true),
            (-5_000, false, true),
            (24 * 3_600_000, true, true),
            (24 * 3_600_000, false, false),
        ];
        for (expires_in, refused, due) in cases {
            assert_eq!(refresh_due(now + expires_in, now, refused), due, "{expires_in} {refused}");
        }
    }

    #[test]
    fn a_code_is_printable_and_bounded() {
        assert!(check_authorization_code("def50200a1b2").is_ok());
        assert!(check_authorization_code("").is_err());
        assert!(check_authorization_code("a b").is_err());
        assert!(check_authorization_code("a\nb").is_err());
        assert!(check_authorization_code(&"x".repeat(4097)).is_err());
    }
}
