//! The client of Kommo's CRM REST API ([`KommoCrm`]) over HTTPS, on the account's own host, as
//! `super::kommo_rest` calls it: `KOMMO_API_URL` (tests, local use) replaces `https://{host}`
//! and then names the host in `X-Kommo-Account-Host`.
//!
//! One attempt per call: a 429 or a server fault comes back as [`CrmError::Unavailable`] with
//! Kommo's `Retry-After`, and the queued work that called waits it out (its retry is new work
//! due later, not a sleep here). Nothing here logs: the callers log outcomes, never a token or
//! a contact's details.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::outbound::retry_after;
use crate::ports::crm::{Contact, ContactChange, CrmError, CrmSource, FieldValue, KommoCrm};

/// Per-call bound: a piece of queued work makes at most a few of these.
pub const KOMMO_CRM_TIMEOUT: Duration = Duration::from_secs(10);
/// Sources per page when listing (an integration has at most 100).
const SOURCES_PER_PAGE: u32 = 250;

pub struct KommoCrmClient {
    http: reqwest::Client,
    /// `KOMMO_API_URL`: replaces `https://{host}` when set.
    base_override: Option<String>,
}

impl KommoCrmClient {
    pub fn new(http: reqwest::Client, base_override: Option<&str>) -> Self {
        Self { http, base_override: base_override.map(|base| base.trim_end_matches('/').to_owned()) }
    }

    fn request(&self, method: reqwest::Method, host: &str, path: &str, token: &str) -> reqwest::RequestBuilder {
        let url = match &self.base_override {
            Some(base) => format!("{base}{path}"),
            None => format!("https://{host}{path}"),
        };
        let request = self.http.request(method, url).timeout(KOMMO_CRM_TIMEOUT).bearer_auth(token);
        match &self.base_override {
            Some(_) => request.header("X-Kommo-Account-Host", host),
            None => request,
        }
    }

    /// Sends once; the body of a 2xx (empty for a 204).
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<bytes::Bytes, CrmError> {
        let response = request.send().await.map_err(|error| {
            let reason = if error.is_timeout() { "timed out" } else { "connection failed" };
            CrmError::Unavailable { reason: reason.into(), retry_after: None }
        })?;
        let status = response.status().as_u16();
        let hint = retry_after(response.headers());
        let body = response
            .bytes()
            .await
            .map_err(|_| CrmError::Unavailable { reason: "the answer was cut off".into(), retry_after: None })?;
        match status {
            200..=299 => Ok(body),
            401 => Err(CrmError::Unauthorized),
            429 => Err(CrmError::Unavailable { reason: "HTTP 429".into(), retry_after: hint }),
            400..=499 => Err(CrmError::Refused { status, detail: refusal_detail(&body) }),
            _ => Err(CrmError::Unavailable { reason: format!("HTTP {status}"), retry_after: hint }),
        }
    }
}

fn unreadable(error: serde_json::Error) -> CrmError {
    CrmError::InvalidResponse(error.to_string())
}

#[async_trait]
impl KommoCrm for KommoCrmClient {
    async fn contact_of_chat(&self, host: &str, token: &str, chat_id: &str) -> Result<Option<u64>, CrmError> {
        let path = format!("/api/v4/contacts/chats?chat_id={}", query_escape(chat_id));
        let body = self.send(self.request(reqwest::Method::GET, host, &path, token)).await?;
        // No link yet: Kommo's lists answer 204 with no body (or an empty list).
        if body.is_empty() {
            return Ok(None);
        }
        let links: Listed<ChatLinks> = serde_json::from_slice(&body).map_err(unreadable)?;
        Ok(links.embedded.chats.into_iter().find(|link| link.chat_id == chat_id).map(|link| link.contact_id))
    }

