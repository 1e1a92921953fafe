//! Streamed export of a category's records as NDJSON or CSV (RFC 4180, written by
//! `csv::Writer`: CRLF line ends, fields quoted where needed): rows come from a
//! server-side cursor ([`crate::db::records::rows`]) and are sent in ~64 KiB chunks,
//! so memory stays flat for any size.

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::Value;

use crate::model::schema::Schema;

/// Bytes sent at a time (about).
const CHUNK: usize = 60 * 1024;

/// What an export has written and not sent yet.
enum Out {
    Ndjson(Vec<u8>),
    Csv(Box<csv::Writer<Vec<u8>>>),
}

fn csv_writer() -> Box<csv::Writer<Vec<u8>>> {
    Box::new(
        csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(Vec::with_capacity(CHUNK + 8 * 1024)),
    )
}

impl Out {
    /// Bytes ready to send (the CSV writer keeps up to 8 KiB more in its own buffer).
    fn len(&self) -> usize {
        match self {
            Out::Ndjson(b) => b.len(),
            Out::Csv(w) => w.get_ref().len(),
        }
    }

    /// Everything written so far.
    fn take(&mut self) -> Vec<u8> {
        match self {
            Out::Ndjson(b) => std::mem::take(b),
            Out::Csv(w) => std::mem::replace(w, csv_writer())
                .into_inner()
                .expect("writing to memory"),
        }
    }
}

/// The body of an export response: `rows` (each with `target`, `ts`,
/// `schema_version` and every field of `schema`) as CSV (a header line, then one line
/// per record, empty cells for missing values) or NDJSON (missing values left out).
pub fn stream(
    schema: &Schema,
    mut rows: BoxStream<'static, Result<Value, sqlx::Error>>,
    csv: bool,
) -> poem::Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    let category = schema.category.clone();
    let names: Vec<String> = schema.fields.iter().map(|f| f.name.clone()).collect();
    tokio::spawn(async move {
        let mut out = if csv {
            let mut w = csv_writer();
            let head = ["target", "ts", "schema_version"]
                .into_iter()
                .chain(names.iter().map(String::as_str));
            w.write_record(head).expect("writing to memory");
            Out::Csv(w)
        } else {
            Out::Ndjson(Vec::with_capacity(CHUNK))
        };
        while let Some(row) = rows.next().await {
            let row = match row {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("export of {category} failed: {e}");
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            match &mut out {
                Out::Csv(w) => {
                    let cell = |k: &str| match row.get(k) {
                        None | Some(Value::Null) => String::new(),
                        Some(Value::String(s)) => s.clone(),
                        Some(v) => v.to_string(),
                    };
                    let line = ["target", "ts", "schema_version"]
                        .into_iter()
                        .chain(names.iter().map(String::as_str))
                        .map(cell);
                    w.write_record(line).expect("writing to memory");
                }
                Out::Ndjson(buf) => {
                    let mut r = row;
                    if let Value::Object(m) = &mut r {
                        m.retain(|_, v| !v.is_null());
                    }
                    let _ = serde_json::to_writer(&mut *buf, &r);
                    buf.push(b'\n');
                }
            }
            if out.len() >= CHUNK && tx.send(Ok(out.take())).await.is_err() {
                return;
            }
        }
        let rest = out.take();
        if !rest.is_empty() {
            let _ = tx.send(Ok(rest)).await;
        }
    });
    let s =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    poem::Body::from_bytes_stream(s.map(|r| r.map(tokio_util::bytes::Bytes::from)))
}
