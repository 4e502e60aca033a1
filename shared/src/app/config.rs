//! Configuration from the environment, the same names for the Lambda functions and the dev
//! server. The Lambda functions refuse to start without it; the dev server fills what is
//! missing with a local default (generated secrets, the built-in sink) so it runs with none.

use super::http::ApiError;
use crate::rules::id_checks::{MAX_PATH_ID_BYTES, check_account_part, check_path_id};
use crate::rules::install::Platform;
use std::time::Duration;

use crate::random::random_bytes;
use crate::rules::presence::PresenceSettings;
use crate::rules::retry::RetryPolicy;
use crate::signing::Secret;
use crate::signing::standard_webhooks::WebhookSecret;

/// The amojo origin of the default platform, Kommo (`KOMMO_PLATFORM` chooses another's).
pub const DEFAULT_AMOJO_URL: &str = "https://amojo.kommo.com";
pub const DEFAULT_TABLE_NAME: &str = "kommo-bridge";
pub const DEFAULT_PORT: u16 = 3000;

#[derive(Debug, Clone)]
pub struct Config {
    pub channel_id: String,
    pub channel_secret: Secret,
    /// `KOMMO_PLATFORM` (`kommo` or `amocrm`): the one platform this deployment's channel is
    /// registered with; it chooses amojo's default origin and the account hosts installs accept.
    pub platform: Platform,
    pub amojo_url: String,
    /// The Kommo UI's one-time tokens (`kommo-webhook` only).
    pub integration_secret: Option<Secret>,
    /// Where events for the chat service go (`typing-expiry` only: it alone sends them).
    pub chat_service_url: Option<String>,
    /// Verifies the chat service's requests and signs the bridge's (`chat-callback`,
    /// `typing-expiry`).
    pub chat_service_secret: Option<WebhookSecret>,
    pub table_name: String,
    /// When set, DynamoDB at this endpoint (a local server) instead of AWS's.
    pub dynamodb_endpoint: Option<String>,
    /// The SQS queue of timers and retries (`TIMER_QUEUE_URL`); the dev server runs timers in
    /// process when it is not set.
    pub timer_queue_url: Option<String>,
    /// When set, SQS at this endpoint (a local server) instead of AWS's.
    pub sqs_endpoint: Option<String>,
    pub retry: RetryPolicy,
    pub presence: PresenceSettings,
    pub privacy: Privacy,
    /// Kommo accounts this deployment serves: numeric account id (in the Kommo UI's one-time
    /// tokens) → amojo account id (in scope ids), from `KOMMO_ACCOUNTS`.
    pub accounts: Vec<(String, String)>,
    /// Origins the Kommo UI widget may call from (`KOMMO_UI_ORIGINS`), `*` standing for one
    /// DNS label or a port.
    pub ui_origins: Vec<String>,
    /// Installs through Kommo's OAuth (`kommo-webhook`, when `KOMMO_CLIENT_ID` is set).
    pub installs: Option<InstallSettings>,
    /// Managers named from the directory of installed accounts' users (every function, when
    /// `KOMMO_CLIENT_ID` is set: only installs fill it, so without them it is never read).
    pub manager_directory: bool,
}

/// What installing the integration through Kommo's OAuth needs. The client secret is the
/// integration's secret key, which the bridge holds already (`KOMMO_INTEGRATION_SECRET`).
#[derive(Debug, Clone)]
pub struct InstallSettings {
    /// `KOMMO_CLIENT_ID`: the integration's id.
    pub client_id: String,
    /// `KOMMO_REDIRECT_URI`: the integration's Redirect URI, exactly as registered in Kommo.
    pub redirect_uri: String,
    /// `KOMMO_TOKEN_KEY`: 64 hex digits, the AES-256 key that seals the accounts' tokens.
    pub token_key: Secret,
    /// `KOMMO_API_URL` (tests, local use): replaces `https://{account host}` for Kommo's REST API.
    pub api_url: Option<String>,
    /// The channel's title in Kommo (`KOMMO_CHANNEL_TITLE`).
    pub channel_title: String,
}

impl InstallSettings {
    /// The 32-byte key.
    pub fn token_key_bytes(&self) -> [u8; 32] {
        let mut key = [0u8; 32];
        hex::decode_to_slice(self.token_key.expose(), &mut key).expect("checked when loaded");
        key
    }
}

/// Per-deployment switches; off, the bridge forwards nothing of that kind and never invents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privacy {
    pub forward_manager_typing: bool,
    pub forward_read_receipts: bool,
    pub forward_manager_presence: bool,
}

pub const DEFAULT_UI_ORIGINS: &str = "https://*.kommo.com,https://*.amocrm.ru,https://*.amocrm.com";
const LOCAL_UI_ORIGINS: &str = "http://localhost:*,http://127.0.0.1:*";

/// A variable that is missing or malformed, named so the operator can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {variable} {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

impl ConfigError {
    fn new(variable: &'static str, problem: impl Into<String>) -> Self {
        Self { variable, problem: problem.into() }
    }
}

/// The deployed functions: each loads only the configuration and secrets it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// Everything from Kommo: verifies webhooks and the widget's tokens; calls amojo at most
    /// for a 903 it must report at once.
    KommoWebhook,
    /// Everything from the chat service: verifies it; calls amojo for a client's typing.
    ChatCallback,
    /// Queued work: calls amojo and the chat service.
    TypingExpiry,
}

