//! Pure decisions: no I/O, no clock, no randomness of their own. What is hard to get right
//! about typing, statuses, presence, lanes, retries and input is decided here and table-tested;
//! the flows above only read, decide with these, write and send.

pub mod id_checks;
pub mod install;
pub mod kommo_content;
pub mod lanes;
pub mod names;
pub mod presence;
pub mod profiles;
pub mod rejection;
pub mod replay;
pub mod retry;
pub mod status;
pub mod typing;
pub mod validation;
