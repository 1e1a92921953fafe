//! Data: the categories with their schema versions (and a diff between any two),
//! the schema editor (a stale edit is refused: the form carries the version it was
//! opened at), and the explorer of a category's records.
//!
//! The explorer's filters live in its URL (target, time range, field filters,
//! order, the page's cursor, the chart's field and aggregation), so a view can be
//! bookmarked and shared. Records come newest first by keyset pages (never a
//! count); each value is shown against the schema version it was stored with (a
//! field that version did not have reads "not in vN"). The chart's buckets follow
//! its width, with a hard cap on points; the export streams exactly the selection
//! on screen; the first page follows new records live.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{IntoResponse, Request, Response, handler};
use sailfish::TemplateSimple;
use serde_json::{Map, Value};

use super::frame::Frame;
use super::svg::{self, Chart};
use super::system::Confirm;
use super::{Fields, Signed, or_page, page, page_with, see_other};
use crate::api::records::{self as records, Query};
use crate::api::{AppState, categories};
use crate::db::categories::Category;
use crate::model::query::Order;
use crate::model::schema::{Field, FieldChange, FieldType, Schema};
use crate::web::error::ApiError;

#[derive(TemplateSimple)]
#[template(path = "data.stpl")]
struct Categories<'a> {
    frame: &'a Frame,
    categories: Vec<Category>,
    done: Option<&'a str>,
}

#[handler]
pub async fn list(state: Data<&Arc<AppState>>, req: &Request, q: Fields) -> Response {
    let s = or_page!(super::user(&state, req).await);
    match categories::list(&state).await {
        Ok(list) => page(Categories {
            frame: &s.frame("Data", "data"),
            categories: list,
            done: q.opt("done"),
        }),
        Err(e) => s.failure("data", e),
    }
}

/// One row of the schema editor, as typed (so a refused form comes back as sent).
#[derive(Debug, Clone, Default)]
pub struct FieldRow {
    /// Name.
    pub name: String,
    /// Type (`int`, `float`, …).
    pub kind: String,
    /// Required.
    pub required: bool,
    /// Lowest value.
    pub min: String,
    /// Highest value.
    pub max: String,
    /// Allowed values, comma-separated.
    pub enum_values: String,
    /// Longest text.
    pub max_length: String,
    /// Unit.
    pub unit: String,
    /// Description.
    pub description: String,
    /// Whether it existed when the form was opened (its name is then fixed).
    pub existing: bool,
}

impl FieldRow {
    fn of(f: &Field) -> FieldRow {
        let num = |v: Option<f64>| v.map(svg::number).unwrap_or_default();
        FieldRow {
            name: f.name.clone(),
            kind: f.kind.name().into(),
            required: f.required,
            min: num(f.min),
            max: num(f.max),
            enum_values: f
                .enum_values
                .as_ref()
                .map(|e| e.join(", "))
                .unwrap_or_default(),
            max_length: f.max_length.map(|n| n.to_string()).unwrap_or_default(),
            unit: f.unit.clone().unwrap_or_default(),
            description: f.description.clone().unwrap_or_default(),
            existing: true,
        }
    }
}

/// Blank rows the editor offers for new fields.
const NEW_ROWS: usize = 3;

/// The field types, as the editor offers them.
pub const TYPES: &[&str] = &["int", "float", "bool", "text", "timestamp", "json"];

