//! The `file` source: a watched directory; each CSV / NDJSON / JSON file, once it has
//! stopped changing, is ingested and moved to `done/` (or `failed/` when it cannot be
//! read) with a `NAME.report.json` beside it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;

use super::patiently;
use crate::ingest::Manager;
use crate::ingest::payload::Format;
use crate::model::source::FileConfig;
use crate::model::source::Source;

/// Largest file a `file` source reads (bigger ones go to `failed/`).
pub const MAX_FILE_BYTES: u64 = 256 << 20;

fn unique_in(dir: &Path, name: &std::ffi::OsStr) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3f");
    dir.join(format!("{}.{stamp}", name.to_string_lossy()))
}

pub(super) async fn run(m: &Manager, s: &Source, c: FileConfig) -> Result<(), String> {
    let dir = m.cfg.home.join(&c.path);
    let (done, failed) = (dir.join("done"), dir.join("failed"));
    for d in [&dir, &done, &failed] {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
        let _ = tx.try_send(());
    })
    .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    notify::Watcher::watch(&mut watcher, &dir, notify::RecursiveMode::NonRecursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    // Size and mtime per file at the last look: a file is taken once they stop changing.
    let mut last: HashMap<PathBuf, (u64, std::time::SystemTime)> = HashMap::new();
    loop {
        let mut pending = false;
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        entries.sort();
        for path in entries {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file()
                || name.starts_with('.')
                || name.ends_with(".tmp")
                || name.ends_with(".part")
            {
                continue;
            }
            let now = (meta.len(), meta.modified().unwrap_or(std::time::UNIX_EPOCH));
            if last.get(&path) != Some(&now) {
                last.insert(path.clone(), now);
                pending = true;
                continue;
            }
            last.remove(&path);
            ingest_file(m, s, &path, meta.len(), &done, &failed).await;
        }
        let wait = if pending {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(5)
        };
        let _ = tokio::time::timeout(wait, rx.recv()).await;
        if pending {
            // Let a writer finish: look again only after a quiet half second.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

async fn ingest_file(m: &Manager, s: &Source, path: &Path, len: u64, done: &Path, failed: &Path) {
    let name = path.file_name().unwrap_or_default().to_owned();
    let outcome: Result<crate::web::intake::InsertResult, String> = async {
        if len > MAX_FILE_BYTES {
            return Err(format!(
                "{len} bytes is more than {MAX_FILE_BYTES}; split the file"
            ));
        }
        let bytes = tokio::fs::read(path).await.map_err(|e| e.to_string())?;
        let label = name.to_string_lossy();
        let format = Format::of_file(path);
        patiently(&s.name, || {
            m.take(&s.category, &s.name, &s.transform, format, &bytes, &label)
        })
        .await
        .map(|p| p.result())
        .map_err(|e| e.to_string())
    }
    .await;
    let (to, report) = match &outcome {
        Ok(r) => (
            unique_in(done, &name),
            serde_json::json!({"file": name.to_string_lossy(), "source": s.name, "category": s.category,
                "accepted": r.accepted, "rejected": r.rejected, "schema_version": r.schema_version,
                "errors": r.errors.iter().map(|e| serde_json::json!({"index": e.index, "field": e.field, "reason": e.reason})).collect::<Vec<_>>(),
                "at": Utc::now()}),
        ),
        Err(e) => (
            unique_in(failed, &name),
            serde_json::json!({"file": name.to_string_lossy(), "source": s.name, "category": s.category,
                "error": e, "at": Utc::now()}),
        ),
    };
    if let Err(e) = std::fs::rename(path, &to) {
        tracing::error!(source = %s.name, file = %path.display(), "cannot move the file to {}: {e}", to.display());
        return;
    }
    let report_path = PathBuf::from(format!("{}.report.json", to.display()));
    let _ = std::fs::write(
        &report_path,
        serde_json::to_vec_pretty(&report).expect("json"),
    );
    match outcome {
        Ok(r) => {
            tracing::info!(source = %s.name, file = %to.display(), accepted = r.accepted, rejected = r.rejected, "file ingested")
        }
        Err(e) => tracing::warn!(source = %s.name, file = %to.display(), "file failed: {e}"),
    }
}
