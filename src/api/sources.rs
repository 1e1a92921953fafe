//! Ingestion sources, for both front-ends of the api: their definitions (editor;
//! `file` and `exec` sources, which read the server's disk or run programs, need an
//! admin), checked as a whole before they are stored, and what each is doing (its
//! runner's status, records stored and rejected in the last hour, its last record).
//! The data-manager picks changes up without a restart.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::AppState;
use crate::db::sources::{self as store, Activity, Status};
use crate::model::access::Principal;
use crate::model::source::{Source, SourceKind};
use crate::model::transform::Transform;
use crate::web::error::{ApiError, ApiResult, Issue};

/// A source as defined by a user.
#[derive(Debug, Clone)]
pub struct Definition {
    /// Name (unique; it has passed [`crate::web::names::Name`]'s rule).
    pub name: String,
    /// Its category.
    pub category: String,
    /// How it gets records.
    pub kind: SourceKind,
    /// Kind-specific settings.
    pub config: Value,
    /// Transformation applied before validation.
    pub transform: Transform,
    /// Whether it runs.
    pub enabled: bool,
}

/// Checks a definition for `p`: the roles its kind needs, that its category exists,
/// and every problem of its settings and transformation at once.
async fn check(state: &AppState, p: &Principal, d: &Definition) -> ApiResult<()> {
    p.require_editor()?;
    if matches!(d.kind, SourceKind::File | SourceKind::Exec) {
        p.require_admin().map_err(|_| {
            ApiError::forbidden(format!(
                "`{}` sources read the server's disk or run programs; only admins define them",
                d.kind.as_str()
            ))
        })?;
    }
    state.schemas.get(&state.pool, &d.category).await?;
    let issues: Vec<Issue> = crate::model::source::check_config(d.kind, &d.config)
        .into_iter()
        .chain(d.transform.check())
        .map(Issue::from)
        .collect();
    if issues.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            format!("source `{}` is invalid", d.name),
            issues,
        ))
    }
}

/// Every source (of `category`), by name.
pub async fn list(state: &AppState, category: Option<&str>) -> ApiResult<Vec<Source>> {
    let all = store::list(&state.pool).await?;
    Ok(all
        .into_iter()
        .filter(|s| category.is_none_or(|c| c == s.category))
        .collect())
}

/// One source, by id or name.
pub async fn get(state: &AppState, key: &str) -> ApiResult<Source> {
    store::get(&state.pool, key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no source `{key}`")))
}

fn source(id: Uuid, d: Definition) -> Source {
    let now = chrono::Utc::now();
    Source {
        id,
        name: d.name,
        category: d.category,
        kind: d.kind,
        config: d.config,
        transform: d.transform,
        enabled: d.enabled,
        created_at: now,
        updated_at: now,
    }
}

/// Defines a new source (editor; `file` and `exec` need an admin).
pub async fn create(state: &AppState, p: &Principal, d: Definition) -> ApiResult<Source> {
    check(state, p, &d).await?;
    if store::get(&state.pool, &d.name).await?.is_some() {
        return Err(ApiError::conflict(format!(
            "source `{}` already exists; change it instead of defining it again",
            d.name
        )));
    }
    let s = store::save(&state.pool, &source(Uuid::new_v4(), d), None)
        .await?
        .expect("a new source is always stored");
    tracing::info!(source = %s.name, kind = s.kind.as_str(), by = %p.username, "source defined");
    Ok(s)
}

/// Replaces the definition of the source `key` (it restarts with it). With
/// `expected`, only while the source is as last seen (409 otherwise).
pub async fn update(
    state: &AppState,
    p: &Principal,
    key: &str,
    d: Definition,
    expected: Option<DateTime<Utc>>,
) -> ApiResult<Source> {
    let old = get(state, key).await?;
    check(state, p, &d).await?;
    if matches!(old.kind, SourceKind::File | SourceKind::Exec) {
        p.require_admin()?;
    }
    let mut s = source(old.id, d);
    s.created_at = old.created_at;
    let s = store::save(&state.pool, &s, expected).await?.ok_or_else(|| {
        ApiError::conflict(format!(
            "source `{}` was changed by someone else since it was opened; reload it and make the change again",
            old.name
        ))
    })?;
    tracing::info!(source = %s.name, by = %p.username, "source changed");
    Ok(s)
}

/// Deletes the source `key` (its runner stops; stored records stay).
pub async fn delete(state: &AppState, p: &Principal, key: &str) -> ApiResult<Source> {
    p.require_editor()?;
    let s = get(state, key).await?;
    if matches!(s.kind, SourceKind::File | SourceKind::Exec) {
        p.require_admin()?;
    }
    store::delete(&state.pool, s.id).await?;
    tracing::info!(source = %s.name, by = %p.username, "source deleted");
    Ok(s)
}

/// A source with what it is doing.
#[derive(Debug, Clone)]
pub struct Overview {
    /// The definition (None: records that arrived under this name without a
    /// defined source, e.g. `http_push` or `api`).
    pub source: Option<Source>,
    /// Its name.
    pub name: String,
    /// Its runner's last status (file, exec and http_poll sources).
    pub status: Option<Status>,
    /// Its last hour.
    pub activity: Activity,
}

impl Overview {
    /// Rejected records per record received in the last hour (0 when none came).
    pub fn reject_ratio(&self) -> f64 {
        let a = &self.activity;
        let all = a.stored + a.rejected;
        if all == 0 {
            0.0
        } else {
            a.rejected as f64 / all as f64
        }
    }

    /// Records stored per second over the last hour.
    pub fn rate(&self) -> f64 {
        self.activity.stored as f64 / 3600.0
    }
}

/// Every defined source with its status and activity, then the names records came
/// under without a defined source in the last hour.
pub async fn overview(state: &AppState) -> ApiResult<Vec<Overview>> {
    let sources = store::list(&state.pool).await?;
    let mut activity = store::activity(&state.pool).await?;
    let statuses = store::statuses(&state.pool).await?;
    let mut out: Vec<Overview> = sources
        .into_iter()
        .map(|s| {
            let a = activity
                .iter()
                .position(|a| a.source == s.name)
                .map(|i| activity.swap_remove(i))
                .unwrap_or_else(|| Activity {
                    source: s.name.clone(),
                    ..Default::default()
                });
            Overview {
                name: s.name.clone(),
                status: statuses
                    .iter()
                    .find(|(id, _)| *id == s.id)
                    .map(|(_, st)| st.clone()),
                source: Some(s),
                activity: a,
            }
        })
        .collect();
    activity.sort_by(|a, b| a.source.cmp(&b.source));
    out.extend(activity.into_iter().map(|a| Overview {
        source: None,
        name: a.source.clone(),
        status: None,
        activity: a,
    }));
    Ok(out)
}