impl Function {
    /// The secrets it uses, each given as a value (`NAME`) or, in AWS, as the name of an SSM
    /// SecureString parameter (`NAME_PARAM`).
    pub fn secrets(self) -> &'static [&'static str] {
        match self {
            Self::KommoWebhook => &["KOMMO_CHANNEL_SECRET", "KOMMO_INTEGRATION_SECRET", "KOMMO_TOKEN_KEY"],
            Self::ChatCallback => &["KOMMO_CHANNEL_SECRET", "CHAT_SERVICE_SECRET"],
            // The last two only with installs (KOMMO_CLIENT_ID), for their queued work.
            Self::TypingExpiry => {
                &["KOMMO_CHANNEL_SECRET", "CHAT_SERVICE_SECRET", "KOMMO_INTEGRATION_SECRET", "KOMMO_TOKEN_KEY"]
            }
        }
    }

    fn uses(self, secret: &str) -> bool {
        self.secrets().contains(&secret)
    }

    /// Only queued work sends anything to the chat service.
    fn calls_chat_service(self) -> bool {
        self == Self::TypingExpiry
    }
}

/// What the dev server made up because the environment did not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalDefaults {
    pub generated: Vec<&'static str>,
}

impl Config {
    /// For a Lambda function: every variable that names a secret or a peer it uses is
    /// required; the ones it does not use are not read.
    pub fn from_env_strict(env: &dyn Fn(&str) -> Option<String>, function: Function) -> Result<Self, ConfigError> {
        let required =
            |name: &'static str| non_empty(env, name).ok_or_else(|| ConfigError::new(name, "is required and not set"));
        // Read in the order an operator sets them: the channel first, then each peer.
        let channel_id = channel_id(required("KOMMO_CHANNEL_ID")?)?;
        let channel_secret = Secret::new(required("KOMMO_CHANNEL_SECRET")?);
        let platform = platform(env)?;
        let amojo_url = origin(env, "KOMMO_AMOJO_URL")?.unwrap_or_else(|| platform.amojo_origin().into());
        // Queued work reads the integration's secret only to run installs' work (KOMMO_CLIENT_ID).
        let installs_on = non_empty(env, "KOMMO_CLIENT_ID").is_some();
        let reads_integration_secret =
            function.uses("KOMMO_INTEGRATION_SECRET") && (function == Function::KommoWebhook || installs_on);
        let integration_secret = match reads_integration_secret {
            true => Some(Secret::new(required("KOMMO_INTEGRATION_SECRET")?)),
            false => None,
        };
        let chat_service_url = match function.calls_chat_service() {
            true => Some(
                url(env, "CHAT_SERVICE_URL")?
                    .ok_or_else(|| ConfigError::new("CHAT_SERVICE_URL", "is required and not set"))?,
            ),
            false => None,
        };
        let chat_service_secret = match function.uses("CHAT_SERVICE_SECRET") {
            true => Some(webhook_secret(&required("CHAT_SERVICE_SECRET")?)?),
            false => None,
        };
        Ok(Self {
            channel_id,
            channel_secret,
            platform,
            amojo_url,
            integration_secret,
            chat_service_url,
            chat_service_secret,
            table_name: required("TABLE_NAME")?,
            dynamodb_endpoint: url(env, "DYNAMODB_ENDPOINT")?,
            timer_queue_url: Some(
                url(env, "TIMER_QUEUE_URL")?
                    .ok_or_else(|| ConfigError::new("TIMER_QUEUE_URL", "is required and not set"))?,
            ),
            sqs_endpoint: url(env, "SQS_ENDPOINT")?,
            retry: retry_policy(env)?,
            presence: presence_settings(env)?,
            privacy: privacy(env)?,
            accounts: accounts(env, None)?,
            ui_origins: ui_origins(env)?.unwrap_or_else(|| split_list(DEFAULT_UI_ORIGINS)),
            // Installs' queued work (a connect retried, the token sweep, the managers' read)
            // runs in typing-expiry.
            installs: match function {
                Function::KommoWebhook | Function::TypingExpiry => install_settings(env)?,
                Function::ChatCallback => None,
            },
            manager_directory: non_empty(env, "KOMMO_CLIENT_ID").is_some(),
        })
    }

