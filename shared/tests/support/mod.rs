//! The simulated bridge and the request bodies every suite here uses (`shared::testing::sim`).
#![allow(unused_imports)] // each test file uses its own part

pub use shared::testing::sim::*;
