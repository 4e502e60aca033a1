//! Kommo's CRM as the bridge sees it: a contact's name, phones and emails, and a change of them
//! (the wire shapes are the adapter's, `crate::adapters::kommo_crm`).

/// A contact as the bridge reads it: its name and the values of its phone and email fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contact {
    pub id: u64,
    pub name: String,
    /// Each value with its `enum_code` (`WORK`, `MOB`, …) as Kommo keeps it.
    pub phones: Vec<FieldValue>,
    pub emails: Vec<FieldValue>,
}

/// One value of a multitext field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldValue {
    pub value: String,
    pub enum_code: Option<String>,
}

/// A change of a contact: a field left `None` is not sent, so Kommo keeps it. A multitext
/// field given is replaced whole by Kommo, so it lists every value the contact keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactChange {
    pub name: Option<String>,
    pub phones: Option<Vec<FieldValue>>,
    pub emails: Option<Vec<FieldValue>>,
}

impl ContactChange {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.phones.is_none() && self.emails.is_none()
    }
}
