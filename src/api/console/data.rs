//! Data: the categories with their schema versions (and a diff between any two), the
//! schema editor (a stale edit is refused: the form carries the version it was
//! opened at), and deleting a category after a confirmation. Its records are
//! [`super::explorer`]'s.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{Request, Response, handler};
use sailfish::TemplateSimple;
use serde_json::Value;

use super::frame::Frame;
use super::svg::{self};
use super::system::Confirm;
use super::{Fields, Signed, or_page, page, page_with, see_other};
use crate::api::{AppState, categories};
use crate::db::categories::Category;
use crate::model::schema::{Field, FieldChange, FieldType};
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

/// The category `name` at its current version, or its error page.
// The error is the handler's whole answer, made at most once per request.
#[allow(clippy::result_large_err)]
pub(super) async fn category_of(
    state: &AppState,
    s: &Signed,
    name: &str,
) -> Result<Category, Response> {
    categories::get(state, name, None)
        .await
        .map_err(|e| s.failure("data", e))
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
    let c = or_page!(category_of(&state, &s, &category).await);
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
    or_page!(category_of(&state, &s, &category).await);
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
