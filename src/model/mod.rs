//! The domain: types and pure rules every front-end and service shares. Nothing here
//! touches a socket, a file or the database; [`crate::db`] stores these types,
//! [`crate::pipeline`] carries them, and the api, the data-manager and the
//! data-consumer act on them.
//!
//! - [`access`]: roles, token scopes, the caller and what each may do.
//! - [`alert`]: alert rules, notifications and their conditions.
//! - [`query`]: what a read of records selects (target, time range, field filters,
//!   order) and page cursors.
//! - [`rollup`]: rollup buckets and their deltas.
//! - [`schema`]: category schemas, the one record validator, content ids.
//! - [`source`]: ingestion sources, the settings of each kind and their rules.
//! - [`transform`]: per-source transformations (rename, scale, time formats, …).
//! - [`wire`]: the pipeline's messages (batches, dead letters, live events).

pub mod access;
pub mod alert;
pub mod query;
pub mod rollup;
pub mod schema;
pub mod source;
pub mod transform;
pub mod wire;