    /// For the dev server: what is missing gets a local default. `sink_base` is the dev
    /// server's own address, where the built-in sink stands in for amojo and the chat service.
    pub fn from_env_local(
        env: &dyn Fn(&str) -> Option<String>,
        sink_base: &str,
    ) -> Result<(Self, LocalDefaults), ConfigError> {
        let mut defaults = LocalDefaults::default();
        let mut or_generated = |name: &'static str, value: Option<String>, make: &dyn Fn() -> String| {
            value.unwrap_or_else(|| {
                defaults.generated.push(name);
                make()
            })
        };
        let given_channel_id = non_empty(env, "KOMMO_CHANNEL_ID").map(channel_id).transpose()?;
        let channel_id = or_generated("KOMMO_CHANNEL_ID", given_channel_id, &|| "local-channel".into());
        let channel_secret = or_generated("KOMMO_CHANNEL_SECRET", non_empty(env, "KOMMO_CHANNEL_SECRET"), &|| {
            hex::encode(random_bytes::<20>())
        });
        let platform = platform(env)?;
        let amojo_url =
            or_generated("KOMMO_AMOJO_URL", origin(env, "KOMMO_AMOJO_URL")?, &|| format!("{sink_base}/_sink/amojo"));
        let integration_secret =
            or_generated("KOMMO_INTEGRATION_SECRET", non_empty(env, "KOMMO_INTEGRATION_SECRET"), &|| {
                hex::encode(random_bytes::<32>())
            });
        let chat_service_url =
            or_generated("CHAT_SERVICE_URL", url(env, "CHAT_SERVICE_URL")?, &|| format!("{sink_base}/_sink/chat"));
        let chat_service_secret = match non_empty(env, "CHAT_SERVICE_SECRET") {
            Some(text) => webhook_secret(&text)?,
            None => {
                defaults.generated.push("CHAT_SERVICE_SECRET");
                WebhookSecret::from_key(random_bytes::<32>().to_vec())
            }
        };
        let config = Self {
            channel_id,
            channel_secret: Secret::new(channel_secret),
            platform,
            amojo_url,
            integration_secret: Some(Secret::new(integration_secret)),
            chat_service_url: Some(chat_service_url),
            chat_service_secret: Some(chat_service_secret),
            table_name: non_empty(env, "TABLE_NAME").unwrap_or_else(|| DEFAULT_TABLE_NAME.into()),
            dynamodb_endpoint: url(env, "DYNAMODB_ENDPOINT")?,
            timer_queue_url: url(env, "TIMER_QUEUE_URL")?,
            sqs_endpoint: url(env, "SQS_ENDPOINT")?,
            retry: retry_policy(env)?,
            presence: presence_settings(env)?,
            privacy: privacy(env)?,
            accounts: accounts(env, Some(&mut defaults))?,
            ui_origins: ui_origins(env)?
                .unwrap_or_else(|| split_list(&format!("{DEFAULT_UI_ORIGINS},{LOCAL_UI_ORIGINS}"))),
            installs: install_settings(env)?,
            manager_directory: non_empty(env, "KOMMO_CLIENT_ID").is_some(),
        };
        Ok((config, defaults))
    }

    /// The scope of a Kommo account named by its numeric id (a one-time token's `account_id`).
    pub fn scope_of_account(&self, account_id: &str) -> Option<String> {
        self.accounts
            .iter()
            .find(|(numeric, _)| numeric == account_id)
            .map(|(_, amojo)| format!("{}_{amojo}", self.channel_id))
    }

    /// Whether the Kommo UI may call from `origin`.
    pub fn ui_origin_allowed(&self, origin: &str) -> bool {
        self.ui_origins.iter().any(|pattern| origin_matches(pattern, origin))
    }

    /// The account part of one of this channel's scope ids, `{channel_id}_{account}` with the
    /// account as `rules::id_checks::check_account_part` has it: 404 `unknown_scope` for another
    /// channel's, 400 `invalid_scope` for a malformed one (a path, a query, a key separator).
    pub fn account_of_scope<'a>(&self, scope_id: &'a str) -> Result<&'a str, ApiError> {
        let account = scope_id
            .strip_prefix(self.channel_id.as_str())
            .and_then(|rest| rest.strip_prefix('_'))
            .ok_or_else(ApiError::unknown_scope)?;
        check_account_part(account)
            .map_err(|rejection| ApiError::bad_request("invalid_scope", format!("scope_id: {rejection}")))?;
        Ok(account)
    }
}

/// The port the dev server listens on (`PORT`, default 3000).
pub fn port(env: &dyn Fn(&str) -> Option<String>) -> Result<u16, ConfigError> {
    match non_empty(env, "PORT") {
        None => Ok(DEFAULT_PORT),
        Some(text) => text
            .parse::<u16>()
            .map_err(|_| ConfigError::new("PORT", format!("must be a port number from 0 to 65535, not {text:?}"))),
    }
}

/// Installs are on when `KOMMO_CLIENT_ID` is set; then the Redirect URI and the token key are
/// required too.
fn install_settings(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<InstallSettings>, ConfigError> {
    let Some(client_id) = non_empty(env, "KOMMO_CLIENT_ID") else { return Ok(None) };
    let required = |name: &'static str| {
        non_empty(env, name).ok_or_else(|| ConfigError::new(name, "is required with KOMMO_CLIENT_ID"))
    };
    let redirect_uri = required("KOMMO_REDIRECT_URI")?;
    // Kommo sends the installing admin there, and the widget's tokens name its origin (`aud`).
    if !is_url(&redirect_uri) {
        return Err(ConfigError::new(
            "KOMMO_REDIRECT_URI",
            "must be the http(s) URL registered in Kommo, with a host, and no spaces",
        ));
    }
    let token_key = required("KOMMO_TOKEN_KEY")?;
    if token_key.len() != 64 || !token_key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ConfigError::new("KOMMO_TOKEN_KEY", "must be 64 hex digits (a 256-bit key)"));
    }
    // A placeholder (all zeros, `ff…`), not a key: the tokens it sealed would be anyone's.
    let key_bytes = hex::decode(&token_key).expect("checked as hex above");
    if key_bytes.iter().all(|&byte| byte == key_bytes[0]) {
        return Err(ConfigError::new(
            "KOMMO_TOKEN_KEY",
            "is one byte repeated, a placeholder rather than a key: generate one (openssl rand -hex 32)",
        ));
    }
    Ok(Some(InstallSettings {
        client_id,
        redirect_uri,
        token_key: Secret::new(token_key),
        api_url: origin(env, "KOMMO_API_URL")?,
        channel_title: non_empty(env, "KOMMO_CHANNEL_TITLE").unwrap_or_else(|| "Chat".into()),
    }))
}

