//! What an installation's redirect may make the bridge do. Kommo sends the installing admin's
//! browser (or, for a widget, a request of its own) to the Redirect URI with `code` and
//! `referer`, the account's host; the bridge then posts the code, with the integration's secret,
//! to that host. Anyone can call the Redirect URI with any `referer`, so the host is checked
//! here before anything is sent: only an account host of the deployment's platform, named
//! exactly, is ever called, never one of the platform's own service hosts.
//!
//! Also here: the `state` an install button may carry (an HMAC the bridge can verify), and
//! when an account's tokens are renewed or given up.

use super::rejection::Rejection;
use crate::signing::{constant_time_eq, hmac_sha256};

/// The platform one deployment serves (`KOMMO_PLATFORM`): a chat channel is registered with
/// one of them, and its accounts live under that platform's domains only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Platform {
    /// Kommo: accounts `{subdomain}.kommo.com`, amojo at `amojo.kommo.com`.
    #[default]
    Kommo,
    /// amoCRM: accounts `{subdomain}.amocrm.ru` and `{subdomain}.amocrm.com`, amojo at
    /// `amojo.amocrm.ru`.
    AmoCrm,
}

impl Platform {
    /// `kommo` or `amocrm`, as `KOMMO_PLATFORM` names it.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "kommo" => Some(Self::Kommo),
            "amocrm" => Some(Self::AmoCrm),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kommo => "kommo",
            Self::AmoCrm => "amocrm",
        }
    }

    /// The domains its accounts live under.
    pub fn account_domains(self) -> &'static [&'static str] {
        match self {
            Self::Kommo => &["kommo.com"],
            Self::AmoCrm => &["amocrm.ru", "amocrm.com"],
        }
    }

    /// Its Chat API (amojo) origin, the default of `KOMMO_AMOJO_URL`.
    pub fn amojo_origin(self) -> &'static str {
        match self {
            Self::Kommo => "https://amojo.kommo.com",
            Self::AmoCrm => "https://amojo.amocrm.ru",
        }
    }
}

/// Every domain either platform's accounts live under.
pub const KOMMO_ACCOUNT_DOMAINS: [&str; 3] = ["kommo.com", "amocrm.ru", "amocrm.com"];

/// Names under the platforms' domains that are their own services, never an account: a code
/// or a client secret is never sent there.
pub const SERVICE_SUBDOMAINS: &[&str] = &[
    "www",
    "api",
    "amojo",
    "id",
    "auth",
    "oauth",
    "oauth2",
    "login",
    "sso",
    "developers",
    "dev",
    "help",
    "support",
    "status",
    "static",
    "cdn",
    "assets",
    "files",
    "drive",
    "mail",
    "smtp",
    "blog",
    "market",
    "marketplace",
    "widgets",
    "admin",
    "account",
    "accounts",
    "docs",
    "academy",
    "partners",
    "community",
    "app",
    "apps",
    "web",
    "m",
    "mobile",
    "ws",
    "wss",
    "chat",
    "chats",
    "pay",
    "billing",
    "ns1",
    "ns2",
    "mx",
];

