//! `bridge-cli sources list|create`: the integration's sources in an account installed through
//! Kommo's OAuth. The bridge creates a source on the first message naming it; these let an
//! operator see them and create one ahead, with a readable name (the first message would name
//! it by its external id).

use std::sync::Arc;

use shared::adapters::dynamo::DynamoStore;
use shared::adapters::kommo_crm::KommoCrmClient;
use shared::adapters::kommo_rest::{KOMMO_REST_TIMEOUT, KommoRestClient};
use shared::adapters::sealer::AesGcmSealer;
use shared::flows::client_profiles::{CrmAccess, CrmFailure};
use shared::flows::installs::AccountTokens;
use shared::flows::sources::SourceRegistry;
use shared::signing::Secret;
use shared::time::SystemClock;

use crate::args::Options;
use crate::{Failure, env, required_env};

/// Longest external id Kommo takes on a message's source.
const MAX_EXTERNAL_ID: usize = 40;

pub async fn list(options: &Options) -> Result<(), Failure> {
    let account_id = account_id(options)?;
    let (in_kommo, remembered) = registry()?.list_for_account(account_id).await.map_err(failed)?;
    println!("{:<42} {:<12} {:<12} name", "external_id", "kommo id", "bridge");
    for source in &in_kommo {
        let known = remembered.iter().any(|known| known.external_id == source.external_id);
        let bridge = if known { "remembered" } else { "-" };
        println!("{:<42} {:<12} {:<12} {}", source.external_id, source.id, bridge, source.name.escape_debug());
    }
    for known in remembered.iter().filter(|known| !in_kommo.iter().any(|s| s.external_id == known.external_id)) {
        // Deleted in Kommo since: the next message naming it does not create it again.
        let (id, name) = (known.kommo_source_id, known.name.escape_debug());
        println!("{:<42} {:<12} {:<12} {name}", known.external_id, id, "not in Kommo");
    }
    println!("{} source(s) in Kommo, {} remembered", in_kommo.len(), remembered.len());
    Ok(())
}

pub async fn create(options: &Options) -> Result<(), Failure> {
    let account_id = account_id(options)?;
    let external_id = options.required("external-id")?;
    if external_id.len() > MAX_EXTERNAL_ID || !external_id.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(Failure::Usage(format!("--external-id must be 1 to {MAX_EXTERNAL_ID} printable ASCII characters")));
    }
    let name = options.non_empty("name")?.unwrap_or(external_id);
    let source = registry()?.ensure_for_account(account_id, external_id, name).await.map_err(failed)?;
    println!("source {:?}: Kommo id {}, named {:?}", source.external_id, source.kommo_source_id, source.name);
    Ok(())
}

fn account_id(options: &Options) -> Result<u64, Failure> {
    options.numeric("kommo-account-id")?.ok_or_else(|| Failure::Usage("--kommo-account-id is required".into()))
}

fn failed(failure: CrmFailure) -> Failure {
    Failure::Failed(format!("sources: {failure}"))
}

/// The sources of the deployment's table, with Kommo's REST API as the bridge calls it.
fn registry() -> Result<SourceRegistry, Failure> {
    let table = required_env("TABLE_NAME")?;
    let client_id = required_env("KOMMO_CLIENT_ID")?;
    let redirect_uri = required_env("KOMMO_REDIRECT_URI")?;
    let client_secret = Secret::new(required_env("KOMMO_INTEGRATION_SECRET")?);
    let mut key = [0u8; 32];
    hex::decode_to_slice(required_env("KOMMO_TOKEN_KEY")?, &mut key)
        .map_err(|_| Failure::Config("KOMMO_TOKEN_KEY must be 64 hex digits".into()))?;
    let api_url = env("KOMMO_API_URL");
    let store = Arc::new(DynamoStore::new(
        shared::adapters::dynamo::client_from_env(env("DYNAMODB_ENDPOINT").as_deref()),
        table,
    ));
    let http = shared::adapters::outbound::http_client(KOMMO_REST_TIMEOUT);
    let rest = KommoRestClient::new(http.clone(), &client_id, client_secret, &redirect_uri, api_url.as_deref());
    let tokens = AccountTokens {
        rest: Arc::new(rest),
        accounts: store.clone(),
        sealer: Arc::new(AesGcmSealer::new(&key)),
        clock: Arc::new(SystemClock),
    };
    let crm = Arc::new(KommoCrmClient::new(http, api_url.as_deref()));
    let access = CrmAccess { accounts: store.clone(), tokens, crm };
    Ok(SourceRegistry { access, known: store, clock: Arc::new(SystemClock) })
}
