//! The shared core of the Kommo feel-connected bridge. Every function (and the dev server) is a
//! thin shell around it. Its modules form layers with one direction of dependency: each imports
//! only the layers below it, and no module imports the composition root.
//!
//! | layer | modules | what it holds |
//! |---|---|---|
//! | composition root | [`app`] | configuration, routing, wiring, domain errors → HTTP answers |
//! | queued work | [`queued`] | the dispatcher of due work (timers, retries, relays), the SQS batch |
//! | use cases | [`flows`] | one module per flow, each over only the ports it uses |
//! | ports | [`ports`] | store capabilities, timers and due work, the amojo and chat-service clients |
//! | adapters | [`adapters`] | in memory, DynamoDB, SQS, in-process timers, HTTPS: ports and wire only |
//! | rules and wire | [`rules`], [`models`], [`signing`], [`time`], [`random`] | pure decisions, wire models, signatures, clock, randomness |
//!
//! [`testing`] (the `testing` feature) holds the test doubles, the simulated bridge and the
//! storage conformance suite; it is never compiled into the release binaries.

pub mod adapters;
pub mod app;
pub mod flows;
pub mod models;
pub mod ports;
pub mod queued;
pub mod random;
pub mod rules;
pub mod signing;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod time;
