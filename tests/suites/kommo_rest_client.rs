//! The Kommo OAuth and REST client against the independent fake Kommo (tests/fakes/fake_kommo.py),
//! which issues codes once, rotates refresh tokens and checks the account host each call names.

mod support;

use serde_json::json;
use shared::adapters::kommo_rest::KommoRestClient;
use shared::ports::accounts::{KommoRest, KommoRestError};
use shared::signing::Secret;
use support::{Fake, unique};

const REDIRECT_URI: &str = "https://bridge.example.com/kommo/oauth/callback";

fn client(kommo: &Fake, client_id: &str, secret: &str) -> KommoRestClient {
    let http = shared::adapters::outbound::http_client(std::time::Duration::from_secs(5));
    KommoRestClient::new(http, client_id, Secret::new(secret), REDIRECT_URI, Some(&kommo.url))
}

/// An account in the fake, and a code issued for it: (host, code, account as the fake has it).
async fn installing(kommo: &Fake, client_id: &str) -> (String, String, serde_json::Value) {
    let subdomain = unique("acme").to_lowercase().replace('_', "-");
    let account = kommo.admin_post("accounts", json!({"subdomain": subdomain})).await;
    let code = kommo
        .admin_post("codes", json!({"subdomain": subdomain, "client_id": client_id, "redirect_uri": REDIRECT_URI}))
        .await;
    (code["referer"].as_str().unwrap().to_owned(), code["code"].as_str().unwrap().to_owned(), account)
}

#[tokio::test]
async fn a_code_becomes_tokens_once_the_account_is_read_and_refresh_tokens_rotate() {
    let kommo = Fake::kommo();
    let client_id = unique("client");
    let rest = client(&kommo, &client_id, &kommo.secret);
    let (host, code, account) = installing(&kommo, &client_id).await;

    let tokens = rest.exchange_code(&host, &code).await.unwrap();
    assert_eq!(tokens.expires_in, 86_400);
    let read = rest.account(&host, &tokens.access_token).await.unwrap();
    assert_eq!(read.id, account["id"].as_u64().unwrap());
    assert_eq!(read.amojo_id, account["amojo_id"].as_str().unwrap());

    let replayed = rest.exchange_code(&host, &code).await;
    assert!(matches!(replayed, Err(KommoRestError::Refused { status: 400, .. })), "{replayed:?}");

    let refreshed = rest.refresh(&host, &tokens.refresh_token).await.unwrap();
    assert_ne!(refreshed.refresh_token, tokens.refresh_token);
    // "The old refresh token will still be functional until you use the new one."
    let again = rest.refresh(&host, &tokens.refresh_token).await.unwrap();
    assert!(rest.account(&host, &again.access_token).await.is_ok());
    let newest = rest.refresh(&host, &refreshed.refresh_token).await.unwrap();
    let stale = rest.refresh(&host, &tokens.refresh_token).await;
    assert!(
        matches!(stale, Err(KommoRestError::Refused { status: 400, .. })),
        "retired once the new one is used: {stale:?}"
    );
    assert!(rest.account(&host, &newest.access_token).await.is_ok());
}

#[tokio::test]
async fn another_accounts_host_a_wrong_secret_and_a_dead_token_are_refused() {
    let kommo = Fake::kommo();
    let client_id = unique("client");
    let rest = client(&kommo, &client_id, &kommo.secret);
    let (host, code, _) = installing(&kommo, &client_id).await;
    let (other_host, _, _) = installing(&kommo, &client_id).await;

    // The code is the first account's: sent for another account's host, the fake refuses it.
    let misdirected = rest.exchange_code(&other_host, &code).await;
    assert!(matches!(misdirected, Err(KommoRestError::Refused { .. })), "{misdirected:?}");
    let wrong_secret = client(&kommo, &client_id, "not-the-secret").exchange_code(&host, &code).await;
    assert!(matches!(wrong_secret, Err(KommoRestError::Refused { .. })), "{wrong_secret:?}");
    let tokens = rest.exchange_code(&host, &code).await.unwrap();
    let unauthorized = rest.account(&host, "not-a-token").await;
    assert!(matches!(unauthorized, Err(KommoRestError::Refused { status: 401, .. })), "{unauthorized:?}");
    assert!(rest.account(&other_host, &tokens.access_token).await.is_err(), "a token works on its own account only");
    // What the fake recorded never holds a secret.
    let calls = kommo.calls("").await;
    let recorded = serde_json::to_string(&[calls, kommo.calls(host.split('.').next().unwrap()).await]).unwrap();
    for secret in [kommo.secret.as_str(), code.as_str(), tokens.access_token.as_str(), tokens.refresh_token.as_str()] {
        assert!(!recorded.contains(secret), "a secret in the fake's record");
    }
}

