//! The layering ARCHITECTURE.md states, checked against the source: a module that names
//! one it must not know fails here, with the file and line. Comments are skipped (doc
//! links may point anywhere); `#[cfg(test)]` code is not.

use std::path::{Path, PathBuf};

/// (files under this path, modules they must not name, why).
const RULES: &[(&str, &[&str], &str)] = &[
    (
        "src/model",
        &[
            "db",
            "api",
            "ingest",
            "consume",
            "alerts",
            "integrity",
            "pipeline",
            "supervisor",
            "web",
        ],
        "the domain is pure: no I/O layer below or beside it",
    ),
    (
        "src/db",
        &[
            "api",
            "ingest",
            "consume",
            "alerts",
            "integrity",
            "pipeline",
            "web",
        ],
        "db holds SQL over model and config only",
    ),
    (
        "src/web",
        &[
            "api",
            "ingest",
            "consume",
            "alerts",
            "integrity",
            "supervisor",
        ],
        "the HTTP layer the api and the data-manager share knows neither",
    ),
    (
        "src/ingest",
        &["api", "consume", "alerts"],
        "the data-manager has its own state and errors: the api may call it, never the reverse",
    ),
    (
        "src/backoff.rs",
        &["supervisor", "ingest", "consume", "api", "db", "model"],
        "the backoff rule is a leaf every retrier shares",
    ),
    (
        "src/pipeline.rs",
        &["api", "ingest", "consume", "db", "alerts"],
        "the pipeline carries model types and knows no service",
    ),
    (
        "src/control",
        &["supervisor", "logs"],
        "control is protocol, framing and client",
    ),
    (
        "src/unit",
        &["supervisor", "logs"],
        "units and their graph know no executor",
    ),
    (
        "src/config.rs",
        &["supervisor", "api", "db"],
        "config is read by everything",
    ),
];

fn files(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            files(&e.unwrap().path(), out);
        }
    } else if p.extension().is_some_and(|e| e == "rs") {
        out.push(p.to_path_buf());
    }
}

/// Every `crate::NAME` a line of code (not a comment) names, with file:line.
fn named(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = vec![];
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push((name, format!("{}:{}", path.display(), i + 1)));
        }
    }
    out
}

#[test]
fn no_module_names_a_layer_it_must_not_know() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut broken = vec![];
    let mut checked = 0;
    for (dir, forbidden, why) in RULES {
        let mut fs = vec![];
        files(&root.join(dir), &mut fs);
        assert!(
            !fs.is_empty(),
            "{dir} holds no Rust file: the rule is stale"
        );
        for f in fs {
            for (name, at) in named(&f) {
                checked += 1;
                if forbidden.contains(&name.as_str()) {
                    broken.push(format!("{at}: names crate::{name} ({why})"));
                }
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} crate paths found: the scan is broken"
    );
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

#[test]
fn the_scan_sees_code_and_skips_comments() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.rs");
    std::fs::write(
        &f,
        "use crate::api::X; // crate::db\n/// [`crate::pipeline`]\n",
    )
    .unwrap();
    let names: Vec<String> = named(&f).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["api"]);
}

/// The console is a front-end: it renders what the domain modules of the api answer.
/// It runs no SQL of its own and calls no REST route (ARCHITECTURE.md, `api::console`).
#[test]
fn the_console_runs_no_sql_and_calls_no_rest_route() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut fs = vec![];
    files(&root.join("src/api/console"), &mut fs);
    assert!(fs.len() >= 8, "the console's modules: {fs:?}");
    let mut broken = vec![];
    for f in fs {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for bad in ["sqlx", "PgPool", "state.pool", "api::routes", "/api/v1"] {
                if code.contains(bad) {
                    broken.push(format!("{}:{}: {bad}", f.display(), i + 1));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "the console reaches past the domain:\n{}",
        broken.join("\n")
    );
}