    async fn contact(&self, host: &str, token: &str, contact_id: u64) -> Result<Option<Contact>, CrmError> {
        let path = format!("/api/v4/contacts/{contact_id}");
        let body = match self.send(self.request(reqwest::Method::GET, host, &path, token)).await {
            Ok(body) if body.is_empty() => return Ok(None),
            Ok(body) => body,
            Err(CrmError::Refused { status: 404, .. }) => return Ok(None),
            Err(error) => return Err(error),
        };
        let wire: WireContact = serde_json::from_slice(&body).map_err(unreadable)?;
        Ok(Some(wire.into_contact()))
    }

    async fn update_contact(
        &self,
        host: &str,
        token: &str,
        contact_id: u64,
        change: &ContactChange,
    ) -> Result<(), CrmError> {
        let path = format!("/api/v4/contacts/{contact_id}");
        let body = ContactPatch::from(change);
        self.send(self.request(reqwest::Method::PATCH, host, &path, token).json(&body)).await?;
        Ok(())
    }

    async fn sources(&self, host: &str, token: &str) -> Result<Vec<CrmSource>, CrmError> {
        let path = format!("/api/v4/sources?limit={SOURCES_PER_PAGE}");
        let body = self.send(self.request(reqwest::Method::GET, host, &path, token)).await?;
        if body.is_empty() {
            return Ok(Vec::new());
        }
        let listed: Listed<Sources> = serde_json::from_slice(&body).map_err(unreadable)?;
        Ok(listed.embedded.sources.into_iter().map(WireSource::into_source).collect())
    }

    async fn create_source(
        &self,
        host: &str,
        token: &str,
        external_id: &str,
        name: &str,
    ) -> Result<CrmSource, CrmError> {
        let body = serde_json::json!([{"name": name, "external_id": external_id}]);
        let answer = self.send(self.request(reqwest::Method::POST, host, "/api/v4/sources", token).json(&body)).await?;
        let created: Listed<Sources> = serde_json::from_slice(&answer).map_err(unreadable)?;
        created
            .embedded
            .sources
            .into_iter()
            .map(WireSource::into_source)
            .find(|source| source.external_id == external_id)
            .ok_or_else(|| CrmError::InvalidResponse("the created source is not in the answer".into()))
    }
}

/// Kommo's HAL list: `{"_embedded": {...}}`.
#[derive(Deserialize)]
struct Listed<T> {
    #[serde(rename = "_embedded")]
    embedded: T,
}

#[derive(Deserialize)]
struct ChatLinks {
    #[serde(default)]
    chats: Vec<ChatLink>,
}

#[derive(Deserialize)]
struct ChatLink {
    chat_id: String,
    contact_id: u64,
}

#[derive(Deserialize)]
struct Sources {
    #[serde(default)]
    sources: Vec<WireSource>,
}

#[derive(Deserialize)]
struct WireSource {
    id: u64,
    #[serde(default)]
    name: Option<String>,
    external_id: String,
    #[serde(default)]
    pipeline_id: Option<u64>,
}

impl WireSource {
    fn into_source(self) -> CrmSource {
        CrmSource {
            id: self.id,
            external_id: self.external_id,
            name: self.name.unwrap_or_default(),
            pipeline_id: self.pipeline_id,
        }
    }
}

#[derive(Deserialize)]
struct WireContact {
    id: u64,
    #[serde(default)]
    name: Option<String>,
    /// `null` on a contact with no field filled.
    #[serde(default)]
    custom_fields_values: Option<Vec<WireField>>,
}

#[derive(Deserialize, Serialize)]
struct WireField {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    field_code: Option<String>,
    #[serde(default)]
    values: Vec<WireValue>,
}

#[derive(Deserialize, Serialize)]
struct WireValue {
    /// Text in a multitext field (other field kinds hold numbers or objects: skipped).
    #[serde(default)]
    value: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    enum_code: Option<String>,
}