/// The editor's rows as sent, the fields they declare, and what could not be read
/// (a row named and marked `remove` is dropped; a row without a name is blank).
fn read_rows(f: &Fields) -> (Vec<FieldRow>, Vec<Field>, Vec<String>) {
    let n: usize = f.get("rows").parse().unwrap_or(0).min(400);
    let (mut rows, mut fields, mut errors) = (vec![], vec![], vec![]);
    for i in 0..n {
        let get = |k: &str| f.get(&format!("f{i}_{k}")).trim().to_string();
        let row = FieldRow {
            name: get("name"),
            kind: get("type"),
            required: f.has(&format!("f{i}_required")),
            min: get("min"),
            max: get("max"),
            enum_values: get("enum"),
            max_length: get("max_length"),
            unit: get("unit"),
            description: get("description"),
            existing: f.has(&format!("f{i}_existing")),
        };
        if row.name.is_empty() || f.has(&format!("f{i}_remove")) {
            if !row.name.is_empty() {
                rows.push(FieldRow {
                    existing: false,
                    ..row
                });
            }
            continue;
        }
        let which = format!("field `{}`", row.name);
        let kind: Option<FieldType> = serde_json::from_value(Value::String(row.kind.clone())).ok();
        let number = |label: &str, v: &str| -> Result<Option<f64>, String> {
            if v.is_empty() {
                return Ok(None);
            }
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| format!("{which}: {label} `{v}` is not a number"))
        };
        let (min, max) = (number("min", &row.min), number("max", &row.max));
        let max_length = if row.max_length.is_empty() {
            Ok(None)
        } else {
            row.max_length.parse::<u32>().map(Some).map_err(|_| {
                format!(
                    "{which}: max length `{}` is not a whole number",
                    row.max_length
                )
            })
        };
        match (kind, min, max, max_length) {
            (Some(kind), Ok(min), Ok(max), Ok(max_length)) => {
                let opt = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
                let enum_values: Vec<String> = row
                    .enum_values
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect();
                fields.push(Field {
                    name: row.name.clone(),
                    kind,
                    required: row.required,
                    min,
                    max,
                    enum_values: Some(enum_values).filter(|e| !e.is_empty()),
                    max_length,
                    unit: opt(&row.unit),
                    description: opt(&row.description),
                });
            }
            (kind, min, max, len) => {
                if kind.is_none() {
                    errors.push(format!(
                        "{which}: `{}` is not a field type ({})",
                        row.kind,
                        TYPES.join(", ")
                    ));
                }
                errors.extend([min.err(), max.err(), len.err()].into_iter().flatten());
            }
        }
        rows.push(row);
    }
    (rows, fields, errors)
}

#[derive(TemplateSimple)]
#[template(path = "schema.stpl")]
struct SchemaEditor<'a> {
    frame: &'a Frame,
    /// None: a new category.
    category: Option<&'a str>,
    name: String,
    description: String,
    version: i32,
    rows: Vec<FieldRow>,
    errors: Vec<String>,
}

impl SchemaEditor<'_> {
    /// The rows plus the blank ones for new fields.
    fn with_blanks(mut self) -> Self {
        self.rows
            .extend(std::iter::repeat_with(FieldRow::default).take(NEW_ROWS));
        self
    }
}

#[handler]
pub async fn new_page(state: Data<&Arc<AppState>>, req: &Request) -> Response {
    let s = or_page!(super::user(&state, req).await);
    if let Err(d) = s.principal.require_editor() {
        return s.failure("data", d.into());
    }
    page(
        SchemaEditor {
            frame: &s.frame("New category", "data"),
            category: None,
            name: String::new(),
            description: String::new(),
            version: 0,
            rows: vec![],
            errors: vec![],
        }
        .with_blanks(),
    )
}

#[handler]
pub async fn create(state: Data<&Arc<AppState>>, req: &Request, f: Fields) -> Response {
    save_schema(&state, req, None, &f).await
}

#[handler]
pub async fn schema_page(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(category): Path<String>,
) -> Response {
    let s = or_page!(super::user(&state, req).await);
    if let Err(d) = s.principal.require_editor() {
        return s.failure("data", d.into());
    }
    let c = match categories::get(&state, &category, None).await {
        Ok(c) => c,
        Err(e) => return s.failure("data", e),
    };
    page(
        SchemaEditor {
            frame: &s.frame(format!("Schema of {}", c.name), "data"),
            category: Some(&category),
            name: c.name.clone(),
            description: c.description.clone(),
            version: c.current_version,
            rows: c.fields.iter().map(FieldRow::of).collect(),
            errors: vec![],
        }
        .with_blanks(),
    )
}

#[handler]
pub async fn change_schema(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(category): Path<String>,
    f: Fields,
) -> Response {
    save_schema(&state, req, Some(&category), &f).await
}

