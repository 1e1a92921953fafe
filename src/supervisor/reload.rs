//! The reload plan: what a new unit set changes. Pure.
//!
//! Added units start, removed units stop, changed units restart together with every unit
//! that (transitively) `requires` one of them; a change the running process does not see
//! (description, `[restart]`, `[log] enabled`) is applied in place; everything else is
//! left alone, pids and all.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::control::protocol::{PlanAction, PlanEntry};
use crate::unit::UnitSpec;
use crate::unit::graph::Graph;

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
                } else if !n.restart_needed(o) {
                    PlanEntry {
                        unit: name.to_string(),
                        action: PlanAction::Update,
                        why: format!("{} changed; applied without a restart", diff.join(", ")),
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
    fn what_the_process_does_not_see_is_applied_without_a_restart() {
        let db = "[service]\ncommand = [\"db\"]\n";
        let api = "[unit]\nrequires = [\"db\"]\n[service]\ncommand = [\"api\"]\n";
        let old = set(&[("db", db), ("api", api)]);
        let new = set(&[
            (
                "db",
                "[unit]\ndescription = \"the database\"\n[service]\ncommand = [\"db\"]\n[restart]\nburst = 9\n[log]\nenabled = false\n",
            ),
            ("api", api),
        ]);
        let p: Vec<(String, PlanAction)> = plan(&old, &new)
            .into_iter()
            .map(|e| (e.unit, e.action))
            .collect();
        assert_eq!(
            p,
            [
                ("api".into(), PlanAction::Unchanged),
                ("db".into(), PlanAction::Update)
            ]
        );
        let moved = set(&[
            (
                "db",
                "[service]\ncommand = [\"db\"]\n[log]\nchannel = \"x\"\n",
            ),
            ("api", api),
        ]);
        assert_eq!(plan(&old, &moved)[1].action, PlanAction::Restart);
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
