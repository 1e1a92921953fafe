//! Categories and their record tables.
//!
//! Each category has a table `rec_NAME` with `id, target, ts, schema_version,
//! received_at` and one typed column per field ever declared (schema versions add
//! columns, never rewrite them), indexed on `(target, ts)` and `ts`. With TimescaleDB it is a
//! hypertable; otherwise it is range-partitioned by month, partitions being created
//! ahead of the data (and a default partition catches anything else).
//!
//! SQL text only ever contains identifiers that passed `valid_identifier` (quoted);
//! values are bind parameters. Records are stored through [`super::store`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Datelike, Utc};
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};

use super::Storage;
use crate::db::{quote, table};
use crate::model::schema::{Field, FieldType, Schema, valid_identifier};

/// The channel announcing category changes (payload: the name), so processes other than
/// the api drop their cached schema.
pub const CHANNEL: &str = "tmidb_categories";

/// Why a category operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CategoryError {
    /// No such category (or version).
    #[error("{0}")]
    NotFound(String),
    /// Already exists, or records still present.
    #[error("{0}")]
    Conflict(String),
    /// The definition or change is invalid (per field).
    #[error("invalid category definition")]
    Invalid(Vec<crate::model::schema::Problem>),
    /// The change would give a stored field another type (per field).
    #[error("the new schema is incompatible with stored records")]
    Incompatible(Vec<crate::model::schema::Problem>),
    /// The schema is no longer at the version the change was made against.
    #[error("{0}")]
    Changed(String),
    /// Database error.
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// A category at one version (as stored, and as the API shows it).
#[derive(Debug, Clone, poem_openapi::Object)]
pub struct Category {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// The version shown.
    pub version: i32,
    /// The current version.
    pub current_version: i32,
    /// Fields of this version.
    pub fields: Vec<Field>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

fn sql(s: String) -> AssertSqlSafe<String> {
    AssertSqlSafe(s)
}

fn ident(name: &str) -> Result<String, CategoryError> {
    if valid_identifier(name) {
        Ok(quote(name))
    } else {
        Err(CategoryError::NotFound(format!(
            "`{name}` is not a valid category or field name"
        )))
    }
}

/// Months with partitions known to exist: (category, first day of month).
#[derive(Default)]
pub struct PartitionCache(Mutex<HashSet<(String, i32, u32)>>);

fn next_month(y: i32, m: u32) -> (i32, u32) {
    if m == 12 { (y + 1, 1) } else { (y, m + 1) }
}

/// A partition bound as PostgreSQL reads it: chrono's RFC 3339 writes year 10000 as
/// `+10000-…`, which PostgreSQL takes for a time-zone displacement.
fn bound(y: i32, m: u32) -> String {
    format!("{y:04}-{m:02}-01 00:00:00+00")
}

/// Creates the monthly partition holding `(y, m)` unless it exists.
async fn ensure_month(
    tx: &mut Transaction<'_, Postgres>,
    category: &str,
    y: i32,
    m: u32,
) -> Result<(), sqlx::Error> {
    let t = table(category);
    let (ny, nm) = next_month(y, m);
    let ddl = format!(
        "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ('{}') TO ('{}')",
        quote(&format!("{t}_p{y:04}{m:02}")),
        quote(&t),
        bound(y, m),
        bound(ny, nm)
    );
    sqlx::query(sql(ddl)).execute(&mut **tx).await?;
    Ok(())
}

/// Makes sure partitions exist for every month in `times` (no-op with TimescaleDB).
pub async fn ensure_partitions(
    pool: &PgPool,
    storage: Storage,
    cache: &PartitionCache,
    category: &str,
    times: impl Iterator<Item = DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    if storage == Storage::Timescale {
        return Ok(());
    }
    let months: HashSet<(i32, u32)> = times.map(|t| (t.year(), t.month())).collect();
    let missing: Vec<(i32, u32)> = {
        let c = cache.0.lock().expect("lock");
        months
            .into_iter()
            .filter(|(y, m)| !c.contains(&(category.to_string(), *y, *m)))
            .collect()
    };
    if missing.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    // Writers meeting a new month at once take turns: CREATE TABLE IF NOT EXISTS is not
    // safe against a concurrent create (one of them fails with "already exists", and
    // its whole batch was then redone record by record).
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(table(category))
        .execute(&mut *tx)
        .await?;
    for (y, m) in &missing {
        ensure_month(&mut tx, category, *y, *m).await?;
    }
    tx.commit().await?;
    let mut c = cache.0.lock().expect("lock");
    for (y, m) in missing {
        c.insert((category.to_string(), y, m));
    }
    Ok(())
}

fn column(f: &Field) -> String {
    format!("{} {}", quote(&f.name), f.kind.sql())
}

/// Creates a category (version 1) and its table.
pub async fn create(
    pool: &PgPool,
    storage: Storage,
    name: &str,
    description: &str,
    fields: &[Field],
) -> Result<Category, CategoryError> {
    check(name, fields)?;
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query("INSERT INTO categories (name, description, current_version) VALUES ($1, $2, 1) ON CONFLICT DO NOTHING")
        .bind(name)
        .bind(description)
        .execute(&mut *tx)
        .await?;
    if inserted.rows_affected() == 0 {
        return Err(CategoryError::Conflict(format!(
            "category `{name}` already exists; PUT it to make a new version"
        )));
    }
    sqlx::query("INSERT INTO category_versions (category, version, fields) VALUES ($1, 1, $2)")
        .bind(name)
        .bind(serde_json::to_value(fields).expect("json"))
        .execute(&mut *tx)
        .await?;
    assign_rollup_slots(&mut tx, name, fields).await?;
    let t = table(name);
    let cols: Vec<String> = fields.iter().map(column).collect();
    let partition = if storage == Storage::Partitioned {
        " PARTITION BY RANGE (ts)"
    } else {
        ""
    };
    let ddl = format!(
        "CREATE TABLE {} (id uuid NOT NULL DEFAULT gen_random_uuid(), target text NOT NULL, ts timestamptz NOT NULL, \
         schema_version integer NOT NULL, received_at timestamptz NOT NULL DEFAULT now(), {}, PRIMARY KEY (id, ts)){partition}",
        quote(&t),
        cols.join(", ")
    );
    sqlx::query(sql(ddl)).execute(&mut *tx).await?;
    sqlx::query(sql(format!(
        "CREATE INDEX {} ON {} (target, ts)",
        quote(&format!("{t}_target_ts")),
        quote(&t)
    )))
    .execute(&mut *tx)
    .await?;
    match storage {
        Storage::Timescale => {
            sqlx::query("SELECT create_hypertable($1::regclass, 'ts')")
                .bind(&t)
                .execute(&mut *tx)
                .await?;
        }
        Storage::Partitioned => {
            // Newest-first reads without a target walk this index from its end
            // (hypertables get one from TimescaleDB). PostgreSQL names it.
            sqlx::query(sql(format!("CREATE INDEX ON {} (ts)", quote(&t))))
                .execute(&mut *tx)
                .await?;
            sqlx::query(sql(format!(
                "CREATE TABLE {} PARTITION OF {} DEFAULT",
                quote(&format!("{t}_default")),
                quote(&t)
            )))
            .execute(&mut *tx)
            .await?;
            // This month and the next two, ahead of the data.
            let now = Utc::now();
            let (mut y, mut m) = (now.year(), now.month());
            for _ in 0..3 {
                ensure_month(&mut tx, name, y, m).await?;
                (y, m) = next_month(y, m);
            }
        }
    }
    super::notify(&mut tx, CHANNEL, name).await?;
    tx.commit().await?;
    get(pool, name, None).await
}

/// A category joined with one of its versions.
#[derive(sqlx::FromRow)]
struct VersionRow {
    name: String,
    description: String,
    version: i32,
    current_version: i32,
    fields: serde_json::Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// A category at `version` (None: the current one).
pub async fn get(
    pool: &PgPool,
    name: &str,
    version: Option<i32>,
) -> Result<Category, CategoryError> {
    let row: Option<VersionRow> = sqlx::query_as(
        "SELECT c.name, c.description, v.version, c.current_version, v.fields, c.created_at, c.updated_at
         FROM categories c JOIN category_versions v ON v.category = c.name
         WHERE c.name = $1 AND v.version = coalesce($2, c.current_version)",
    )
    .bind(name)
    .bind(version)
    .fetch_optional(pool)
    .await?;
    let r = row.ok_or_else(|| match version {
        Some(v) => CategoryError::NotFound(format!("category `{name}` has no version {v}")),
        None => CategoryError::NotFound(format!("no category `{name}`")),
    })?;
    Ok(Category {
        name: r.name,
        description: r.description,
        version: r.version,
        current_version: r.current_version,
        fields: serde_json::from_value(r.fields).unwrap_or_default(),
        created_at: r.created_at,
        updated_at: r.updated_at,
    })
}

/// Every version of `name`'s schema, oldest first: (version, stored at, fields).
pub async fn versions(
    pool: &PgPool,
    name: &str,
) -> Result<Vec<(i32, DateTime<Utc>, Vec<Field>)>, CategoryError> {
    let rows: Vec<(i32, DateTime<Utc>, serde_json::Value)> = sqlx::query_as(
        "SELECT version, created_at, fields FROM category_versions WHERE category = $1 ORDER BY version",
    )
    .bind(name)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(v, at, f)| (v, at, serde_json::from_value(f).unwrap_or_default()))
        .collect())
}