/// The schema editor's form: a new category (`category` None) or version N+1 of
/// one, made against the version the form was opened at.
async fn save_schema(
    state: &AppState,
    req: &Request,
    category: Option<&str>,
    f: &Fields,
) -> Response {
    let s = or_page!(super::sender(state, req, "data", f).await);
    let (rows, fields, mut errors) = read_rows(f);
    let name = category.map_or_else(|| f.get("name").trim().to_string(), str::to_string);
    let description = f.get("description").trim().to_string();
    let version: i32 = f.get("version").parse().unwrap_or(0);
    let mut status = StatusCode::OK;
    if errors.is_empty() {
        let saved = match category {
            None => categories::create(state, &s.principal, &name, &description, &fields).await,
            Some(c) => {
                let expected = Some(version).filter(|v| *v > 0);
                categories::update(
                    state,
                    &s.principal,
                    c,
                    Some(&description),
                    &fields,
                    expected,
                )
                .await
            }
        };
        match saved.map_err(super::refused) {
            Ok(c) if category.is_none() => return see_other(&format!("/data/{}", c.name)),
            Ok(c) => {
                let what = format!("schema of {} is at version {} now", c.name, c.version);
                return super::done(&format!("/data/{}", c.name), &what);
            }
            Err(Ok((st, why))) => (status, errors) = (st, why),
            Err(Err(e)) => return s.failure("data", e),
        }
    }
    let title = match category {
        None => "New category".to_string(),
        Some(c) => format!("Schema of {c}"),
    };
    page_with(
        status,
        SchemaEditor {
            frame: &s.frame(title, "data"),
            category,
            name,
            description,
            version,
            rows,
            errors,
        }
        .with_blanks(),
    )
}

#[derive(TemplateSimple)]
#[template(path = "versions.stpl")]
struct Versions<'a> {
    frame: &'a Frame,
    category: &'a str,
    versions: Vec<categories::Version>,
    a: i32,
    b: i32,
    changes: Vec<FieldChange>,
}

#[handler]
pub async fn versions_page(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(category): Path<String>,
    q: Fields,
) -> Response {
    let s = or_page!(super::user(&state, req).await);
    let versions = match categories::versions(&state, &category).await {
        Ok(v) => v,
        Err(e) => return s.failure("data", e),
    };
    let last = versions.last().map_or(1, |v| v.version);
    let b: i32 = q.get("b").parse().unwrap_or(last);
    let a: i32 = q.get("a").parse().unwrap_or((b - 1).max(1));
    let fields = |n: i32| versions.iter().find(|v| v.version == n).map(|v| &v.fields);
    let changes = match (fields(a), fields(b)) {
        (Some(x), Some(y)) => crate::model::schema::diff(x, y),
        _ => {
            let e = ApiError::not_found(format!("{category} has versions 1 to {last}"));
            return s.failure("data", e);
        }
    };
    page(Versions {
        frame: &s.frame(format!("Versions of {category}"), "data"),
        category: &category,
        versions,
        a,
        b,
        changes,
    })
}

