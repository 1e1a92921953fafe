//! `GET /metrics` read the way Prometheus would: parsed by the official Python client's
//! OpenMetrics parser (strict: `# EOF`, `_total` counters, histogram buckets), not by
//! our own code.

use std::collections::BTreeMap;
use std::path::Path;

/// One sample: metric name (with `_total`, `_bucket`… suffixes), labels, value.
pub type Sample = (String, BTreeMap<String, String>, f64);

const PARSE: &str = r#"
import json, sys, urllib.request
from prometheus_client.openmetrics.parser import text_string_to_metric_families
with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
    ctype = r.headers.get("Content-Type", "")
    text = r.read().decode()
if not ctype.startswith("application/openmetrics-text"):
    sys.exit("Content-Type is %r, not OpenMetrics" % ctype)
out = []
for family in text_string_to_metric_families(text):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;

/// Scrapes `http://127.0.0.1:PORT/metrics`; panics when the answer does not parse.
pub fn scrape(port: u16) -> Vec<Sample> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pytools/bin/python");
    let out = std::process::Command::new(&python)
        .args(["-c", PARSE, &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .expect("target/pytools/bin/python (`make test-deps` installs prometheus-client)");
    assert!(
        out.status.success(),
        "metrics on port {port} did not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The sum of the samples named `name` whose labels include `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).is_some_and(|x| x == v))
        })
        .map(|(_, _, v)| v)
        .sum()
}