/// `KOMMO_CHANNEL_ID`: it goes into amojo's paths (`/v2/origin/custom/{channel_id}/connect`,
/// and in every scope id), so it is checked as a Kommo id that goes into a path is.
fn channel_id(text: String) -> Result<String, ConfigError> {
    match check_path_id("KOMMO_CHANNEL_ID", &text) {
        Ok(()) => Ok(text),
        Err(_) => Err(ConfigError::new(
            "KOMMO_CHANNEL_ID",
            format!("must be the channel's id from Kommo: 1 to {MAX_PATH_ID_BYTES} of A-Z a-z 0-9 - . _ ~"),
        )),
    }
}

/// `KOMMO_UI_ORIGINS`: each an origin, where `*` may stand for the first label of a host under
/// a domain of at least two labels (`https://*.kommo.com`) or for the port
/// (`http://localhost:*`): a wider wildcard (`*`, `https://*`, `https://*.com`) would let any
/// site call the widget's routes with a browser's credentials.
fn ui_origins(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Vec<String>>, ConfigError> {
    let Some(origins) = list(env, "KOMMO_UI_ORIGINS") else { return Ok(None) };
    for pattern in &origins {
        if let Err(problem) = check_origin_pattern(pattern) {
            return Err(ConfigError::new("KOMMO_UI_ORIGINS", format!("{pattern:?} {problem}")));
        }
    }
    Ok(Some(origins))
}

fn check_origin_pattern(pattern: &str) -> Result<(), &'static str> {
    const NOT_AN_ORIGIN: &str = "is not an origin (http:// or https://, a host, an optional port, nothing more)";
    let Some((scheme, authority)) = pattern.split_once("://") else { return Err(NOT_AN_ORIGIN) };
    if !matches!(scheme, "http" | "https") {
        return Err(NOT_AN_ORIGIN);
    }
    let concrete = match pattern.matches('*').count() {
        0 => pattern.to_owned(),
        1 => {
            if let Some(domain) = authority.strip_prefix("*.") {
                let host = domain.split(':').next().unwrap_or_default();
                if !host.contains('.') {
                    return Err("has a wildcard wider than one label: `*.` must be followed by two labels or more");
                }
                format!("{scheme}://x.{domain}")
            } else if let Some(host) = authority.strip_suffix(":*") {
                format!("{scheme}://{host}:1")
            } else {
                return Err("has a wildcard that is neither the host's first label (`*.example.com`) nor the port");
            }
        }
        _ => return Err("has more than one wildcard"),
    };
    if is_origin(&concrete) { Ok(()) } else { Err(NOT_AN_ORIGIN) }
}

/// `KOMMO_PLATFORM`: `kommo` (the default) or `amocrm`.
fn platform(env: &dyn Fn(&str) -> Option<String>) -> Result<Platform, ConfigError> {
    match non_empty(env, "KOMMO_PLATFORM") {
        None => Ok(Platform::default()),
        Some(text) => Platform::parse(&text)
            .ok_or_else(|| ConfigError::new("KOMMO_PLATFORM", format!("must be kommo or amocrm, not {text:?}"))),
    }
}

fn non_empty(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn url(env: &dyn Fn(&str) -> Option<String>, name: &'static str) -> Result<Option<String>, ConfigError> {
    let Some(text) = non_empty(env, name) else { return Ok(None) };
    if is_url(&text) {
        return Ok(Some(text.trim_end_matches('/').to_owned()));
    }
    Err(ConfigError::new(name, "must be an http:// or https:// URL with a host, and no spaces"))
}

/// An http:// or https:// URL with a host (and optional port) and nothing a request line could
/// not carry (no whitespace, no control characters): refused at start, not at the first call.
fn is_url(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    matches!(scheme, "http" | "https")
        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
        && is_origin(&format!("{scheme}://{authority}"))
}

/// An origin: scheme, host and an optional port, nothing after (a trailing `/` is dropped).
/// amojo's signature covers the path of the request, so a base URL with a path of its own
/// would sign one path and send another: every call refused, and only at run time.
fn origin(env: &dyn Fn(&str) -> Option<String>, name: &'static str) -> Result<Option<String>, ConfigError> {
    let Some(text) = url(env, name)? else { return Ok(None) };
    if is_origin(&text) {
        Ok(Some(text))
    } else {
        Err(ConfigError::new(name, "must be an origin (scheme, host and optional port), with no path, query or user"))
    }
}

/// Whether `text` (an http:// or https:// URL, trailing `/` dropped) is an origin.
pub fn is_origin(text: &str) -> bool {
    let Some((_, authority)) = text.split_once("://") else { return false };
    // An IPv6 literal is bracketed, its colons inside the brackets.
    let (host_ok, after_host) = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((address, after)) => {
                (!address.is_empty() && address.chars().all(|c| c.is_ascii_hexdigit() || c == ':'), after)
            }
            None => (false, ""),
        },
        None => {
            let (host, after) = authority.find(':').map_or((authority, ""), |at| authority.split_at(at));
            (!host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-')), after)
        }
    };
    // After the host: nothing, or `:` and a port number.
    let port_ok = after_host.is_empty()
        || after_host
            .strip_prefix(':')
            .is_some_and(|port| !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

fn webhook_secret(text: &str) -> Result<WebhookSecret, ConfigError> {
    WebhookSecret::parse(text).map_err(|e| ConfigError::new("CHAT_SERVICE_SECRET", e.to_string()))
}

fn retry_policy(env: &dyn Fn(&str) -> Option<String>) -> Result<RetryPolicy, ConfigError> {
    let mut policy = RetryPolicy::DEFAULT;
    if let Some(text) = non_empty(env, "RETRY_MAX_ATTEMPTS") {
        policy.max_attempts = text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=50).contains(n))
            .ok_or_else(|| ConfigError::new("RETRY_MAX_ATTEMPTS", "must be a whole number from 1 to 50"))?;
    }
    if let Some(text) = non_empty(env, "RETRY_BASE_DELAY_MS") {
        let ms = text
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=60_000).contains(n))
            .ok_or_else(|| ConfigError::new("RETRY_BASE_DELAY_MS", "must be milliseconds from 1 to 60000"))?;
        policy.base_delay = Duration::from_millis(ms);
    }
    Ok(policy)
}

