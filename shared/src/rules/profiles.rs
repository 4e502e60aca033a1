//! A client's profile (`client.updated`) against the Kommo contact linked to their chat: what a
//! profile must hold to be taken, and what it changes in the contact.
//!
//! - The name: the chat service's name replaces the contact's whenever it gives one, so the
//!   name the bridge made up when it had none (the phone, the email, or `Client {id}`: see
//!   [`super::names::client_display_name`]) does not outlive the real one. A profile without a
//!   name leaves the contact's name as it is.
//! - Phone and email: Kommo keeps several of each, and replaces a field's values whole on an
//!   update, so a new one is put first (Kommo shows the first) and every value the contact had
//!   is kept: a manager's notes are never lost. One already there (digits alike for a phone,
//!   letters alike for an email) changes nothing.
//! - The avatar: Kommo's contacts have no avatar field in the REST API; it is taken and not
//!   applied.

use super::id_checks::check_id;
use super::rejection::Rejection;
use crate::models::chat::ClientProfile;
use crate::models::crm::{Contact, ContactChange, FieldValue};

/// Longest name, phone and email taken (Kommo's own limits are not published).
const MAX_NAME_CHARS: usize = 255;
const MAX_PHONE_CHARS: usize = 64;
const MAX_EMAIL_CHARS: usize = 254;
const MAX_AVATAR_CHARS: usize = 2048;

/// The `enum_code` of a value the bridge adds: a messenger's number is a mobile, its email the
/// client's own.
const PHONE_KIND: &str = "MOB";
const EMAIL_KIND: &str = "PRIV";

/// A `client.updated` names its conversation and client and says something about them.
pub fn check_client_profile(profile: &ClientProfile) -> Result<(), Rejection> {
    check_id("conversation_id", &profile.conversation_id)?;
    check_id("user.id", &profile.user.id)?;
    let user = &profile.user;
    let name = given(&user.name);
    let phone = given(&user.phone);
    let email = given(&user.email);
    let avatar = given(&user.avatar);
    if name.is_none() && phone.is_none() && email.is_none() && avatar.is_none() {
        return Err(Rejection::invalid("client.updated needs at least one of user.name, .phone, .email, .avatar"));
    }
    let too_long = |value: Option<&str>, most: usize| value.is_some_and(|v| v.chars().count() > most);
    if too_long(name, MAX_NAME_CHARS) {
        return Err(Rejection::invalid(format!("user.name must be at most {MAX_NAME_CHARS} characters")));
    }
    if let Some(phone) = phone
        && (too_long(Some(phone), MAX_PHONE_CHARS) || !phone.chars().any(|c| c.is_ascii_digit()))
    {
        return Err(Rejection::invalid(format!("user.phone must hold digits, at most {MAX_PHONE_CHARS} characters")));
    }
    if let Some(email) = email
        && (too_long(Some(email), MAX_EMAIL_CHARS) || !looks_like_email(email))
    {
        return Err(Rejection::invalid("user.email must be an address like name@example.com"));
    }
    if let Some(avatar) = avatar
        && (too_long(Some(avatar), MAX_AVATAR_CHARS) || !avatar.starts_with("https://"))
    {
        return Err(Rejection::invalid(format!(
            "user.avatar must be an https URL of at most {MAX_AVATAR_CHARS} characters"
        )));
    }
    [name, phone, email].into_iter().flatten().try_for_each(|value| match value.chars().any(char::is_control) {
        true => Err(Rejection::invalid("user.name, .phone and .email are one line of text")),
        false => Ok(()),
    })
}

/// What the profile changes in the contact: nothing when the contact says it all already.
pub fn contact_change(contact: &Contact, profile: &ClientProfile) -> ContactChange {
    let user = &profile.user;
    let name = given(&user.name).filter(|name| *name != contact.name.trim()).map(str::to_owned);
    let phones = given(&user.phone).and_then(|phone| added(&contact.phones, phone, PHONE_KIND, phone_key));
    let emails = given(&user.email).and_then(|email| added(&contact.emails, email, EMAIL_KIND, email_key));
    ContactChange { name, phones, emails }
}

