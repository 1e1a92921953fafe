//! The reload plan: what a new unit set changes. Pure.
//!
//! Added units start, removed units stop, changed units restart together with every unit
//! that (transitively) `requires` one of them; everything else is left alone, pids and all.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::control::protocol::{PlanAction, PlanEntry};
use crate::graph::Graph;
use crate::unit::UnitSpec;

/// Compares the running set with a validated new one.
pub fn plan(old: &[Arc<UnitSpec>], new: &[Arc<UnitSpec>]) -> Vec<PlanEntry> {
    let old_by: BTreeMap<&str, &Arc<UnitSpec>> = old.iter().map(|u| (u.name.as_str(), u)).collect();
    let new_by: BTreeMap<&str, &Arc<UnitSpec>> = new.iter().map(|u| (u.name.as_str(), u)).collect();
    let mut out: BTreeMap<String, PlanEntry> = BTreeMap::new();
    let mut changed = vec![];
    for (name, n) in &new_by {
        let entry = match old_by.get(name) {
            None => PlanEntry {
                unit: name.to_string(),
                action: PlanAction::Start,
                why: "new unit".into(),
            },
            Some(o) => {
                let diff = n.changes(o);
                if diff.is_empty() {
                    PlanEntry {
                        unit: name.to_string(),
                        action: PlanAction::Unchanged,
                        why: "no change".into(),
                    }
                } else {
                    changed.push(name.to_string());
                    PlanEntry {
                        unit: name.to_string(),
                        action: PlanAction::Restart,
                        why: format!("{} changed", diff.join(", ")),
                    }
                }
            }
        };
        out.insert(name.to_string(), entry);
    }
    let graph = Graph::new(new);
    let restarting = graph.required_by_closure(&changed);
    for dependent in &restarting {
        let e = out.get_mut(dependent).expect("dependent is in the new set");
        if e.action == PlanAction::Unchanged {
            let via: Vec<&str> = graph.requires[dependent]
                .iter()
                .filter(|r| restarting.contains(*r))
                .map(String::as_str)
                .collect();
            e.action = PlanAction::Restart;
            e.why = format!("requires {}, which restarts", via.join(", "));
        }
    }
    for name in old_by.keys() {
        if !new_by.contains_key(name) {
            out.insert(
                name.to_string(),
                PlanEntry {
                    unit: name.to_string(),
                    action: PlanAction::Stop,
                    why: "unit file removed".into(),
                },
            );
        }
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(files: &[(&str, &str)]) -> Vec<Arc<UnitSpec>> {
        crate::unit::load_files(files, &Default::default())
            .unwrap()
            .units
    }

    #[test]
    fn changed_units_restart_with_what_requires_them_and_nothing_else() {
        let db = "[service]\ncommand = [\"db\"]\n";
        let api = "[unit]\nrequires = [\"db\"]\n[service]\ncommand = [\"api\"]\n";
        let other = "[unit]\nafter = [\"db\"]\n[service]\ncommand = [\"o\"]\n";
        let old = set(&[("db", db), ("api", api), ("other", other), ("gone", db)]);
        let new = set(&[
            ("db", "[service]\ncommand = [\"db\", \"-v\"]\n"),
            ("api", api),
            ("other", other),
            ("fresh", db),
        ]);
        let p: Vec<(String, PlanAction, String)> = plan(&old, &new)
            .into_iter()
            .map(|e| (e.unit, e.action, e.why))
            .collect();
        assert_eq!(
            p,
            [
                (
                    "api".into(),
                    PlanAction::Restart,
                    "requires db, which restarts".into()
                ),
                ("db".into(), PlanAction::Restart, "[service] changed".into()),
                ("fresh".into(), PlanAction::Start, "new unit".into()),
                ("gone".into(), PlanAction::Stop, "unit file removed".into()),
                ("other".into(), PlanAction::Unchanged, "no change".into()),
            ]
        );
    }
}
