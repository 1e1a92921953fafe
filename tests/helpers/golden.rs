//! Golden files: committed files that must equal what the code produces (the OpenAPI
//! documents, the man pages, the CLI output snapshots). With `TMIDB_BLESS` set (what
//! `make openapi`, `make man` and `make snapshots` do) the produced text is written
//! instead, for review in `git diff`.
//!
//! One file serves both kinds of test: the integration tests reach it as
//! `helpers::golden`, the library's unit tests include it by path.

use std::path::Path;

/// Whether this run writes golden files instead of checking them.
pub fn blessing() -> bool {
    std::env::var_os("TMIDB_BLESS").is_some()
}

/// Checks (or, when [`blessing`], writes) `file`, relative to the package, against
/// `actual`; on a mismatch, a line diff (`-` committed, `+` produced) of at most 40
/// changed lines.
pub fn check(file: &str, actual: &[u8]) -> Result<(), String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    if blessing() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{file}: {e}"))?;
        }
        return std::fs::write(&path, actual).map_err(|e| format!("{file}: {e}"));
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    if committed == actual {
        return Ok(());
    }
    let (old, new) = (
        String::from_utf8_lossy(&committed),
        String::from_utf8_lossy(actual),
    );
    let (old, new): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let mut diff = vec![];
    for i in 0..old.len().max(new.len()) {
        match (old.get(i), new.get(i)) {
            (Some(x), Some(y)) if x == y => {}
            (x, y) => {
                diff.extend(x.map(|x| format!("{:>5} - {x}", i + 1)));
                diff.extend(y.map(|y| format!("{:>5} + {y}", i + 1)));
            }
        }
    }
    let shown = diff.len().min(40);
    let more = if diff.len() > shown {
        format!("\n      … {} more changed lines", diff.len() - shown)
    } else {
        String::new()
    };
    Err(format!(
        "{file} differs from what the code produces:\n{}{more}",
        diff[..shown].join("\n")
    ))
}

/// [`check`], panicking with the diff and `remedy` (how to accept the change).
pub fn assert(file: &str, actual: &[u8], remedy: &str) {
    if let Err(e) = check(file, actual) {
        panic!("{e}\n{remedy}");
    }
}
