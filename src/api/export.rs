//! Streamed export of a category's records as NDJSON or CSV: rows are read from a
//! server-side cursor and sent in ~64 KiB chunks, so memory stays flat for any size.

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::Value;

use crate::db::{quote, table};
use crate::model::schema::Schema;

/// CSV field quoting (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The body of an export response.
pub fn stream(
    pool: sqlx::PgPool,
    schema: Schema,
    csv: bool,
    target: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> poem::Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    tokio::spawn(async move {
        let names: Vec<String> = schema.fields.iter().map(|f| f.name.clone()).collect();
        let cols: Vec<String> = names.iter().map(|n| quote(n)).collect();
        let sql = format!(
            "SELECT to_jsonb(x) FROM (SELECT target, ts, schema_version{}{} FROM {} WHERE ($1::text IS NULL OR target = $1) \
             AND ($2::timestamptz IS NULL OR ts >= $2) AND ($3::timestamptz IS NULL OR ts < $3) ORDER BY ts, id) x",
            if cols.is_empty() { "" } else { ", " },
            cols.join(", "),
            quote(&table(&schema.category))
        );
        let mut buf = Vec::with_capacity(64 * 1024);
        if csv {
            let mut head = vec!["target".to_string(), "ts".into(), "schema_version".into()];
            head.extend(names.iter().cloned());
            buf.extend_from_slice(head.join(",").as_bytes());
            buf.push(b'\n');
        }
        let mut rows = sqlx::query_scalar::<_, Value>(sqlx::AssertSqlSafe(sql))
            .bind(target)
            .bind(from)
            .bind(to)
            .fetch(&pool);
        while let Some(row) = rows.next().await {
            let row = match row {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("export of {} failed: {e}", schema.category);
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            if csv {
                let cell = |k: &str| match row.get(k) {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => csv_field(s),
                    Some(v) => csv_field(&v.to_string()),
                };
                let mut line: Vec<String> =
                    vec![cell("target"), cell("ts"), cell("schema_version")];
                line.extend(names.iter().map(|n| cell(n)));
                buf.extend_from_slice(line.join(",").as_bytes());
            } else {
                let mut r = row;
                if let Value::Object(m) = &mut r {
                    m.retain(|_, v| !v.is_null());
                }
                let _ = serde_json::to_writer(&mut buf, &r);
            }
            buf.push(b'\n');
            if buf.len() >= 60 * 1024 && tx.send(Ok(std::mem::take(&mut buf))).await.is_err() {
                return;
            }
        }
        if !buf.is_empty() {
            let _ = tx.send(Ok(buf)).await;
        }
    });
    let s =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    poem::Body::from_bytes_stream(s.map(|r| r.map(tokio_util::bytes::Bytes::from)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(super::csv_field("plain"), "plain");
        assert_eq!(super::csv_field("a,b"), "\"a,b\"");
        assert_eq!(super::csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
