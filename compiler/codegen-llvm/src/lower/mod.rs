//! How the translator iterates a per-element kernel ([`elementwise`]).

pub(crate) mod elementwise;