fn list(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<Vec<String>> {
    non_empty(env, name).map(|text| split_list(&text))
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_owned).collect()
}

/// `https://*.kommo.com` matches `https://acme.kommo.com`; `http://localhost:*` any port.
fn origin_matches(pattern: &str, origin: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == origin,
        Some((head, tail)) => {
            origin.len() > head.len() + tail.len()
                && origin.starts_with(head)
                && origin.ends_with(tail)
                && origin[head.len()..origin.len() - tail.len()].chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        }
    }
}

fn whole_seconds(
    env: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
    default: i64,
    max: i64,
) -> Result<i64, ConfigError> {
    match non_empty(env, name) {
        None => Ok(default),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|s| (1..=max).contains(s))
            .ok_or_else(|| ConfigError::new(name, format!("must be whole seconds from 1 to {max}"))),
    }
}

fn presence_settings(env: &dyn Fn(&str) -> Option<String>) -> Result<PresenceSettings, ConfigError> {
    Ok(PresenceSettings {
        window_ms: whole_seconds(env, "PRESENCE_WINDOW_S", 60, 3600)? * 1000,
        grace_ms: whole_seconds(env, "PRESENCE_GRACE_S", 5, 300)? * 1000,
    })
}

fn switch(env: &dyn Fn(&str) -> Option<String>, name: &'static str) -> Result<bool, ConfigError> {
    match non_empty(env, name).map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("true" | "1" | "on" | "yes") => Ok(true),
        Some("false" | "0" | "off" | "no") => Ok(false),
        Some(_) => Err(ConfigError::new(name, "must be true or false")),
    }
}

fn privacy(env: &dyn Fn(&str) -> Option<String>) -> Result<Privacy, ConfigError> {
    Ok(Privacy {
        forward_manager_typing: switch(env, "FORWARD_MANAGER_TYPING")?,
        forward_read_receipts: switch(env, "FORWARD_READ_RECEIPTS")?,
        forward_manager_presence: switch(env, "FORWARD_MANAGER_PRESENCE")?,
    })
}

