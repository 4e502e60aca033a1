//! Adapters: the ports' implementations. Each depends on the ports and the wire only, never on
//! a flow or the composition root.
//!
//! - [`memory`]: the embedded store (the dev server's default, the simulations').
//! - [`dynamo`]: the store on one DynamoDB table.
//! - [`in_process_timers`]: timers as tokio tasks (the dev server); [`sqs`]: SQS message timers.
//! - [`amojo`], [`chat_http`]: the HTTPS clients of Kommo's Chat API and the chat service,
//!   over [`outbound`]'s one client and retry loop.
//! - [`kommo_rest`]: Kommo's OAuth and REST API on an account's host; [`sealer`]: AES-256-GCM
//!   for the OAuth tokens at rest; [`kommo_crm`]: Kommo's CRM REST API (contacts, sources).
//! - [`metered`]: the outbound ports, each call counted by peer and outcome.

#[cfg(feature = "adapters")]
pub mod amojo;
#[cfg(feature = "adapters")]
pub mod aws;
#[cfg(feature = "adapters")]
pub mod chat_http;
#[cfg(feature = "adapters")]
pub mod dynamo;
pub mod in_process_timers;
#[cfg(feature = "adapters")]
pub mod kommo_crm;
#[cfg(feature = "adapters")]
pub mod kommo_rest;
pub mod memory;
pub mod metered;
#[cfg(feature = "adapters")]
pub mod outbound;
#[cfg(feature = "adapters")]
pub mod sealer;
#[cfg(feature = "adapters")]
pub mod sqs;