/// The account host a `referer` names: `{subdomain}.{one of platform's domains}`, lowercased,
/// one DNS label for the subdomain (letters, digits, inner hyphens, at most 63) that is not one
/// of the [`SERVICE_SUBDOMAINS`]. Nothing else is accepted: no scheme, port, path, user info,
/// trailing dot, deeper name, or the other platform's host, so the result can be put after
/// `https://` as it is.
pub fn kommo_account_host(referer: &str, platform: Platform) -> Result<String, Rejection> {
    let domains = platform.account_domains().join(", ");
    let refused = || Rejection::invalid(format!("referer is not an account host ({{subdomain}}.{domains})"));
    let host = referer.to_ascii_lowercase();
    let (subdomain, domain) = host.split_once('.').ok_or_else(refused)?;
    if !platform.account_domains().contains(&domain) || !is_dns_label(subdomain) {
        return Err(refused());
    }
    if SERVICE_SUBDOMAINS.contains(&subdomain) {
        return Err(Rejection::invalid(format!("referer names a service host of {domain}, not an account")));
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

/// The `state` an install button carries: `{nonce}.{signature}`, where `nonce` is 1 to 64 of
/// `A-Z a-z 0-9 - _` chosen by whoever made the button, and `signature` the lowercase hex
/// HMAC-SHA256 of `kommo-install-state:{nonce}` under the integration's secret key. Only the
/// bridge's operator can make one, so a redirect carrying a state proves it came through their
/// button. Kommo's marketplace install carries none; see [`check_install_state`].
pub fn sign_install_state(integration_secret: &str, nonce: &str) -> String {
    format!("{nonce}.{}", hex::encode(install_state_mac(integration_secret, nonce)))
}

fn install_state_mac(integration_secret: &str, nonce: &str) -> Vec<u8> {
    hmac_sha256(integration_secret.as_bytes(), format!("kommo-install-state:{nonce}").as_bytes())
}

/// A redirect's `state`, checked in constant time: none (or empty) is accepted, as Kommo's
/// marketplace and widget installs give none; one that is present must be a
/// [`sign_install_state`] of this integration, else the redirect is refused before any call.
pub fn check_install_state(integration_secret: &str, state: Option<&str>) -> Result<(), Rejection> {
    let Some(state) = state.filter(|state| !state.is_empty()) else { return Ok(()) };
    let refused = || Rejection::invalid("state is not one this integration's install button carries");
    let (nonce, signature) = state.rsplit_once('.').ok_or_else(refused)?;
    let nonce_ok =
        (1..=64).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let claimed = hex::decode(signature).map_err(|_| refused())?;
    if !nonce_ok || !constant_time_eq(&claimed, &install_state_mac(integration_secret, nonce)) {
        return Err(refused());
    }
    Ok(())
}

/// A redirect's `client_id`, when Kommo gives one, names this integration.
pub fn check_redirect_client(client_id: &str, redirect_client_id: Option<&str>) -> Result<(), Rejection> {
    match redirect_client_id.filter(|given| !given.is_empty()) {
        Some(given) if given != client_id => Err(Rejection::invalid("client_id is not this integration's")),
        _ => Ok(()),
    }
}

/// A refresh token unused for three months lapses (Kommo); the daily sweep renews any older
/// than this, so even an account the bridge never calls keeps working.
pub const RENEW_REFRESH_AFTER_MS: i64 = 30 * 86_400_000;

/// Whether the sweep renews an account's tokens now: last renewed [`RENEW_REFRESH_AFTER_MS`]
/// ago or more (0, not known, included).
pub fn refresh_token_renewal_due(tokens_renewed_at_ms: i64, now_ms: i64) -> bool {
    now_ms - tokens_renewed_at_ms >= RENEW_REFRESH_AFTER_MS
}

/// Whether Kommo's refusal of a refresh means the refresh token is gone for good (only an
/// install brings access back): 400 and 401, OAuth's `invalid_grant` and `invalid_client`.
/// 402 (unpaid) and 403 (blocked) say the account is suspended, not that the grant is: the
/// tokens are kept and tried again later.
pub fn refresh_refused_for_good(status: u16) -> bool {
    matches!(status, 400 | 401)
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
            let platform =
                if referer.to_ascii_lowercase().contains(".amocrm.") { Platform::AmoCrm } else { Platform::Kommo };
            assert_eq!(kommo_account_host(referer, platform).ok().as_deref(), expected, "{referer:?}");
        }
        assert!(kommo_account_host(&format!("{}.kommo.com", "a".repeat(64)), Platform::Kommo).is_err());
        assert!(kommo_account_host(&format!("{}.kommo.com", "a".repeat(63)), Platform::Kommo).is_ok());
    }

    #[test]
    fn a_referer_of_the_other_platform_or_a_service_host_is_refused() {
        // (referer, platform, accepted)
        let cases = [
            ("acme.kommo.com", Platform::Kommo, true),
            ("acme.amocrm.ru", Platform::Kommo, false),
            ("acme.amocrm.com", Platform::Kommo, false),
            ("acme.amocrm.ru", Platform::AmoCrm, true),
            ("acme.amocrm.com", Platform::AmoCrm, true),
            ("acme.kommo.com", Platform::AmoCrm, false),
            ("www.kommo.com", Platform::Kommo, false),
            ("api.kommo.com", Platform::Kommo, false),
            ("amojo.kommo.com", Platform::Kommo, false),
            ("ID.kommo.com", Platform::Kommo, false),
            ("auth.kommo.com", Platform::Kommo, false),
            ("oauth.amocrm.ru", Platform::AmoCrm, false),
            ("www.amocrm.com", Platform::AmoCrm, false),
            ("wwwshop.kommo.com", Platform::Kommo, true),
        ];
        for (referer, platform, accepted) in cases {
            assert_eq!(kommo_account_host(referer, platform).is_ok(), accepted, "{referer} {platform:?}");
        }
        assert_eq!(Platform::parse(" AmoCRM "), Some(Platform::AmoCrm));
        assert_eq!(Platform::parse("kommo"), Some(Platform::Kommo));
        assert_eq!(Platform::parse("bitrix"), None);
        assert_eq!(Platform::default().amojo_origin(), "https://amojo.kommo.com");
        assert_eq!(Platform::AmoCrm.amojo_origin(), "https://amojo.amocrm.ru");
    }

    #[test]
    fn a_state_is_checked_when_the_redirect_has_one() {
        let secret = "integration-secret";
        let state = sign_install_state(secret, "site-button_1");
        assert!(check_install_state(secret, Some(&state)).is_ok());
        assert!(check_install_state(secret, None).is_ok(), "Kommo's marketplace gives none");
        assert!(check_install_state(secret, Some("")).is_ok());
        let forged = sign_install_state("another-secret", "site-button_1");
        let tampered = state.replacen("site-button_1", "site-button_2", 1);
        let shouted = state.to_uppercase();
        for bad in [forged.as_str(), tampered.as_str(), "site-button_1", "x.zz", ".00", "a b.00", shouted.as_str()] {
            assert!(check_install_state(secret, Some(bad)).is_err(), "{bad}");
        }
        let long = sign_install_state(secret, &"n".repeat(65));
        assert!(check_install_state(secret, Some(&long)).is_err(), "a nonce is at most 64 characters");
    }

    #[test]
    fn a_redirect_names_this_integration_when_it_names_one() {
        assert!(check_redirect_client("client-1", None).is_ok());
        assert!(check_redirect_client("client-1", Some("")).is_ok());
        assert!(check_redirect_client("client-1", Some("client-1")).is_ok());
        assert!(check_redirect_client("client-1", Some("client-2")).is_err());
    }

    #[test]
    fn tokens_are_renewed_a_month_after_they_were_issued_and_given_up_only_on_a_refused_grant() {
        let now = 100 * 86_400_000;
        assert!(!refresh_token_renewal_due(now - RENEW_REFRESH_AFTER_MS + 1, now));
        assert!(refresh_token_renewal_due(now - RENEW_REFRESH_AFTER_MS, now));
        assert!(refresh_token_renewal_due(0, now), "not known: renewed");
        for (status, for_good) in [(400, true), (401, true), (402, false), (403, false), (404, false), (429, false)] {
            assert_eq!(refresh_refused_for_good(status), for_good, "{status}");
        }
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