#[tokio::test]
async fn kommo_unreachable_is_unavailable_not_refused() {
    let rest = KommoRestClient::new(
        shared::adapters::outbound::http_client(std::time::Duration::from_secs(2)),
        "client",
        Secret::new("secret"),
        REDIRECT_URI,
        Some("http://127.0.0.1:9"),
    );
    let outcome = rest.exchange_code("acme.kommo.com", "code").await;
    assert!(matches!(outcome, Err(KommoRestError::Unavailable(_))), "{outcome:?}");
}

#[tokio::test]
async fn every_user_of_the_account_is_read_with_their_chat_api_id_across_pages() {
    let kommo = Fake::kommo();
    let client_id = unique("client");
    let rest = client(&kommo, &client_id, &kommo.secret);
    let subdomain = unique("team").to_lowercase().replace('_', "-");
    // More users than one page holds (250), so the reader must follow the pages.
    let users: Vec<_> = (0..260).map(|i| json!({"name": format!("Manager {i}")})).collect();
    let account = kommo.admin_post("accounts", json!({"subdomain": subdomain, "users": users})).await;
    let code = kommo
        .admin_post("codes", json!({"subdomain": subdomain, "client_id": client_id, "redirect_uri": REDIRECT_URI}))
        .await;
    let host = code["referer"].as_str().unwrap();
    let tokens = rest.exchange_code(host, code["code"].as_str().unwrap()).await.unwrap();
    let read = rest.users(host, &tokens.access_token).await.unwrap();
    assert_eq!(read.len(), 260);
    let expected: Vec<(u64, String)> = account["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["id"].as_u64().unwrap(), u["amojo_id"].as_str().unwrap().to_owned()))
        .collect();
    let got: Vec<(u64, String)> = read.iter().map(|u| (u.id, u.amojo_id.clone().unwrap())).collect();
    assert_eq!(got, expected);
    assert!(matches!(rest.users(host, "not-a-token").await, Err(KommoRestError::Refused { status: 401, .. })));
}

/// Kommo answers 429 past about 7 requests a second: a short `Retry-After` is waited out once
/// (the call was turned away unread, so repeating it spends nothing), a longer one goes back
/// to the caller with the wait it asked for.
#[tokio::test]
async fn a_429_is_waited_out_when_short_and_handed_back_with_its_wait_when_long() {
    let kommo = Fake::kommo();
    let client_id = unique("client");
    let rest = client(&kommo, &client_id, &kommo.secret);
    let (host, code, account) = installing(&kommo, &client_id).await;
    let subdomain = account["subdomain"].as_str().unwrap().to_owned();
    let tokens = rest.exchange_code(&host, &code).await.unwrap();
    let limited = |seconds: &str| {
        json!({"status": 429, "headers": {"Retry-After": seconds},
                                         "body": {"title": "Too Many Requests", "status": 429}})
    };
    kommo
        .admin_post("script", json!({"scope": subdomain, "match": "/api/v4/account", "responses": [limited("1")]}))
        .await;
    let started = std::time::Instant::now();
    let read = rest.account(&host, &tokens.access_token).await;
    assert!(read.is_ok(), "{read:?}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(900), "the second waited out");
    kommo
        .admin_post("script", json!({"scope": subdomain, "match": "/api/v4/account", "responses": [limited("30")]}))
        .await;
    let started = std::time::Instant::now();
    let outcome = rest.account(&host, &tokens.access_token).await;
    assert_eq!(outcome.unwrap_err(), KommoRestError::RateLimited { retry_after_ms: Some(30_000) });
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "not slept inline");
    // Twice limited in a row: waited out once, then handed back.
    kommo
        .admin_post(
            "script",
            json!({"scope": subdomain, "match": "/api/v4/account", "responses": [limited("1"), limited("1")]}),
        )
        .await;
    let outcome = rest.account(&host, &tokens.access_token).await;
    assert_eq!(outcome.unwrap_err(), KommoRestError::RateLimited { retry_after_ms: Some(1000) });
}