/// Every category at its current version.
pub async fn list(pool: &PgPool) -> Result<Vec<Category>, CategoryError> {
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM categories ORDER BY name")
        .fetch_all(pool)
        .await?;
    let mut out = vec![];
    for n in names {
        out.push(get(pool, &n, None).await?);
    }
    Ok(out)
}

/// Category schemas, cached: the current version of each category and every version
/// asked for by number, so neither a request nor a batch costs a schema query. A
/// version never changes once stored; a category deleted and re-created starts its
/// versions again, so a change to a category forgets all of its entries. Each process
/// keeps one cache and runs one [`SchemaCache::follow`]er of `tmidb_categories`.
#[derive(Default)]
pub struct SchemaCache(Mutex<Cached>);

#[derive(Default)]
struct Cached {
    /// Category → its current version.
    current: HashMap<String, i32>,
    /// (category, version) → schema.
    versions: HashMap<(String, i32), Arc<Schema>>,
}

impl SchemaCache {
    /// The current schema of `name`.
    pub async fn get(&self, pool: &PgPool, name: &str) -> Result<Arc<Schema>, CategoryError> {
        let cached = {
            let c = self.0.lock().expect("lock");
            c.current
                .get(name)
                .and_then(|v| c.versions.get(&(name.to_string(), *v)))
                .cloned()
        };
        if let Some(s) = cached {
            return Ok(s);
        }
        let s = Arc::new(schema(pool, name, None).await?);
        let mut c = self.0.lock().expect("lock");
        c.current.insert(name.to_string(), s.version);
        c.versions.insert((name.to_string(), s.version), s.clone());
        Ok(s)
    }