/// `values` with `new` first, unless one of them is `new` already (by `key`).
fn added(values: &[FieldValue], new: &str, kind: &str, key: fn(&str) -> String) -> Option<Vec<FieldValue>> {
    if values.iter().any(|value| key(&value.value) == key(new)) {
        return None;
    }
    let first = FieldValue { value: new.to_owned(), enum_code: Some(kind.to_owned()) };
    Some(std::iter::once(first).chain(values.iter().cloned()).collect())
}

fn phone_key(phone: &str) -> String {
    phone.chars().filter(char::is_ascii_digit).collect()
}

fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|value| !value.is_empty())
}

fn looks_like_email(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !email.contains(char::is_whitespace)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::chat::ChatUser;

    fn profile(name: Option<&str>, phone: Option<&str>, email: Option<&str>) -> ClientProfile {
        let text = |value: Option<&str>| value.map(str::to_owned);
        ClientProfile {
            scope_id: "chan_acc".into(),
            conversation_id: "conv-1".into(),
            user: ChatUser {
                id: "u-42".into(),
                name: text(name),
                avatar: None,
                phone: text(phone),
                email: text(email),
                profile_link: None,
            },
        }
    }

    fn value(value: &str, kind: &str) -> FieldValue {
        FieldValue { value: value.into(), enum_code: Some(kind.into()) }
    }

    #[test]
    fn a_made_up_name_is_replaced_once_a_real_one_arrives() {
        for made_up in ["Client u-42", "+100", "a@x.example"] {
            let contact = Contact { id: 1, name: made_up.into(), ..Default::default() };
            let change = contact_change(&contact, &profile(Some(" Adam "), None, None));
            assert_eq!(change.name.as_deref(), Some("Adam"), "{made_up}");
        }
        let named = Contact { id: 1, name: "Adam".into(), ..Default::default() };
        assert!(contact_change(&named, &profile(Some("Adam"), None, None)).is_empty(), "the same name");
        assert_eq!(contact_change(&named, &profile(None, Some("+100"), None)).name, None, "no name: kept");
    }

    #[test]
    fn a_new_phone_or_email_goes_first_and_every_old_one_stays() {
        let contact = Contact {
            id: 1,
            name: "Adam".into(),
            phones: vec![value("+1 (555) 010-0000", "WORK")],
            emails: vec![value("Adam@Example.com", "WORK")],
        };
        let change = contact_change(&contact, &profile(None, Some("+15550100001"), Some("new@example.com")));
        assert_eq!(change.phones, Some(vec![value("+15550100001", "MOB"), value("+1 (555) 010-0000", "WORK")]));
        assert_eq!(change.emails, Some(vec![value("new@example.com", "PRIV"), value("Adam@Example.com", "WORK")]));
        // Already there, written another way: nothing to change.
        let same = contact_change(&contact, &profile(None, Some("15550100000"), Some("adam@example.com ")));
        assert!(same.is_empty(), "{same:?}");
    }

    #[test]
    fn a_profile_is_refused_when_it_says_nothing_usable() {
        assert!(check_client_profile(&profile(Some("Adam"), None, None)).is_ok());
        assert!(check_client_profile(&profile(None, Some("+100"), Some("a@x.example"))).is_ok());
        let refused = [
            profile(None, None, None),
            profile(Some("  "), Some(""), None),
            profile(None, Some("no digits"), None),
            profile(None, None, Some("not-an-email")),
            profile(None, None, Some("a@localhost")),
            profile(Some("Adam\nINFO forged"), None, None),
            profile(Some(&"x".repeat(256)), None, None),
        ];
        for case in refused {
            assert!(check_client_profile(&case).is_err(), "{case:?}");
        }
        let mut bad_avatar = profile(Some("Adam"), None, None);
        bad_avatar.user.avatar = Some("http://insecure.example/a.png".into());
        assert!(check_client_profile(&bad_avatar).is_err());
        let mut bad_conversation = profile(Some("Adam"), None, None);
        bad_conversation.conversation_id = String::new();
        assert!(check_client_profile(&bad_conversation).is_err());
    }
}
