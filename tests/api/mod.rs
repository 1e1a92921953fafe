//! The api on real PostgreSQL (and SeaweedFS), one shared stack for the binary.

mod access;
mod files;
mod records;
mod system;

/// An `Authorization` value for `t`.
fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// psql against the shared stack's database; returns trimmed stdout.
fn psql(api: &crate::helpers::ApiStack, sql: &str) -> String {
    crate::helpers::psql(&api.home, sql)
}
