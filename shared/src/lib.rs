//! The shared core of the Kommo feel-connected bridge: wire models, signatures, domain rules,
//! ports and their adapters. Every function (and the dev server) is a thin shell around it.

pub mod app;
#[cfg(feature = "adapters")]
pub mod aws;
pub mod chat_client;
pub mod config;
#[cfg(feature = "adapters")]
pub mod deploy;
pub mod due;
pub mod http;
pub mod kommo_client;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod lanes;
pub mod messages;
pub mod models;
pub mod outbound;
pub mod presence;
pub mod routes;
pub mod signing;
pub mod status;
pub mod store;
pub mod testing;
pub mod time;
pub mod timers;
pub mod typing;
pub mod ui;
