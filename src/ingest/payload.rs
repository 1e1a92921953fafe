//! The one reader of record payloads, for every source: a pushed body, a NATS message,
//! a dropped file and the output of an `exec` program.
//!
//! The rule is the same everywhere: **a record that cannot be read is rejected like a
//! record that fails validation.** An NDJSON line that is not JSON, or a CSV row whose
//! cells do not match the header, becomes a dead letter holding the text as received,
//! is listed in the answer (a push) or the report (a file), and the other records are
//! taken. Only what cannot be split into records at all is refused as a whole
//! ([`Malformed`]): a JSON document that does not parse, a CSV without a readable header
//! row. A push then answers 400, a file goes to `failed/`; a NATS message is read as
//! NDJSON when it is not one JSON document, so its lines are dead-lettered one by one.

use serde_json::Value;

use crate::model::schema::{FieldType, Schema};
use crate::model::transform::Transform;

/// How a payload is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A JSON array of records (a push with `application/json`).
    JsonArray,
    /// A JSON array of records or one record (a `.json` file).
    Json,
    /// One JSON record per line; blank lines are skipped.
    Ndjson,
    /// CSV with a header row of field names; cells are typed by the category's fields,
    /// empty cells are absent.
    Csv,
    /// One JSON document if it is one (an object or an array of them), NDJSON otherwise
    /// (a NATS message).
    Sniff,
}

impl Format {
    /// The format a push's `Content-Type` names (JSON arrays unless NDJSON or CSV).
    pub fn of_content_type(content_type: &str) -> Format {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Format::Ndjson,
            "text/csv" => Format::Csv,
            _ => Format::JsonArray,
        }
    }

    /// The format a file's extension names: `.csv`, `.ndjson` / `.jsonl`, else JSON.
    pub fn of_file(path: &std::path::Path) -> Format {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "csv" => Format::Csv,
            "ndjson" | "jsonl" => Format::Ndjson,
            _ => Format::Json,
        }
    }
}

/// One raw record and where it came from.
#[derive(Debug, Clone)]
pub struct Item {
    /// Where it was in its payload (`m7.csv line 3`, `push index 2`, …), for dead letters.
    pub position: String,
    /// The record as received (for an unreadable one: its text).
    pub raw: Value,
    /// Why the record could not be read, if it could not: it is dead-lettered as it is.
    pub unreadable: Option<String>,
}

impl Item {
    /// A record read as `raw`.
    pub fn new(position: String, raw: Value) -> Item {
        Item {
            position,
            raw,
            unreadable: None,
        }
    }

    /// One line of text: a JSON record, or an unreadable item holding the line.
    pub fn line(position: String, text: &[u8]) -> Item {
        match serde_json::from_slice(text) {
            Ok(raw) => Item::new(position, raw),
            Err(e) => Item {
                position,
                raw: Value::String(String::from_utf8_lossy(text).into_owned()),
                // One line: its column says where, its line number is the item's.
                unreadable: Some(format!(
                    "not JSON: {} (column {})",
                    json_reason(&e),
                    e.column()
                )),
            },
        }
    }
}

/// serde_json's reason without its " at line L column C" (the caller says where).
fn json_reason(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// A payload that cannot be split into records (refused as a whole).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// The records of `body`, laid out as `format`, each positioned under `label` (`push`,
/// a file name, `stream sequence 7`). CSV cells are typed by the field each column
/// becomes once `transform` renamed it; a cell that does not parse stays text, so the
/// validator names the field.
pub fn read(
    format: Format,
    body: &[u8],
    label: &str,
    schema: &Schema,
    transform: &Transform,
) -> Result<Vec<Item>, Malformed> {
    match format {
        Format::Ndjson => Ok(lines(body, label)),
        Format::Csv => csv_rows(body, label, schema, transform),
        Format::JsonArray => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(a)) => Ok(indexed(a, label)),
            Ok(_) => Err(Malformed(
                "the body must be a JSON array of records (or NDJSON / CSV with that Content-Type)"
                    .into(),
            )),
            Err(e) => Err(Malformed(format!(
                "the body must be a JSON array of records (or NDJSON / CSV with that Content-Type): {e}"
            ))),
        },
        Format::Json => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(a)) => Ok(indexed(a, label)),
            Ok(one) => Ok(vec![Item::new(label.to_string(), one)]),
            Err(e) => Err(Malformed(format!("not JSON: {e}"))),
        },
        Format::Sniff => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(a)) => Ok(indexed(a, label)),
            Ok(one) => Ok(vec![Item::new(label.to_string(), one)]),
            Err(_) => Ok(lines(body, label)),
        },
    }
}

fn indexed(a: Vec<Value>, label: &str) -> Vec<Item> {
    a.into_iter()
        .enumerate()
        .map(|(i, raw)| Item::new(format!("{label} index {i}"), raw))
        .collect()
}

/// NDJSON, positioned by line number (blank lines count, so a position is the line an
/// editor shows).
fn lines(body: &[u8], label: &str) -> Vec<Item> {
    body.split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        .map(|(i, l)| Item::line(format!("{label} line {}", i + 1), l.trim_ascii()))
        .collect()
}

