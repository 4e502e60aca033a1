//! Ports: the small traits the flows depend on, one per capability. Their adapters are in
//! [`crate::adapters`] (and the test doubles in `crate::testing`).
//!
//! - [`store`]: typing leases, presence windows, message records, conversations, dedupe keys,
//!   send lanes.
//! - [`timers`]: work that falls due later, and who runs it.
//! - [`kommo`]: Kommo's Chat API (amojo); [`chat`]: the chat service.
//! - [`accounts`]: Kommo's OAuth and REST API for installs, and the sealer of their tokens.
//! - [`crm`]: Kommo's CRM REST API: the contact linked to a chat, the integration's sources.
//! - [`metrics`]: what the flows tell the operator, and the calls out metered.

pub mod accounts;
pub mod chat;
pub mod crm;
pub mod kommo;
pub mod metrics;
pub mod store;
pub mod timers;