/// A time bound as the explorer takes it: RFC 3339, a `datetime-local` value (UTC),
/// or `now`, `now-15m`, `now-1h`, `now-7d` (kept as typed in the URL, so a bookmark of
/// "the last hour" stays the last hour).
pub fn time_bound(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("now") {
        let rest = rest.trim();
        if rest.is_empty() {
            return Ok(now);
        }
        let ago = rest
            .strip_prefix('-')
            .and_then(|d| humantime::parse_duration(d.trim()).ok())
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .ok_or_else(|| {
                format!("`{s}`: write now, or now-DURATION such as now-15m, now-1h, now-7d")
            })?;
        return Ok(now - ago);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    Err(format!(
        "`{s}` is not a time: write 2026-12-06T10:00 (UTC), an RFC 3339 time, or now-1h"
    ))
}

/// What the explorer's URL asks for.
struct View {
    query: Query,
    /// The time bounds as typed (`now-1h` stays relative in links).
    from_text: String,
    to_text: String,
    order: Order,
    cursor: Option<String>,
    limit: u32,
    chart: Option<String>,
    agg: String,
    width: u32,
    errors: Vec<String>,
}

/// Aggregations the chart offers.
const AGGS: &[&str] = &["avg", "min", "max", "sum", "count"];

/// Records per explorer page.
const PAGE: u32 = 100;

impl View {
    /// The selection as a query string (`target`, `from`, `to`, `filter`, `order`):
    /// what the export, the live stream and the REST API are asked with.
    fn selection(&self) -> String {
        let mut pairs: Vec<(&str, &str)> = vec![];
        if let Some(t) = &self.query.target {
            pairs.push(("target", t));
        }
        if !self.from_text.is_empty() {
            pairs.push(("from", &self.from_text));
        }
        if !self.to_text.is_empty() {
            pairs.push(("to", &self.to_text));
        }
        for f in &self.query.filters {
            pairs.push(("filter", f));
        }
        pairs.push(("order", self.order.as_str()));
        Fields::of(&pairs).query(&[])
    }

    fn of(q: &Fields, now: DateTime<Utc>) -> View {
        let mut errors = vec![];
        let mut bound = |k: &str| {
            q.opt(k).and_then(|v| {
                time_bound(v, now)
                    .map_err(|e| errors.push(format!("{k}: {e}")))
                    .ok()
            })
        };
        let (from, to) = (bound("from"), bound("to"));
        let agg = q.opt("agg").filter(|a| AGGS.contains(a)).unwrap_or("avg");
        // Filters come written out (`filter=temp:gt:20`, as links and the REST API
        // write them) or as the form's field / operator / value triples.
        let mut filters: Vec<String> = q
            .all("filter")
            .into_iter()
            .map(|f| f.trim().to_string())
            .filter(|f| !f.is_empty())
            .collect();
        let (ff, fo, fv) = (q.all("ff"), q.all("fo"), q.all("fv"));
        for (i, field) in ff.iter().enumerate() {
            let field = field.trim();
            if !field.is_empty() {
                let op = fo.get(i).copied().unwrap_or("eq");
                filters.push(format!("{field}:{op}:{}", fv.get(i).copied().unwrap_or("")));
            }
        }
        View {
            from_text: q.opt("from").unwrap_or("").to_string(),
            to_text: q.opt("to").unwrap_or("").to_string(),
            query: Query {
                target: q.opt("target").map(str::to_string),
                from,
                to,
                filters,
            },
            order: if q.get("order") == "asc" {
                Order::Asc
            } else {
                Order::Desc
            },
            cursor: q.opt("cursor").map(str::to_string),
            limit: q.get("limit").parse().unwrap_or(PAGE).clamp(1, 1000),
            chart: q.opt("chart").map(str::to_string),
            agg: agg.to_string(),
            width: q.get("width").parse().unwrap_or(960).clamp(240, 4000),
            errors,
        }
    }
}

/// One cell of a record row.
pub enum Cell {
    /// The value, as text.
    Value(String),
    /// No value (the field existed in the record's version).
    Empty,
    /// The field did not exist in the record's version.
    Absent(i32),
}

/// A record as a table row.
pub struct RowView {
    target: String,
    ts: String,
    version: i32,
    cells: Vec<Cell>,
}

/// A value as a cell shows it.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Records (as stored records are shown) as rows of the columns `columns`, each
/// value against the fields of the version it was stored with.
async fn rows(
    state: &AppState,
    category: &str,
    columns: &[String],
    records: Vec<Map<String, Value>>,
) -> Vec<RowView> {
    let mut known: HashMap<i32, Option<Arc<Schema>>> = HashMap::new();
    let mut out = vec![];
    for r in records {
        let version = r.get("schema_version").and_then(Value::as_i64).unwrap_or(0) as i32;
        if let std::collections::hash_map::Entry::Vacant(e) = known.entry(version) {
            e.insert(categories::schema(state, category, version).await);
        }
        let had = |f: &str| {
            known[&version]
                .as_ref()
                .is_none_or(|s| s.fields.iter().any(|x| x.name == f))
        };
        let cells = columns
            .iter()
            .map(|c| match r.get(c) {
                Some(v) if !v.is_null() => Cell::Value(text(v)),
                _ if had(c) => Cell::Empty,
                _ => Cell::Absent(version),
            })
            .collect();
        out.push(RowView {
            target: r.get("target").map(text).unwrap_or_default(),
            ts: r.get("ts").map(text).unwrap_or_default(),
            version,
            cells,
        });
    }
    out
}

#[derive(TemplateSimple)]
#[template(path = "record_rows.stpl")]
struct RecordRows {
    rows: Vec<RowView>,
}

/// The explorer's chart, or why there is none.
struct ChartView {
    /// The numeric fields offered.
    fields: Vec<String>,
    /// The one shown.
    field: Option<String>,
    /// The picture.
    chart: Option<Chart>,
    /// The window and bucket, in words.
    caption: String,
    /// Why nothing is drawn.
    note: Option<String>,
}

/// Most lines one chart draws (targets).
const MAX_LINES: usize = 8;

#[derive(serde::Deserialize)]
struct Bucket {
    target: String,
    bucket: DateTime<Utc>,
    count: i64,
    min: Option<f64>,
    max: Option<f64>,
    avg: Option<f64>,
    sum: Option<f64>,
}

async fn chart(
    state: &AppState,
    s: &Signed,
    schema: &Category,
    view: &View,
    newest: Option<DateTime<Utc>>,
) -> ChartView {
    let fields: Vec<String> = schema
        .fields
        .iter()
        .filter(|f| matches!(f.kind, FieldType::Int | FieldType::Float))
        .map(|f| f.name.clone())
        .collect();
    let field = view
        .chart
        .clone()
        .filter(|c| fields.contains(c))
        .or_else(|| fields.first().cloned());
    let mut out = ChartView {
        fields,
        field: field.clone(),
        chart: None,
        caption: String::new(),
        note: None,
    };
    let Some(field) = field else {
        out.note = Some("No numeric field to chart.".into());
        return out;
    };
    let now = Utc::now();
    let (from, to) = match (view.query.from, view.query.to) {
        (Some(f), Some(t)) => (f, t),
        (Some(f), None) => (f, now.max(f + chrono::Duration::seconds(1))),
        (None, Some(t)) => (t - chrono::Duration::days(1), t),
        // The day up to the newest record, from the first record in it.
        (None, None) => match newest {
            Some(n) => {
                let day = Query {
                    from: Some(n - chrono::Duration::days(1)),
                    ..view.query.clone()
                };
                let first =
                    records::page(state, &s.principal, &schema.name, &day, Order::Asc, 1, None)
                        .await
                        .ok()
                        .and_then(|p| p.records.first().cloned())
                        .and_then(|r| serde_json::from_str::<Map<String, Value>>(&r).ok())
                        .and_then(|r| r.get("ts").and_then(Value::as_str).map(str::to_string))
                        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                        .map(|t| t.with_timezone(&Utc));
                (
                    first.unwrap_or(n - chrono::Duration::hours(1)),
                    n + chrono::Duration::seconds(1),
                )
            }
            None => {
                out.note = Some("No records to chart.".into());
                return out;
            }
        },
    };
    if to <= from {
        out.note = Some("The time range is empty.".into());
        return out;
    }
    // Whole buckets: the chart draws them all, and the aggregation can read them
    // from the rollups when they are whole minutes or hours.
    let bucket = svg::bucket_secs(from, to, view.width);
    let (from, to) = (
        svg::boundary(from, bucket, false),
        svg::boundary(to, bucket, true),
    );
    let q = Query {
        from: Some(from),
        to: Some(to),
        ..view.query.clone()
    };
    let width = std::time::Duration::from_secs(bucket as u64);
    out.caption = format!(
        "{} of {field} per {} bucket (whole buckets), {} to {}",
        view.agg,
        humantime::format_duration(width),
        super::frame::time(&from),
        super::frame::time(&to)
    );
    let buckets =
        records::aggregate(state, &s.principal, &schema.name, &q, &field, width, false).await;
    let buckets: Vec<Bucket> = match buckets.map(|b| serde_json::from_str(&b)) {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            out.note = Some(format!("the buckets could not be read: {e}"));
            return out;
        }
        Err(e) => {
            out.note = Some(super::reasons(&e).join("; "));
            return out;
        }
    };
    let mut series: BTreeMap<String, Vec<(DateTime<Utc>, f64)>> = BTreeMap::new();
    let mut targets = 0;
    for b in buckets {
        if !series.contains_key(&b.target) {
            targets += 1;
            if series.len() >= MAX_LINES {
                continue;
            }
        }
        let v = match view.agg.as_str() {
            "min" => b.min,
            "max" => b.max,
            "sum" => b.sum,
            "count" => Some(b.count as f64),
            _ => b.avg,
        };
        if let Some(v) = v {
            series.entry(b.target).or_default().push((b.bucket, v));
        }
    }
    if targets > MAX_LINES {
        out.note = Some(format!(
            "{MAX_LINES} of {targets} targets drawn; choose a target to see another"
        ));
    }
    if series.is_empty() {
        out.note = Some("No values in this range.".into());
        return out;
    }
    out.chart = Some(svg::chart(&series, from, to, bucket, view.width));
    out
}