fn csv_rows(
    body: &[u8],
    label: &str,
    schema: &Schema,
    transform: &Transform,
) -> Result<Vec<Item>, Malformed> {
    let mut rd = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(body);
    let header: Vec<String> = rd
        .headers()
        .map_err(|e| Malformed(format!("CSV header: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    // The type of each column: the field it becomes once renamed.
    let kinds: Vec<Option<FieldType>> = header
        .iter()
        .map(|k| {
            let name = transform.rename.get(k).unwrap_or(k);
            schema
                .fields
                .iter()
                .find(|f| f.name == *name)
                .map(|f| f.kind)
        })
        .collect();
    let mut out = vec![];
    let mut row = csv::ByteRecord::new();
    loop {
        let line = rd.position().line();
        match rd.read_byte_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                out.push(Item {
                    position: format!("{label} line {line}"),
                    raw: Value::Null,
                    unreadable: Some(format!("not CSV: {e}")),
                });
                continue;
            }
        }
        let line = row.position().map_or(line, |p| p.line());
        let position = format!("{label} line {line}");
        let cells: Result<Vec<&str>, _> = row.iter().map(std::str::from_utf8).collect();
        let unreadable = match &cells {
            Err(_) => Some("the row is not UTF-8".to_string()),
            Ok(c) if c.len() != header.len() => Some(format!(
                "the row has {} {}, the header {}",
                c.len(),
                if c.len() == 1 { "cell" } else { "cells" },
                header.len()
            )),
            Ok(_) => None,
        };
        if let Some(why) = unreadable {
            let text = row
                .iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join(",");
            out.push(Item {
                position,
                raw: Value::String(text),
                unreadable: Some(why),
            });
            continue;
        }
        let mut obj = serde_json::Map::new();
        for ((k, kind), cell) in header.iter().zip(&kinds).zip(cells.unwrap_or_default()) {
            if cell.is_empty() {
                continue;
            }
            let v = match kind {
                Some(FieldType::Int) => cell.parse::<i64>().map(Value::from).ok(),
                Some(FieldType::Float) => cell.parse::<f64>().map(Value::from).ok(),
                Some(FieldType::Bool) => cell.parse::<bool>().map(Value::from).ok(),
                Some(FieldType::Json) => serde_json::from_str(cell).ok(),
                _ => None,
            };
            obj.insert(k.clone(), v.unwrap_or_else(|| cell.into()));
        }
        out.push(Item::new(position, Value::Object(obj)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{Format, read};
    use crate::model::schema::{Field, FieldType, Schema};
    use crate::model::transform::Transform;
    use serde_json::json;

    fn schema() -> Schema {
        let f = Field::new;
        Schema {
            category: "s".into(),
            version: 1,
            fields: vec![
                f("n", FieldType::Int),
                f("v", FieldType::Float),
                f("ok", FieldType::Bool),
                f("note", FieldType::Text),
            ],
            rollup_slots: Default::default(),
        }
    }

    fn items(format: Format, body: &[u8]) -> Vec<super::Item> {
        read(format, body, "p", &schema(), &Transform::default()).unwrap()
    }

    #[test]
    fn csv_cells_are_typed_by_the_schema_and_bad_rows_are_items() {
        let csv =
            b"target,ts,n,v,ok,note\nd1,2026-01-01T00:00:00Z,3,1.5,true,\"a, b\"\nd2,,x,,,\nd3,1\nd4\n";
        let rows = items(Format::of_content_type("text/CSV; charset=utf-8"), csv);
        assert_eq!(
            rows[0].raw,
            json!({"target": "d1", "ts": "2026-01-01T00:00:00Z", "n": 3, "v": 1.5, "ok": true, "note": "a, b"})
        );
        assert_eq!(rows[0].position, "p line 2", "the header is line 1");
        assert_eq!(
            rows[1].raw,
            json!({"target": "d2", "n": "x"}),
            "an unparsable cell stays text for validation to name"
        );
        assert_eq!(
            (rows[2].raw.clone(), rows[2].unreadable.clone()),
            (
                json!("d3,1"),
                Some("the row has 2 cells, the header 6".into())
            )
        );
        assert_eq!(rows[2].position, "p line 4");
        assert_eq!(
            rows[3].unreadable.as_deref(),
            Some("the row has 1 cell, the header 6")
        );
    }

    #[test]
    fn a_bad_ndjson_line_is_an_item_of_its_own_wherever_it_comes_from() {
        let nd = b"{\"target\":\"a\"}\n\n{oops\n{\"target\":\"b\"}\n";
        for format in [Format::Ndjson, Format::Sniff] {
            let rows = items(format, nd);
            let shown: Vec<_> = rows
                .iter()
                .map(|i| (i.position.as_str(), i.unreadable.is_some()))
                .collect();
            assert_eq!(
                shown,
                [("p line 1", false), ("p line 3", true), ("p line 4", false)],
                "{format:?}"
            );
            assert_eq!(rows[1].raw, json!("{oops"), "kept as sent");
            assert_eq!(
                rows[1].unreadable.as_deref(),
                Some("not JSON: key must be a string (column 2)")
            );
        }
    }

    #[test]
    fn json_documents_are_whole_or_refused() {
        assert_eq!(items(Format::Sniff, br#"{"target":"a"}"#).len(), 1);
        let a = items(Format::Json, br#"[{"target":"a"},{"target":"b"}]"#);
        assert_eq!(a[1].position, "p index 1");
        for bad in [&b"{\"not\":\"an array\"}"[..], b"[{oops"] {
            assert!(
                read(
                    Format::JsonArray,
                    bad,
                    "p",
                    &schema(),
                    &Transform::default()
                )
                .is_err()
            );
        }
        assert!(
            read(
                Format::Json,
                b"{not json",
                "f",
                &schema(),
                &Transform::default()
            )
            .is_err()
        );
    }
}