    /// Version `version` of `name`'s schema.
    pub async fn version(
        &self,
        pool: &PgPool,
        name: &str,
        version: i32,
    ) -> Result<Arc<Schema>, CategoryError> {
        let key = (name.to_string(), version);
        if let Some(s) = self.0.lock().expect("lock").versions.get(&key) {
            return Ok(s.clone());
        }
        let s = Arc::new(schema(pool, name, Some(version)).await?);
        self.0.lock().expect("lock").versions.insert(key, s.clone());
        Ok(s)
    }

    /// Forgets everything cached of `name` (it changed, or was deleted).
    pub fn forget(&self, name: &str) {
        let mut c = self.0.lock().expect("lock");
        c.current.remove(name);
        c.versions.retain(|(n, _), _| n != name);
    }

    fn forget_all(&self) {
        *self.0.lock().expect("lock") = Cached::default();
    }

    /// Follows changes made by any process (NOTIFY `tmidb_categories` names the
    /// category) for as long as the process runs. When the listening connection is
    /// lost, a change may have been missed: everything is forgotten, and the listener
    /// reconnects.
    pub async fn follow(&self, cfg: &crate::config::Config) {
        let mut retry = crate::backoff::Backoff::new(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(30),
        )
        .retry();
        loop {
            let mut listener = match super::listen(cfg, &[CHANNEL]).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!("cannot follow schema changes: {e}; retrying");
                    retry.wait().await;
                    continue;
                }
            };
            retry.reset();
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => self.forget(n.payload()),
                    Ok(None) => self.forget_all(),
                    Err(e) => {
                        tracing::warn!("lost the schema change listener: {e}");
                        self.forget_all();
                        break;
                    }
                }
            }
        }
    }
}