#[derive(TemplateSimple)]
#[template(path = "explore.stpl")]
struct Explore<'a> {
    frame: &'a Frame,
    category: Category,
    target: String,
    from: String,
    to: String,
    limit: u32,
    filters: Vec<(String, String, String)>,
    columns: Vec<String>,
    rows: Vec<RowView>,
    errors: Vec<String>,
    order: Order,
    next: Option<String>,
    first_page: bool,
    selection: String,
    chart: ChartView,
    agg: String,
    done: Option<&'a str>,
    script: String,
}

#[handler]
pub async fn explore(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(category): Path<String>,
    q: Fields,
) -> Response {
    let s = or_page!(super::user(&state, req).await);
    let c = match categories::get(&state, &category, None).await {
        Ok(c) => c,
        Err(e) => return s.failure("data", e),
    };
    if let Err(d) = s.principal.require_read(&c.name) {
        return s.failure("data", d.into());
    }
    let mut view = View::of(&q, Utc::now());
    let columns: Vec<String> = c.fields.iter().map(|f| f.name.clone()).collect();
    let mut shown = vec![];
    let mut next = None;
    if view.errors.is_empty() {
        let p = records::page(
            &state,
            &s.principal,
            &c.name,
            &view.query,
            view.order,
            view.limit,
            view.cursor.as_deref(),
        )
        .await;
        match p {
            Ok(p) => {
                next = p.next.map(|c| c.to_string());
                shown = p
                    .records
                    .iter()
                    .filter_map(|r| serde_json::from_str::<Map<String, Value>>(r).ok())
                    .collect();
            }
            Err(e) => view.errors.extend(super::reasons(&e)),
        }
    }
    // The newest record on screen dates the chart when no range is set; an older
    // page, or oldest first, asks for it.
    let newest = if view.errors.is_empty() && view.order == Order::Desc && view.cursor.is_none() {
        shown
            .first()
            .and_then(|r| r.get("ts"))
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    } else if view.errors.is_empty() {
        records::newest(&state, &s.principal, &c.name, &view.query)
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    let chart_view = if view.errors.is_empty() {
        chart(&state, &s, &c, &view, newest).await
    } else {
        ChartView {
            fields: vec![],
            field: None,
            chart: None,
            caption: String::new(),
            note: Some("Fix the selection to see the chart.".into()),
        }
    };
    let rows = rows(&state, &c.name, &columns, shown).await;
    let selection = view.selection();
    let first_page = view.cursor.is_none();
    let filters = view
        .query
        .filters
        .iter()
        .map(|f| {
            let mut p = f.splitn(3, ':').map(str::to_string);
            let (a, b, c) = (p.next(), p.next(), p.next());
            (
                a.unwrap_or_default(),
                b.unwrap_or_default(),
                c.unwrap_or_default(),
            )
        })
        .collect();
    page(Explore {
        frame: &s.frame(c.name.clone(), "data"),
        target: view.query.target.clone().unwrap_or_default(),
        from: view.from_text.clone(),
        to: view.to_text.clone(),
        limit: view.limit,
        filters,
        category: c,
        columns,
        rows,
        errors: view.errors,
        order: view.order,
        next,
        first_page,
        selection,
        chart: chart_view,
        agg: view.agg,
        done: q.opt("done"),
        script: super::frame::asset("explorer.js"),
    })
}

/// New records of the selection in the URL as Server-Sent Events: `rows`, the table
/// rows of one committed batch (newest first), rendered as the explorer renders its
/// page; the id is the event's sequence (EventSource resumes after it).
#[handler]
pub async fn stream(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(category): Path<String>,
    q: Fields,
) -> Response {
    let s = or_page!(super::user(&state, req).await);
    let c = match categories::get(&state, &category, None).await {
        Ok(c) => c,
        Err(e) => return s.failure("data", e),
    };
    let view = View::of(&q, Utc::now());
    if let Some(e) = view.errors.first() {
        return s.failure("data", ApiError::bad_request(e.clone()));
    }
    let after = req
        .header("last-event-id")
        .and_then(|v| v.parse::<u64>().ok());
    let events = match records::follow(&state, &s.principal, &c.name, &view.query, after).await {
        Ok(e) => e,
        Err(e) => return s.failure("data", e),
    };
    let columns: Vec<String> = c.fields.iter().map(|f| f.name.clone()).collect();
    let state = state.0.clone();
    let name = c.name.clone();
    use futures_util::StreamExt;
    let events = events.filter_map(move |e| {
        let (state, name, columns) = (state.clone(), name.clone(), columns.clone());
        async move {
            let batch: Vec<Map<String, Value>> = e
                .data
                .get("records")?
                .as_array()?
                .iter()
                .rev()
                .filter_map(|r| r.as_object().cloned())
                .collect();
            let html = RecordRows {
                rows: rows(&state, &name, &columns, batch).await,
            }
            .render_once()
            .ok()?;
            Some(
                poem::web::sse::Event::message(html)
                    .event_type("rows")
                    .id(e.seq.to_string()),
            )
        }
    });
    poem::web::sse::SSE::new(events)
        .keep_alive(std::time::Duration::from_secs(15))
        .into_response()
}

/// The selection in the URL as a file: CSV or NDJSON, streamed.
#[handler]
pub async fn export(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(category): Path<String>,
    q: Fields,
) -> Response {
    let s = or_page!(super::user(&state, req).await);
    let view = View::of(&q, Utc::now());
    if let Some(e) = view.errors.first() {
        return s.failure("data", ApiError::bad_request(e.clone()));
    }
    let csv = q.get("format") == "csv";
    let body = records::export(
        &state,
        &s.principal,
        &category,
        &view.query,
        view.order,
        csv,
    )
    .await;
    match body {
        Ok(body) => {
            let (ext, ct) = if csv {
                ("csv", "text/csv")
            } else {
                ("ndjson", "application/x-ndjson")
            };
            Response::builder()
                .content_type(ct)
                .header(
                    poem::http::header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{category}.{ext}\""),
                )
                .body(body)
        }
        Err(e) => s.failure("data", e),
    }
}