impl WireContact {
    fn into_contact(self) -> Contact {
        let mut contact = Contact { id: self.id, name: self.name.unwrap_or_default(), ..Default::default() };
        for field in self.custom_fields_values.unwrap_or_default() {
            let values = field
                .values
                .into_iter()
                .filter_map(|value| {
                    let text = value.value.as_str()?.to_owned();
                    Some(FieldValue { value: text, enum_code: value.enum_code })
                })
                .collect();
            match field.field_code.as_deref() {
                Some("PHONE") => contact.phones = values,
                Some("EMAIL") => contact.emails = values,
                _ => {}
            }
        }
        contact
    }
}

/// The body of `PATCH /api/v4/contacts/{id}`: only what changes.
#[derive(Serialize)]
struct ContactPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    custom_fields_values: Vec<WireField>,
}

impl From<&ContactChange> for ContactPatch {
    fn from(change: &ContactChange) -> Self {
        let field = |code: &str, values: &[FieldValue]| WireField {
            field_code: Some(code.to_owned()),
            values: values
                .iter()
                .map(|v| WireValue { value: serde_json::Value::from(v.value.clone()), enum_code: v.enum_code.clone() })
                .collect(),
        };
        let mut custom_fields_values = Vec::new();
        if let Some(phones) = &change.phones {
            custom_fields_values.push(field("PHONE", phones));
        }
        if let Some(emails) = &change.emails {
            custom_fields_values.push(field("EMAIL", emails));
        }
        Self { name: change.name.clone(), custom_fields_values }
    }
}

/// A query value, percent-encoded (Kommo's chat ids are UUIDs; anything else is escaped).
fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (byte as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Kommo's words for a refusal (`hint`, else `detail`, else `title`), short and on one line.
fn refusal_detail(body: &[u8]) -> String {
    let parsed: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let text = ["hint", "detail", "title"].iter().find_map(|key| parsed[*key].as_str()).unwrap_or("no reason given");
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contact_change_sends_only_what_changes() {
        let change = ContactChange {
            name: Some("Adam".into()),
            phones: Some(vec![FieldValue { value: "+100".into(), enum_code: Some("WORK".into()) }]),
            emails: None,
        };
        let body = serde_json::to_value(ContactPatch::from(&change)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"name": "Adam", "custom_fields_values": [
                {"field_code": "PHONE", "values": [{"value": "+100", "enum_code": "WORK"}]}]})
        );
        let only_name = ContactChange { name: Some("Eve".into()), ..Default::default() };
        assert_eq!(serde_json::to_value(ContactPatch::from(&only_name)).unwrap(), serde_json::json!({"name": "Eve"}));
    }

    #[test]
    fn a_contact_is_read_with_its_phones_and_emails_and_nothing_else() {
        let wire: WireContact = serde_json::from_value(serde_json::json!({
            "id": 7, "name": "Client u-1", "custom_fields_values": [
                {"field_id": 1, "field_code": "PHONE", "values": [{"value": "+100", "enum_code": "MOB", "enum_id": 3}]},
                {"field_id": 2, "field_code": "POSITION", "values": [{"value": "CEO"}]},
                {"field_id": 3, "field_code": null, "values": [{"value": 12}]}]}))
        .unwrap();
        let contact = wire.into_contact();
        assert_eq!(contact.name, "Client u-1");
        assert_eq!(contact.phones, vec![FieldValue { value: "+100".into(), enum_code: Some("MOB".into()) }]);
        assert!(contact.emails.is_empty());
        let bare: WireContact =
            serde_json::from_value(serde_json::json!({"id": 8, "custom_fields_values": null})).unwrap();
        assert_eq!(bare.into_contact(), Contact { id: 8, ..Default::default() });
    }

    #[test]
    fn a_chat_id_is_escaped_in_the_query() {
        assert_eq!(query_escape("4a9d72f9-9933-49f0"), "4a9d72f9-9933-49f0");
        assert_eq!(query_escape("a b&c=d"), "a%20b%26c%3Dd");
    }
}
