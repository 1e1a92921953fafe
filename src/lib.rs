//! tmiDB-Core: an all-in-one time-series data platform run by one systemd-style supervisor.
//!
//! Modules in reading order, lower layers first (ARCHITECTURE.md has the code map and
//! what each layer must not know):
//! - [`backoff`]: the one retry-delay rule (doubling, capped, jittered).
//! - [`config`]: `tmidb.toml`, the home layout, ports; the `${var}` namespace.
//! - [`unit`](mod@unit): unit files: parse, validate, resolve (`file:line:col` errors), and their
//!   dependency graph ([`unit::graph`], pure).
//! - [`control`]: the control-socket protocol (every message, the log `Level`), framing
//!   and client.
//! - [`logs`]: capture of children's output, ring buffers, the unified stream.
//! - [`supervisor`]: the pure state machine ([`supervisor::core`]) and its executor
//!   (spawning, reaping, probes, signals, reload, notify sockets, the control server).
//! - [`cli`]: the `tmidb-cli` commands.
//! - [`setup`]: first-run set-up of PostgreSQL, NATS and SeaweedFS (secrets, initdb).
//! - [`service`]: what every service binary does around its work.
//! - [`model`]: the domain types and pure rules (schemas, transformations, sources,
//!   pipeline messages, alert rules, rollups, who may do what).
//! - [`db`]: SQL over the model: connection, migrations (`sql/`), the one record write
//!   path ([`db::store`]).
//! - [`pipeline`]: the JetStream streams and consumers the services meet on.
//! - [`web`]: the HTTP layer the api and the data-manager share (errors, names, the
//!   boundary, Bearer authentication, OpenAPI refinement).
//! - [`ingest`] (data-manager), [`consume`] (data-consumer), [`alerts`] (delivery),
//!   [`integrity`] (reconciliation): external records → validation → JetStream →
//!   PostgreSQL, effectively once.
//! - [`api`]: the REST API service and its OpenAPI document.

pub mod backoff;
pub mod config;
pub mod unit;

pub mod control;
pub mod logs;
pub mod supervisor;

pub mod cli;
pub mod metrics;
pub mod service;
pub mod setup;

pub mod model;

pub mod db;
pub mod pipeline;

pub mod web;

pub mod alerts;
pub mod consume;
pub mod ingest;
pub mod integrity;

pub mod api;

/// Golden-file checks for the unit tests (the same file the integration tests use).
#[cfg(test)]
#[path = "../tests/helpers/golden.rs"]
pub(crate) mod golden;