#[handler]
pub async fn confirm_delete(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(category): Path<String>,
) -> Response {
    let s = or_page!(super::user(&state, req).await);
    if let Err(d) = s.principal.require_editor() {
        return s.failure("data", d.into());
    }
    if let Err(e) = categories::get(&state, &category, None).await {
        return s.failure("data", e);
    }
    let frame = s.frame(format!("Delete {category}"), "data");
    let mut c = Confirm::new(
        &frame,
        format!("Delete the category {category}?"),
        format!("/data/{category}/delete"),
        format!("Delete {category}"),
    );
    c.alone = "Its schema versions, rollups and dead letters go with it; its sources stop. A category that still has records is kept unless you also tick the box.".into();
    c.checkbox = Some((
        "force",
        "Also delete every record it has (they cannot be restored)",
    ));
    c.cancel = format!("/data/{category}");
    page(c)
}

#[handler]
pub async fn delete(
    state: Data<&Arc<AppState>>,
    req: &Request,
    Path(category): Path<String>,
    f: Fields,
) -> Response {
    let s = or_page!(super::sender(&state, req, "data", &f).await);
    match categories::delete(&state, &s.principal, &category, f.get("force") == "true").await {
        Ok(n) => super::done(
            "/data",
            &format!("category {category} deleted with {n} record(s)"),
        ),
        Err(e) => s.failure("data", e),
    }
}
