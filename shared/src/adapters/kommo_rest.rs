//! The client of Kommo's OAuth and REST API over HTTPS, on the account's own host
//! (`https://{subdomain}.kommo.com`, checked by `crate::rules::install::kommo_account_host`
//! before it gets here). `KOMMO_API_URL` (tests, local use) replaces `https://{host}` for every
//! call, and then names the host in `X-Kommo-Account-Host`, so a fake can check that the call
//! was meant for the account the installation named.
//!
//! Codes and refresh tokens work once (Kommo rotates refresh tokens): a call that may have
//! reached Kommo is never repeated, or its answer's tokens would be lost for good and the next
//! try refused. Only a call that surely did not arrive (the connection refused) is tried again.

use std::time::Duration;

use async_trait::async_trait;

use crate::models::oauth::{KommoAccount, KommoUser, KommoUsersPage, TokenRequest, Tokens};
use crate::ports::accounts::{KommoRest, KommoRestError};
use crate::signing::Secret;

/// Per-call bound: the widget's install webhook is answered by Kommo within 3 s, and a person
/// waits on the page otherwise.
pub const KOMMO_REST_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_ATTEMPTS: u32 = 2;
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
        let response = loop {
            attempt += 1;
            match build().send().await {
                Ok(response) => break response,
                // Refused before anything was sent: safe to try once more.
                Err(error) if error.is_connect() && attempt < CONNECT_ATTEMPTS => continue,
                Err(error) => {
                    let what = if error.is_timeout() { "timed out" } else { "connection failed" };
                    return Err(KommoRestError::Unavailable(what.into()));
                }
            }
        };
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| KommoRestError::Unavailable(e.to_string()))?;
        match status {
            200..=299 => Ok(body),
            400..=499 if status != 429 => Err(KommoRestError::Refused { status, detail: refusal_detail(&body) }),
            _ => Err(KommoRestError::Unavailable(format!("HTTP {status}"))),
        }
    }

    async fn token(&self, host: &str, request: TokenRequest) -> Result<Tokens, KommoRestError> {
        let body =
            self.send(|| self.request(reqwest::Method::POST, host, "/oauth2/access_token").json(&request)).await?;
        serde_json::from_slice(&body).map_err(|e| KommoRestError::InvalidResponse(e.to_string()))
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
        serde_json::from_slice(&body).map_err(|e| KommoRestError::InvalidResponse(e.to_string()))
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
            let listed: KommoUsersPage =
                serde_json::from_slice(&body).map_err(|e| KommoRestError::InvalidResponse(e.to_string()))?;
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

/// Kommo's words for a refusal (`hint`, else `detail`, else `title`), short and on one line.
fn refusal_detail(body: &[u8]) -> String {
    let parsed: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let text = ["hint", "detail", "title"].iter().find_map(|key| parsed[*key].as_str()).unwrap_or("no reason given");
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}
