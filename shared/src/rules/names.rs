//! The name Kommo shows for a client. Kommo requires one when a chat is created (`user.name`)
//! and on every import (`sender.name`), and refuses the call without it; the chat service may
//! know its client only by a phone number, an email or nothing but an id. A client without a
//! name still gets their messages into Kommo, under the most readable name there is.

use crate::models::chat::ChatUser;

/// The client's name if the chat service gave one; else their phone, else their email; else
/// `Client` and the chat service's id, which never changes, so Kommo keeps one name for them.
pub fn client_display_name(user: &ChatUser) -> String {
    [&user.name, &user.phone, &user.email]
        .into_iter()
        .flatten()
        .map(|value| value.trim())
        .find(|value| !value.is_empty())
        .map_or_else(|| format!("Client {}", user.id), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: Option<&str>, phone: Option<&str>, email: Option<&str>) -> ChatUser {
        let text = |value: Option<&str>| value.map(str::to_owned);
        ChatUser {
            id: "u-42".into(),
            name: text(name),
            avatar: None,
            phone: text(phone),
            email: text(email),
            profile_link: None,
        }
    }

    #[test]
    fn a_client_always_has_a_readable_name() {
        // (name, phone, email) -> the name Kommo shows
        let cases = [
            (Some("Adam"), Some("+100"), Some("a@x.example"), "Adam"),
            (Some("  Adam "), None, None, "Adam"),
            (None, Some("+100"), Some("a@x.example"), "+100"),
            (Some(""), Some(" "), Some("a@x.example"), "a@x.example"),
            (None, None, Some("a@x.example"), "a@x.example"),
            (Some("   "), None, None, "Client u-42"),
            (None, None, None, "Client u-42"),
        ];
        for (name, phone, email, shown) in cases {
            assert_eq!(client_display_name(&user(name, phone, email)), shown, "{name:?} {phone:?} {email:?}");
        }
    }
}
