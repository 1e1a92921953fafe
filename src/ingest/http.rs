//! The data-manager's HTTP face: `POST /ingest/{category}` (the `http_push` source)
//! and `GET /healthz`, described by its own OpenAPI document (`openapi/ingest.json`,
//! served at `/openapi.json`), so SDK users push records with a generated client.
//!
//! A push body is a JSON array of records, NDJSON or CSV with a header row, chosen
//! by `Content-Type`; it is read as bytes and parsed by [`super::payload::read`], which
//! types CSV cells by the category's fields.

use std::sync::Arc;

use poem::web::Data;
use poem::{EndpointExt, Request, RequestBody, Route};
use poem_openapi::param::Path;
use poem_openapi::payload::{Json, ParsePayload, Payload, PlainText};
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::Type;
use poem_openapi::{ApiRequest, ApiResponse, OpenApi, OpenApiService};

use super::{Manager, PushError};
use crate::web::bearer::BearerOnly;
use crate::web::error::{ApiError, ApiResult};
use crate::web::intake::InsertResult;
use crate::web::names::CategoryName;

/// The largest push body (bytes); larger ones are 413.
pub const MAX_PUSH_BYTES: usize = 64 << 20;

/// Title of the data-manager's OpenAPI document.
pub const TITLE: &str = "tmiDB ingest";

/// The push routes.
pub struct IngestApi;

/// A push body, by `Content-Type`.
#[derive(ApiRequest)]
pub enum PushBody {
    /// A JSON array of records: `target`, optional `ts` (RFC 3339; default: now) and
    /// the category's fields.
    Json(JsonRecords),
    /// One JSON record per line (`application/x-ndjson`; `application/ndjson` and
    /// `application/jsonl` are taken too). A line that is not JSON is rejected like an
    /// invalid record (listed by index, kept as a dead letter); the others are taken.
    Ndjson(NdjsonRecords),
    /// CSV with a header row of field names; cells are typed by the category's
    /// fields, empty cells are absent. A row whose cells do not match the header is
    /// rejected like an invalid record.
    Csv(CsvRecords),
}

/// Push answers.
#[derive(ApiResponse)]
pub enum Pushed {
    /// Taken: every valid record is in JetStream and will be stored exactly once;
    /// rejected ones (listed by index) are dead letters.
    #[oai(status = 202)]
    Accepted(Json<InsertResult>),
}

/// A body held as bytes, documented as `SCHEMA` under `CONTENT_TYPE`.
macro_rules! raw_payload {
    ($name:ident, $content_type:expr, [$($alias:expr),*], $schema:expr) => {
        #[doc = concat!("A push body sent as `", $content_type, "`.")]
        pub struct $name(pub Vec<u8>);

        impl Payload for $name {
            const CONTENT_TYPE: &'static str = $content_type;

            fn check_content_type(content_type: &str) -> bool {
                let essence = essence(content_type);
                [$content_type, $($alias),*].contains(&essence.as_str())
            }

            fn schema_ref() -> MetaSchemaRef {
                $schema
            }
        }

        impl ParsePayload for $name {
            const IS_REQUIRED: bool = true;

            async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
                read_limited(request, body).await.map($name)
            }
        }
    };
}

raw_payload!(JsonRecords, "application/json", [], record_array());
raw_payload!(
    NdjsonRecords,
    "application/x-ndjson",
    ["application/ndjson", "application/jsonl"],
    bytes_schema()
);
raw_payload!(CsvRecords, "text/csv", [], bytes_schema());

/// Text sent as it is (`format: binary`, so generated clients send bytes as given).
fn bytes_schema() -> MetaSchemaRef {
    poem_openapi::types::Binary::<Vec<u8>>::schema_ref()
}

/// An array of objects. Each is one record, checked on its own against the category
/// (a bad one becomes a dead letter, the rest is stored), so the document asks no more
/// of an item than being an object.
fn record_array() -> MetaSchemaRef {
    let mut record = MetaSchema::new("object");
    record.description = Some(
        "A record: `target` (1..200 characters), optional `ts` (RFC 3339) and the category's fields.",
    );
    let mut array = MetaSchema::new("array");
    array.items = Some(Box::new(MetaSchemaRef::Inline(Box::new(record))));
    MetaSchemaRef::Inline(Box::new(array))
}

/// `text/CSV; charset=utf-8` → `text/csv`.
fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

