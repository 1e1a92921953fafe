//! The explorer of a category's records. Its view lives in its URL (target, time
//! range, field filters, order, the page's cursor, the chart's field and
//! aggregation), so it can be bookmarked and shared. Records come newest first by
//! keyset pages (never a count); each value is shown against the schema version it
//! was stored with (a field that version did not have reads "not in vN"). The
//! chart's buckets follow its width, with a hard cap on points; the export streams
//! exactly the selection on screen; the first page follows new records live.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use poem::web::{Data, Path};
use poem::{IntoResponse, Request, Response, handler};
use sailfish::TemplateSimple;
use serde_json::{Map, Value};

use super::frame::Frame;
use super::svg::{self, Chart};
use super::{Fields, Signed, or_page, page};
use crate::api::records::{self as records, Query};
use crate::api::{AppState, categories};
use crate::db::categories::Category;
use crate::model::query::Order;
use crate::model::schema::{FieldType, Schema};
use crate::web::error::ApiError;
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
    let c = or_page!(super::data::category_of(&state, &s, &category).await);
    if let Err(d) = s.principal.require_read(&c.name) {
        return s.failure("data", d.into());
    }
    let mut view = View::of(&q, Utc::now());
    let columns: Vec<String> = c.fields.iter().map(|f| f.name.clone()).collect();
    let mut shown = vec![];
    let mut next = None;
    let fix_first = ChartView {
        fields: vec![],
        field: None,
        chart: None,
        caption: String::new(),
        note: Some("Fix the selection to see the chart.".into()),
    };
    // With a time range the chart does not wait for the page: both are read at once.
    let ranged = view.query.from.is_some() || view.query.to.is_some();
    let reading = async {
        if !view.errors.is_empty() {
            return None;
        }
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
        Some(p)
    };
    let early = async {
        if ranged && view.errors.is_empty() {
            Some(chart(&state, &s, &c, &view, None).await)
        } else {
            None
        }
    };
    let (p, early) = tokio::join!(reading, early);
    match p {
        Some(Ok(p)) => {
            next = p.next.map(|c| c.to_string());
            shown = p
                .records
                .iter()
                .filter_map(|r| serde_json::from_str::<Map<String, Value>>(r).ok())
                .collect();
        }
        Some(Err(e)) => view.errors.extend(super::reasons(&e)),
        None => {}
    }
    let chart_view = match early {
        Some(c) if view.errors.is_empty() => c,
        _ if !view.errors.is_empty() => fix_first,
        _ => {
            // Without a range the chart ends at the newest record: the first on a
            // newest-first first page, otherwise asked for.
            let newest = if view.order == Order::Desc && view.cursor.is_none() {
                shown
                    .first()
                    .and_then(|r| r.get("ts"))
                    .and_then(Value::as_str)
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc))
            } else {
                records::newest(&state, &s.principal, &c.name, &view.query)
                    .await
                    .ok()
                    .flatten()
            };
            chart(&state, &s, &c, &view, newest).await
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
    let c = or_page!(super::data::category_of(&state, &s, &category).await);
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
