//! The client of Kommo's OAuth and REST API over HTTPS, on the account's own host
//! (`https://{subdomain}.kommo.com`, checked by `crate::rules::install::kommo_account_host`
//! before it gets here). `KOMMO_API_URL` (tests, local use) replaces `https://{host}` for every
//! call, and then names the host in `X-Kommo-Account-Host`, so a fake can check that the call
//! was meant for the account the installation named.
//!
//! A code works once: a call that may have reached Kommo is never repeated, or its answer's
//! tokens would be lost for good and the next try refused. Only a call that surely did not
//! arrive (the connection refused) or that Kommo turned away unread (429) is tried again: a
//! 429 whose `Retry-After` asks for at most [`INLINE_RATE_LIMIT_WAIT`] is waited out once here,
//! a longer one is returned as [`KommoRestError::RateLimited`] for queued work to wait out.

use std::time::Duration;

use async_trait::async_trait;

use super::outbound::peer_text;
use crate::models::oauth::{KommoAccount, KommoUser, KommoUsersPage, TokenRequest, Tokens};
use crate::ports::accounts::{KommoRest, KommoRestError};
use crate::signing::Secret;

/// Per-call bound: the widget's install webhook is answered by Kommo within 3 s, and a person
/// waits on the page otherwise.
pub const KOMMO_REST_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_ATTEMPTS: u32 = 2;
/// The longest `Retry-After` a call waits out itself (Kommo limits each account to about 7
/// requests a second, so its waits are short); longer ones go back to the caller.
pub const INLINE_RATE_LIMIT_WAIT: Duration = Duration::from_secs(2);
/// Users per page (Kommo's most), and the most pages read: 50,000 users.
const USERS_PER_PAGE: u32 = 250;
const MAX_USER_PAGES: u32 = 200;

pub struct KommoRestClient {
    http: reqwest::Client,
    client_id: String,
    client_secret: Secret,
    redirect_uri: String,
    /// `KOMMO_API_URL`: replaces `https://{host}` when set.
    base_override: Option<String>,
}

impl KommoRestClient {
    pub fn new(
        http: reqwest::Client,
        client_id: &str,
        client_secret: Secret,
        redirect_uri: &str,
        base_override: Option<&str>,
    ) -> Self {
        Self {
            http,
            client_id: client_id.to_owned(),
            client_secret,
            redirect_uri: redirect_uri.to_owned(),
            base_override: base_override.map(|base| base.trim_end_matches('/').to_owned()),
        }
    }

    fn request(&self, method: reqwest::Method, host: &str, path: &str) -> reqwest::RequestBuilder {
        let url = match &self.base_override {
            Some(base) => format!("{base}{path}"),
            None => format!("https://{host}{path}"),
        };
        let request = self.http.request(method, url).timeout(KOMMO_REST_TIMEOUT);
        match &self.base_override {
            Some(_) => request.header("X-Kommo-Account-Host", host),
            None => request,
        }
    }

    async fn send(&self, build: impl Fn() -> reqwest::RequestBuilder) -> Result<bytes::Bytes, KommoRestError> {
        let mut attempt = 0;
        let mut waited_out_rate_limit = false;
        loop {
            attempt += 1;
            let response = match build().send().await {
                Ok(response) => response,
                // Refused before anything was sent: safe to try once more.
                Err(error) if error.is_connect() && attempt < CONNECT_ATTEMPTS => continue,
                Err(error) => {
                    let what = if error.is_timeout() { "timed out" } else { "connection failed" };
                    return Err(KommoRestError::Unavailable(what.into()));
                }
            };
            let status = response.status().as_u16();
            let retry_after = retry_after(response.headers());
            let body = response.bytes().await.map_err(|e| KommoRestError::Unavailable(peer_text(&e.to_string())))?;
            return match status {
                200..=299 => Ok(body),
                429 => match retry_after {
                    // Turned away unread: waited out once when the wait is short.
                    Some(wait) if wait <= INLINE_RATE_LIMIT_WAIT && !waited_out_rate_limit => {
                        waited_out_rate_limit = true;
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    _ => Err(KommoRestError::RateLimited { retry_after_ms: retry_after.map(|d| d.as_millis() as u64) }),
                },
                400..=499 => Err(KommoRestError::Refused { status, detail: refusal_detail(&body) }),
                _ => Err(KommoRestError::Unavailable(format!("HTTP {status}"))),
            };
        }
    }

    async fn token(&self, host: &str, request: TokenRequest) -> Result<Tokens, KommoRestError> {
        let body =
            self.send(|| self.request(reqwest::Method::POST, host, "/oauth2/access_token").json(&request)).await?;
        serde_json::from_slice(&body).map_err(|e| KommoRestError::InvalidResponse(peer_text(&e.to_string())))
    }

    fn token_request(&self, grant_type: &str) -> TokenRequest {
        TokenRequest {
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.expose().to_owned(),
            grant_type: grant_type.to_owned(),
            code: None,
            refresh_token: None,
            redirect_uri: self.redirect_uri.clone(),
        }
    }
}

#[async_trait]
impl KommoRest for KommoRestClient {
    async fn exchange_code(&self, host: &str, code: &str) -> Result<Tokens, KommoRestError> {
        let request = TokenRequest { code: Some(code.to_owned()), ..self.token_request("authorization_code") };
        self.token(host, request).await
    }

    async fn refresh(&self, host: &str, refresh_token: &str) -> Result<Tokens, KommoRestError> {
        let request =
            TokenRequest { refresh_token: Some(refresh_token.to_owned()), ..self.token_request("refresh_token") };
        self.token(host, request).await
    }

    async fn account(&self, host: &str, access_token: &str) -> Result<KommoAccount, KommoRestError> {
        let body = self
            .send(|| {
                self.request(reqwest::Method::GET, host, "/api/v4/account?with=amojo_id").bearer_auth(access_token)
            })
            .await?;
        serde_json::from_slice(&body).map_err(|e| KommoRestError::InvalidResponse(peer_text(&e.to_string())))
    }

    async fn users(&self, host: &str, access_token: &str) -> Result<Vec<KommoUser>, KommoRestError> {
        let mut users = Vec::new();
        for page in 1..=MAX_USER_PAGES {
            let path = format!("/api/v4/users?with=amojo_id&limit={USERS_PER_PAGE}&page={page}");
            let body = self.send(|| self.request(reqwest::Method::GET, host, &path).bearer_auth(access_token)).await?;
            // Past the last page Kommo answers 204 with no body.
            if body.is_empty() {
                break;
            }
            let listed: KommoUsersPage = serde_json::from_slice(&body)
                .map_err(|e| KommoRestError::InvalidResponse(peer_text(&e.to_string())))?;
            let last = listed.embedded.users.len() < USERS_PER_PAGE as usize
                || listed.page_count.is_some_and(|count| page >= count);
            users.extend(listed.embedded.users);
            if last {
                break;
            }
        }
        Ok(users)
    }
}

/// A `Retry-After` in seconds (Kommo's form; an HTTP date is not waited for), at most an hour.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds.min(3600)))
}

/// Kommo's words for a refusal (`hint`, else `detail`, else `title`), kept as [`peer_text`]
/// keeps them: short, on one line, escaped.
fn refusal_detail(body: &[u8]) -> String {
    let parsed: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let text = ["hint", "detail", "title"].iter().find_map(|key| parsed[*key].as_str()).unwrap_or("no reason given");
    peer_text(text)
}