/// A definition's problems as the error, if it has any.
fn check(name: &str, fields: &[Field]) -> Result<(), CategoryError> {
    let problems = crate::model::schema::check_definition(name, fields);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CategoryError::Invalid(problems))
    }
}

/// Version `version` (None: the current one) of a category's schema.
async fn schema(pool: &PgPool, name: &str, version: Option<i32>) -> Result<Schema, CategoryError> {
    let c = get(pool, name, version).await?;
    let slots: Vec<(String, i32)> =
        sqlx::query_as("SELECT field, slot FROM rollup_fields WHERE category = $1")
            .bind(name)
            .fetch_all(pool)
            .await?;
    Ok(Schema {
        category: c.name,
        version: c.version,
        fields: c.fields,
        // `slot >= 0` is a CHECK of the table.
        rollup_slots: slots.into_iter().map(|(f, s)| (f, s as usize)).collect(),
    })
}

/// Gives the numeric fields of `fields` that have no rollup slot yet the next free
/// slots of `name`, in declaration order (under the caller's lock on the category).
async fn assign_rollup_slots(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    name: &str,
    fields: &[Field],
) -> Result<(), sqlx::Error> {
    let numeric: Vec<&str> = fields
        .iter()
        .filter(|f| matches!(f.kind, FieldType::Int | FieldType::Float))
        .map(|f| f.name.as_str())
        .collect();
    sqlx::query(
        "INSERT INTO rollup_fields (category, field, slot)
         SELECT $1, f, (SELECT coalesce(max(slot) + 1, 0) FROM rollup_fields WHERE category = $1)
                       + row_number() OVER (ORDER BY o) - 1
         FROM unnest($2::text[]) WITH ORDINALITY AS u(f, o)
         WHERE NOT EXISTS (SELECT 1 FROM rollup_fields WHERE category = $1 AND field = u.f)",
    )
    .bind(name)
    .bind(numeric)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Stores a new version; adds columns for new fields. A field's type never changes,
/// including fields dropped from the schema earlier (their columns keep the data).
/// With `expected`, the change is made only while the current version is that one
/// (an edit made on a page showing an older version is refused, not applied).
pub async fn update(
    pool: &PgPool,
    name: &str,
    description: Option<&str>,
    fields: &[Field],
    expected: Option<i32>,
) -> Result<Category, CategoryError> {
    check(name, fields)?;
    let mut tx = pool.begin().await?;
    let current: Option<i32> =
        sqlx::query_scalar("SELECT current_version FROM categories WHERE name = $1 FOR UPDATE")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
    let current =
        current.ok_or_else(|| CategoryError::NotFound(format!("no category `{name}`")))?;
    if let Some(e) = expected.filter(|e| *e != current) {
        return Err(CategoryError::Changed(format!(
            "the schema of `{name}` changed since version {e} was opened: it is at version {current} now; reload it and make the change again"
        )));
    }
    // The columns as they exist: every field any version ever had.
    let t = table(name);
    let existing: Vec<(String, String)> = sqlx::query_as(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
         WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped",
    )
    .bind(&t)
    .fetch_all(&mut *tx)
    .await?;
    let mut problems = vec![];
    for f in fields {
        if let Some((_, ty)) = existing.iter().find(|(c, _)| *c == f.name)
            && ty != f.kind.pg_type_name()
        {
            problems.push(crate::model::schema::Problem {
                field: Some(f.name.clone()),
                reason: format!("stored records hold {} in `{}`; a field's type cannot change (add a new field instead)", ty, f.name),
            });
        }
    }
    if !problems.is_empty() {
        return Err(CategoryError::Incompatible(problems));
    }
    for f in fields
        .iter()
        .filter(|f| !existing.iter().any(|(c, _)| *c == f.name))
    {
        sqlx::query(sql(format!(
            "ALTER TABLE {} ADD COLUMN {}",
            quote(&t),
            column(f)
        )))
        .execute(&mut *tx)
        .await?;
    }
    let next = current + 1;
    sqlx::query("INSERT INTO category_versions (category, version, fields) VALUES ($1, $2, $3)")
        .bind(name)
        .bind(next)
        .bind(serde_json::to_value(fields).expect("json"))
        .execute(&mut *tx)
        .await?;
    assign_rollup_slots(&mut tx, name, fields).await?;
    sqlx::query("UPDATE categories SET current_version = $2, description = coalesce($3, description), updated_at = now() WHERE name = $1")
        .bind(name)
        .bind(next)
        .bind(description)
        .execute(&mut *tx)
        .await?;
    super::notify(&mut tx, CHANNEL, name).await?;
    tx.commit().await?;
    get(pool, name, None).await
}

/// Deletes a category and its records; refused while records exist unless `force`.
pub async fn delete(pool: &PgPool, name: &str, force: bool) -> Result<u64, CategoryError> {
    let t = ident(&table(name)[4..]).map(|_| table(name))?;
    get(pool, name, None).await?;
    let n: i64 = sqlx::query_scalar(sql(format!("SELECT count(*) FROM {}", quote(&t))))
        .fetch_one(pool)
        .await?;
    if n > 0 && !force {
        return Err(CategoryError::Conflict(format!(
            "category `{name}` still has {n} records; delete with ?force=true to drop them"
        )));
    }
    let mut tx = pool.begin().await?;
    sqlx::query(sql(format!("DROP TABLE {} CASCADE", quote(&t))))
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM categories WHERE name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    // Its rollups, dead letters and row accounting go with it (no foreign keys: a
    // category of the same name created later starts from nothing). The ledger rows of
    // stream messages stay, detached from the category: they still account for their
    // stream sequences, which would otherwise read as integrity gaps.
    for statement in [
        "DELETE FROM rollups WHERE series IN (SELECT id FROM rollup_series WHERE category = $1)",
        "DELETE FROM rollup_series WHERE category = $1",
        "DELETE FROM rollup_fields WHERE category = $1",
        "DELETE FROM dead_letters WHERE category = $1",
        "DELETE FROM ingest_batches WHERE category = $1 AND stream IS NULL",
        "UPDATE ingest_batches SET category = NULL, new_rows = 0, records = 0, checksum = 0
           WHERE category = $1",
    ] {
        sqlx::query(statement).bind(name).execute(&mut *tx).await?;
    }
    // Its sources went by cascade: the data-manager stops their runners.
    super::notify(&mut tx, super::sources::CHANNEL, name).await?;
    super::notify(&mut tx, CHANNEL, name).await?;
    tx.commit().await?;
    Ok(n as u64)
}
