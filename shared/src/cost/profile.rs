//! A month of one account's traffic, from its profile, priced by service (see `bridge-cli cost`).
