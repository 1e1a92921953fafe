//! tmiDB-Core: an all-in-one time-series data platform run by one systemd-style supervisor.
//!
//! Modules in reading order:
//! - [`config`]: `tmidb.toml`, the home layout, ports; the `${var}` namespace.
//! - [`unit`]: unit files: parse, validate, resolve (`file:line:col` errors).
//! - [`graph`]: requires/wants/after edges, cycles, start levels (pure).
//! - [`supervisor`]: the pure state machine ([`supervisor::core`]) and its executor
//!   (spawning, reaping, signals, reload, notify sockets).
//! - [`probe`]: readiness and liveness probes.
//! - [`logs`]: capture of children's output, ring buffers, the unified stream.
//! - [`control`]: the control-socket protocol, server and client.
//! - [`cli`]: the `tmidb-cli` commands.
//! - [`setup`]: first-run set-up of PostgreSQL and SeaweedFS (secrets, initdb).
//! - [`db`]: the database: connection, migrations (`sql/`), TimescaleDB detection.
//! - [`api`]: the REST API service and its OpenAPI document.
//! - [`pipeline`], [`ingest`] (data-manager), [`consume`] (data-consumer): external
//!   records → validation → JetStream → PostgreSQL, effectively once.

pub mod alerts;
pub mod api;
pub mod cli;
pub mod config;
pub mod consume;
pub mod control;
pub mod db;
pub mod ingest;
pub mod integrity;
pub mod logs;
pub mod model;
pub mod pipeline;
pub mod service;
pub mod setup;
pub mod supervisor;
pub mod unit;