async fn read_limited(request: &Request, body: &mut RequestBody) -> poem::Result<Vec<u8>> {
    let too_large = || {
        ApiError::too_large(format!(
            "a push takes at most {MAX_PUSH_BYTES} bytes; split it into several"
        ))
    };
    if request
        .header("content-length")
        .and_then(|l| l.parse::<usize>().ok())
        .is_some_and(|l| l > MAX_PUSH_BYTES)
    {
        return Err(too_large().into());
    }
    let b = body.take()?;
    b.into_bytes_limit(MAX_PUSH_BYTES)
        .await
        .map(|b| b.to_vec())
        .map_err(|e| {
            if matches!(e, poem::error::ReadBodyError::PayloadTooLarge) {
                too_large().into()
            } else {
                poem::Error::from(ApiError::bad_request(format!("cannot read the body: {e}")))
            }
        })
}

#[OpenApi]
impl IngestApi {
    /// Push records into a category (a token with `write:CATEGORY`). Each record is
    /// transformed by the category's `http_push` source, if one is defined, and
    /// validated against the category's current schema; an NDJSON line that is not
    /// JSON, or a CSV row that does not match the header, is rejected like an invalid
    /// record. 202 when at least one record was taken; 400 when every record was rejected (all kept as dead letters); 429
    /// with Retry-After when the pipeline's backlog is full or too many pushes are in
    /// flight (nothing was taken: retry).
    #[oai(
        path = "/ingest/:category",
        method = "post",
        operation_id = "pushRecords"
    )]
    async fn push(
        &self,
        m: Data<&Arc<Manager>>,
        auth: BearerOnly,
        category: Path<CategoryName>,
        body: PushBody,
    ) -> ApiResult<Pushed> {
        let (content_type, bytes) = match body {
            PushBody::Json(b) => (JsonRecords::CONTENT_TYPE, b.0),
            PushBody::Ndjson(b) => (NdjsonRecords::CONTENT_TYPE, b.0),
            PushBody::Csv(b) => (CsvRecords::CONTENT_TYPE, b.0),
        };
        let result = super::push_batch(&m, &auth.0, &category.0, content_type, &bytes).await?;
        Ok(Pushed::Accepted(Json(result)))
    }

    /// Liveness: the data-manager answers.
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> PlainText<&'static str> {
        PlainText("ok")
    }
}

impl From<PushError> for ApiError {
    fn from(e: PushError) -> ApiError {
        let message = e.to_string();
        match e {
            PushError::Busy(_) | PushError::Saturated(_) => ApiError::too_many(message, 1),
            PushError::Unavailable(_) => ApiError::unavailable(message),
            PushError::Category(e) => e.into(),
            PushError::Db(e) => e.into(),
            PushError::Denied(d) => d.into(),
            PushError::Malformed(_) => ApiError::bad_request(message),
            PushError::AllRejected { errors, .. } => ApiError::invalid(message, errors),
        }
    }
}

/// The OpenAPI service of the data-manager.
pub fn service() -> OpenApiService<IngestApi, ()> {
    OpenApiService::new(IngestApi, TITLE, env!("CARGO_PKG_VERSION"))
        .description(
            "The tmiDB data-manager's push endpoint (the `ingest` port): records in, validated against their category, into the pipeline. Strings must not contain NUL (a record holding one becomes a dead letter).",
        )
        .server("/")
}

/// The document as served at `/openapi.json` and committed in `openapi/ingest.json`.
pub fn spec_json() -> String {
    crate::web::refine(&service().spec())
}

/// What the data-manager's document promises (its push bodies are not checked as a
/// whole: each record is validated against its category, and a bad one becomes a dead
/// letter while the rest is stored).
fn contract() -> &'static crate::web::boundary::Contract {
    static CONTRACT: std::sync::OnceLock<crate::web::boundary::Contract> =
        std::sync::OnceLock::new();
    CONTRACT.get_or_init(|| crate::web::boundary::Contract::new(&spec_json()))
}

/// The data-manager's HTTP application over `m`.
pub fn app(m: Arc<Manager>) -> impl poem::Endpoint {
    let spec = spec_json();
    contract();
    Route::new()
        .nest("/", service())
        .at(
            "/openapi.json",
            poem::endpoint::make_sync(move |_| {
                poem::Response::builder()
                    .content_type("application/json; charset=utf-8")
                    .body(spec.clone())
            }),
        )
        .at("/metrics", crate::metrics::endpoint(m.pool.clone(), None))
        .data(m.pool.clone())
        .data(m)
        .around(|ep, req| crate::web::boundary::json_errors(ep, req, contract()))
        .around(crate::metrics::track_http)
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_openapi_ingest_spec_matches_the_code() {
        crate::golden::assert(
            "openapi/ingest.json",
            super::spec_json().as_bytes(),
            "run `make openapi` and commit it",
        );
    }
}