/// `KOMMO_ACCOUNTS`: `numeric_id:amojo_id` pairs, comma-separated. Locally, one made-up account.
fn accounts(
    env: &dyn Fn(&str) -> Option<String>,
    local: Option<&mut LocalDefaults>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let Some(entries) = list(env, "KOMMO_ACCOUNTS") else {
        return Ok(match local {
            Some(defaults) => {
                defaults.generated.push("KOMMO_ACCOUNTS");
                vec![("1".into(), "local-account".into())]
            }
            None => Vec::new(),
        });
    };
    let accounts = entries
        .iter()
        .map(|entry| match entry.split_once(':').map(|(numeric, amojo)| (numeric.trim(), amojo.trim())) {
            // The numeric id the Kommo UI's tokens carry; the amojo id that ends scope ids.
            Some((numeric, amojo)) if numeric.parse::<u64>().is_ok() && check_account_part(amojo).is_ok() => {
                Ok((numeric.to_owned(), amojo.to_owned()))
            }
            _ => Err(ConfigError::new(
                "KOMMO_ACCOUNTS",
                "must list numeric_account_id:amojo_account_id pairs, comma-separated (the amojo id of A-Z a-z 0-9 -)",
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    // One scope per account, one account per scope: a repeat would make either map ambiguous.
    for (at, (numeric, amojo)) in accounts.iter().enumerate() {
        for (other_numeric, other_amojo) in &accounts[..at] {
            if numeric == other_numeric || amojo == other_amojo {
                let repeated = if numeric == other_numeric { numeric } else { amojo };
                return Err(ConfigError::new("KOMMO_ACCOUNTS", format!("lists the account {repeated} twice")));
            }
        }
    }
    Ok(accounts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    const FULL: &[(&str, &str)] = &[
        ("KOMMO_CHANNEL_ID", "chan"),
        ("KOMMO_CHANNEL_SECRET", "s1"),
        ("KOMMO_INTEGRATION_SECRET", "s2"),
        ("CHAT_SERVICE_URL", "https://chat.example/hooks/"),
        ("CHAT_SERVICE_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ("TABLE_NAME", "bridge"),
        ("TIMER_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/123456789012/bridge-timers"),
    ];

    #[test]
    fn each_function_needs_the_secrets_and_peers_it_uses_and_reads_no_other() {
        let config = Config::from_env_strict(&env_of(FULL), Function::TypingExpiry).unwrap();
        assert_eq!(config.amojo_url, DEFAULT_AMOJO_URL);
        assert_eq!(config.chat_service_url.as_deref(), Some("https://chat.example/hooks"));
        // (function, the variables it needs beyond the common ones, the ones it never reads)
        let cases = [
            (
                Function::KommoWebhook,
                &["KOMMO_INTEGRATION_SECRET"][..],
                &["CHAT_SERVICE_URL", "CHAT_SERVICE_SECRET"][..],
            ),
            (Function::ChatCallback, &["CHAT_SERVICE_SECRET"], &["KOMMO_INTEGRATION_SECRET", "CHAT_SERVICE_URL"]),
            (Function::TypingExpiry, &["CHAT_SERVICE_SECRET", "CHAT_SERVICE_URL"], &["KOMMO_INTEGRATION_SECRET"]),
        ];
        for (function, needed, unread) in cases {
            let common = ["KOMMO_CHANNEL_ID", "KOMMO_CHANNEL_SECRET", "TABLE_NAME", "TIMER_QUEUE_URL"];
            for missing in common.iter().chain(needed) {
                let partial: Vec<_> = FULL.iter().copied().filter(|(k, _)| k != missing).collect();
                let error = Config::from_env_strict(&env_of(&partial), function).unwrap_err();
                assert_eq!(error.variable, *missing, "{function:?}");
            }
            // What it does not use may be missing, or even malformed: it is never read.
            let mut without: Vec<_> = FULL.iter().copied().filter(|(k, _)| !unread.contains(k)).collect();
            without.extend(unread.iter().map(|name| (*name, "not read")));
            let config = Config::from_env_strict(&env_of(&without), function).unwrap();
            assert_eq!(config.integration_secret.is_some(), !unread.contains(&"KOMMO_INTEGRATION_SECRET"));
            assert_eq!(config.chat_service_secret.is_some(), !unread.contains(&"CHAT_SERVICE_SECRET"));
            assert_eq!(config.chat_service_url.is_some(), !unread.contains(&"CHAT_SERVICE_URL"));
        }
    }

    #[test]
    fn the_amojo_url_must_be_an_origin() {
        // (given, what the bridge uses; None: refused at start, naming the variable)
        let cases = [
            ("https://amojo.kommo.com", Some("https://amojo.kommo.com")),
            ("https://amojo.kommo.com/", Some("https://amojo.kommo.com")),
            ("https://amojo.amocrm.ru", Some("https://amojo.amocrm.ru")),
            ("http://127.0.0.1:8080", Some("http://127.0.0.1:8080")),
            ("http://[::1]:8080", Some("http://[::1]:8080")),
            ("https://amojo.kommo.com/v2", None),
            ("https://amojo.kommo.com/v2/origin/custom", None),
            ("https://amojo.kommo.com?x=1", None),
            ("https://amojo.kommo.com#x", None),
            ("https://user@amojo.kommo.com", None),
            ("https://amojo.kommo.com:port", None),
            ("https://amojo.kommo.com:", None),
            ("https://", None),
            ("https://amojo kommo.com", None),
            ("amojo.kommo.com", None),
            ("http://", None),
            ("ftp://amojo.kommo.com", None),
        ];
        for (given, used) in cases {
            let mut env: Vec<_> = FULL.to_vec();
            env.push(("KOMMO_AMOJO_URL", given));
            let config = Config::from_env_strict(&env_of(&env), Function::ChatCallback);
            match used {
                Some(url) => assert_eq!(config.unwrap().amojo_url, url, "{given}"),
                None => assert_eq!(config.unwrap_err().variable, "KOMMO_AMOJO_URL", "{given}"),
            }
        }
    }

    #[test]
    fn malformed_values_are_refused_by_name() {
        let mut bad: Vec<_> = FULL.to_vec();
        bad.push(("CHAT_SERVICE_SECRET", "plain-text"));
        let env = env_of(&bad);
        assert_eq!(Config::from_env_strict(&env, Function::ChatCallback).unwrap_err().variable, "CHAT_SERVICE_SECRET");
        assert_eq!(port(&env_of(&[("PORT", "http")])).unwrap_err().variable, "PORT");
        assert_eq!(port(&env_of(&[])).unwrap(), 3000);
        let env = env_of(&[("RETRY_MAX_ATTEMPTS", "0")]);
        assert_eq!(Config::from_env_local(&env, "http://x").unwrap_err().variable, "RETRY_MAX_ATTEMPTS");
        // A URL that cannot be called is refused at start, not at the first event.
        for bad in [
            "http://",
            "https://",
            "http:///path",
            "https://chat example/hooks",
            "https://chat.example/a b",
            "https://chat.example/a\tb",
            "http://:8080/x",
            "https://chat.example:port/x",
            "chat.example/hooks",
        ] {
            let mut env: Vec<_> = FULL.iter().copied().filter(|(name, _)| *name != "CHAT_SERVICE_URL").collect();
            env.push(("CHAT_SERVICE_URL", bad));
            let refused = Config::from_env_strict(&env_of(&env), Function::TypingExpiry).unwrap_err();
            assert_eq!(refused.variable, "CHAT_SERVICE_URL", "{bad:?}");
        }
        let mut env: Vec<_> = FULL.iter().copied().filter(|(name, _)| *name != "CHAT_SERVICE_URL").collect();
        env.push(("CHAT_SERVICE_URL", "https://chat.example:8443/hooks/kommo?tenant=7"));
        let accepted = Config::from_env_strict(&env_of(&env), Function::TypingExpiry).unwrap();
        assert_eq!(accepted.chat_service_url.as_deref(), Some("https://chat.example:8443/hooks/kommo?tenant=7"));
    }

    #[test]
    fn the_dev_server_runs_with_no_configuration_on_generated_secrets_and_the_sink() {
        let (config, defaults) = Config::from_env_local(&env_of(&[]), "http://127.0.0.1:3000").unwrap();
        assert_eq!(config.amojo_url, "http://127.0.0.1:3000/_sink/amojo");
        assert_eq!(config.chat_service_url.as_deref(), Some("http://127.0.0.1:3000/_sink/chat"));
        assert_eq!(config.channel_secret.expose().len(), 40);
        assert!(defaults.generated.contains(&"CHAT_SERVICE_SECRET"));
        assert!(config.dynamodb_endpoint.is_none());
        assert!(!format!("{config:?}").contains(config.channel_secret.expose()));
    }

    #[test]
    fn a_scope_belongs_to_this_channel_only_with_an_account_after_it() {
        let config = Config::from_env_strict(&env_of(FULL), Function::KommoWebhook).unwrap();
        assert_eq!(config.account_of_scope("chan_acc-1").ok(), Some("acc-1"));
        for (scope, status) in [
            ("other_acc-1", 404),
            ("channel_acc", 404),
            ("chan_", 400),
            ("chan_acc-1/extra/segment", 400),
            ("chan_../x", 400),
            ("chan_acc?x=1", 400),
            ("chan_acc#x", 400),
            ("chan_acc#msg#1", 400),
        ] {
            assert_eq!(config.account_of_scope(scope).unwrap_err().status, status, "{scope}");
        }
    }

    #[test]
    fn kommo_ui_origins_match_one_label_or_a_port() {
        let (config, _) = Config::from_env_local(&env_of(&[]), "http://x").unwrap();
        for allowed in
            ["https://acme.kommo.com", "https://acme.amocrm.ru", "http://localhost:8080", "http://127.0.0.1:3000"]
        {
            assert!(config.ui_origin_allowed(allowed), "{allowed}");
        }
        for refused in [
            "https://kommo.com",
            "https://evil.com/.kommo.com",
            "https://a.b.kommo.com",
            "http://acme.kommo.com",
            "null",
        ] {
            assert!(!config.ui_origin_allowed(refused), "{refused}");
        }
        let strict = Config::from_env_strict(&env_of(FULL), Function::KommoWebhook).unwrap();
        assert!(!strict.ui_origin_allowed("http://localhost:8080"), "deployed: Kommo's domains only by default");
    }

    #[test]
    fn the_platform_chooses_amojos_default_origin() {
        // (KOMMO_PLATFORM, KOMMO_AMOJO_URL, the origin used; None: refused naming the platform)
        let cases = [
            (None, None, Some(("https://amojo.kommo.com", Platform::Kommo))),
            (Some("kommo"), None, Some(("https://amojo.kommo.com", Platform::Kommo))),
            (Some("amocrm"), None, Some(("https://amojo.amocrm.ru", Platform::AmoCrm))),
            (Some("AmoCRM"), Some("https://amojo.amocrm.com"), Some(("https://amojo.amocrm.com", Platform::AmoCrm))),
            (Some("bitrix"), None, None),
        ];
        for (platform, amojo, expected) in cases {
            let mut env: Vec<_> = FULL.to_vec();
            env.extend(platform.map(|p| ("KOMMO_PLATFORM", p)));
            env.extend(amojo.map(|url| ("KOMMO_AMOJO_URL", url)));
            let config = Config::from_env_strict(&env_of(&env), Function::ChatCallback);
            match expected {
                Some((url, platform)) => {
                    let config = config.unwrap();
                    assert_eq!((config.amojo_url.as_str(), config.platform), (url, platform));
                }
                None => assert_eq!(config.unwrap_err().variable, "KOMMO_PLATFORM"),
            }
        }
    }

    #[test]
    fn queued_work_reads_the_install_secrets_only_with_installs() {
        const KEY: &str = "5f0e1d2c3b4a59687766554433221100ffeeddccbbaa99887766554433221100";
        let config = Config::from_env_strict(&env_of(FULL), Function::TypingExpiry).unwrap();
        assert!(config.installs.is_none() && config.integration_secret.is_none());
        let mut env: Vec<_> = FULL.to_vec();
        env.extend([
            ("KOMMO_CLIENT_ID", "client-1"),
            ("KOMMO_REDIRECT_URI", "https://bridge.example/oauth"),
            ("KOMMO_TOKEN_KEY", KEY),
        ]);
        let config = Config::from_env_strict(&env_of(&env), Function::TypingExpiry).unwrap();
        assert!(config.installs.is_some() && config.integration_secret.is_some());
        let without_key: Vec<_> = env.iter().copied().filter(|(name, _)| *name != "KOMMO_TOKEN_KEY").collect();
        assert_eq!(
            Config::from_env_strict(&env_of(&without_key), Function::TypingExpiry).unwrap_err().variable,
            "KOMMO_TOKEN_KEY"
        );
        let chat = Config::from_env_strict(&env_of(&env), Function::ChatCallback).unwrap();
        assert!(chat.installs.is_none() && chat.integration_secret.is_none());
    }

    #[test]
    fn identities_origins_and_keys_are_checked_at_start_and_refused_by_name() {
        const KEY: &str = "5f0e1d2c3b4a59687766554433221100ffeeddccbbaa99887766554433221100";
        let installs = [
            ("KOMMO_CLIENT_ID", "client-1"),
            ("KOMMO_REDIRECT_URI", "https://bridge.example/oauth"),
            ("KOMMO_TOKEN_KEY", KEY),
        ];
        // (variable, value; None: accepted, else refused naming the variable, for this reason)
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("KOMMO_CHANNEL_ID", "f90ba33d-c9d9-4036-86f4-d5c1c8a0d7d1", None),
            ("KOMMO_CHANNEL_ID", "chan/../x", Some("A-Z a-z 0-9")),
            ("KOMMO_CHANNEL_ID", "chan#1", Some("A-Z a-z 0-9")),
            ("KOMMO_CHANNEL_ID", "chan 1", Some("A-Z a-z 0-9")),
            ("KOMMO_CHANNEL_ID", "..", Some("A-Z a-z 0-9")),
            ("KOMMO_CHANNEL_ID", &"c".repeat(129), Some("1 to 128")),
            ("KOMMO_REDIRECT_URI", "https://bridge.example/kommo/oauth/callback", None),
            ("KOMMO_REDIRECT_URI", "http://127.0.0.1:3000/kommo/oauth/callback", None),
            ("KOMMO_REDIRECT_URI", "https:///kommo/oauth/callback", Some("with a host")),
            ("KOMMO_REDIRECT_URI", "https://", Some("with a host")),
            ("KOMMO_REDIRECT_URI", "https://bridge example/oauth", Some("with a host")),
            ("KOMMO_REDIRECT_URI", "bridge.example/oauth", Some("with a host")),
            ("KOMMO_UI_ORIGINS", "https://*.kommo.com, https://acme.amocrm.ru", None),
            ("KOMMO_UI_ORIGINS", "http://localhost:*", None),
            ("KOMMO_UI_ORIGINS", "*", Some("not an origin")),
            ("KOMMO_UI_ORIGINS", "https://*", Some("wildcard")),
            ("KOMMO_UI_ORIGINS", "https://*.com", Some("wider than one label")),
            ("KOMMO_UI_ORIGINS", "https://*.kommo.com,https://*.com", Some("wider than one label")),
            ("KOMMO_UI_ORIGINS", "https://acme*.kommo.com", Some("wildcard")),
            ("KOMMO_UI_ORIGINS", "https://*.*.kommo.com", Some("more than one wildcard")),
            ("KOMMO_UI_ORIGINS", "https://*:*", Some("more than one wildcard")),
            ("KOMMO_UI_ORIGINS", "https://acme.kommo.com/path", Some("not an origin")),
            ("KOMMO_UI_ORIGINS", "ftp://*.kommo.com", Some("not an origin")),
            ("KOMMO_ACCOUNTS", "31000001:af99,31000002:bc11", None),
            ("KOMMO_ACCOUNTS", "31000001:af99,31000001:bc11", Some("31000001 twice")),
            ("KOMMO_ACCOUNTS", "31000001:af99, 31000002:af99", Some("af99 twice")),
            ("KOMMO_TOKEN_KEY", &"0".repeat(64), Some("one byte repeated")),
            ("KOMMO_TOKEN_KEY", &"ab".repeat(32), Some("one byte repeated")),
            ("KOMMO_TOKEN_KEY", &"aB".repeat(32), Some("one byte repeated")),
            ("KOMMO_TOKEN_KEY", &"abcd".repeat(16), None),
        ];
        for (variable, value, refused) in cases {
            let mut env: Vec<_> = FULL.iter().chain(&installs).copied().filter(|(k, _)| k != variable).collect();
            env.push((variable, value));
            // Deployed, and the dev server given the same value: both refuse it.
            let strict = Config::from_env_strict(&env_of(&env), Function::KommoWebhook).map(drop);
            let local = Config::from_env_local(&env_of(&env), "http://127.0.0.1:3000").map(drop);
            for outcome in [strict, local] {
                match refused {
                    None => assert_eq!(outcome, Ok(()), "{variable}={value}"),
                    Some(reason) => {
                        let error = outcome.expect_err(&format!("{variable}={value} is refused"));
                        assert_eq!(error.variable, *variable, "{value}");
                        assert!(error.problem.contains(reason), "{variable}={value}: {}", error.problem);
                    }
                }
            }
        }
    }

    #[test]
    fn accounts_switches_and_windows_are_read_or_refused_by_name() {
        let mut env: Vec<_> = FULL.to_vec();
        env.extend([("KOMMO_ACCOUNTS", "31000001:af99, 31000002:bc11"), ("FORWARD_READ_RECEIPTS", "off")]);
        let config = Config::from_env_strict(&env_of(&env), Function::KommoWebhook).unwrap();
        assert_eq!(config.scope_of_account("31000002").as_deref(), Some("chan_bc11"));
        assert_eq!(config.scope_of_account("1"), None);
        assert!(!config.privacy.forward_read_receipts && config.privacy.forward_manager_typing);
        assert_eq!((config.presence.window_ms, config.presence.grace_ms), (60_000, 5000));
        for (name, bad) in [
            ("KOMMO_ACCOUNTS", "31000001"),
            ("KOMMO_ACCOUNTS", "abc:def"),
            ("KOMMO_ACCOUNTS", "31000001:acc/x"),
            ("KOMMO_ACCOUNTS", "31000001:acc#1"),
            ("FORWARD_MANAGER_TYPING", "maybe"),
            ("PRESENCE_WINDOW_S", "0"),
        ] {
            let mut env: Vec<_> = FULL.to_vec();
            env.push((name, bad));
            assert_eq!(Config::from_env_strict(&env_of(&env), Function::KommoWebhook).unwrap_err().variable, name);
        }
    }
}
