//! The dependency graph between unit instances. Pure: it never spawns or reads a file.
//!
//! Two edge kinds, as in systemd: *requirement* (`requires`: hard, `wants`: soft) and
//! *ordering* (every `requires`, `wants` and `after` edge orders the start; stop runs in the
//! reverse order). A dependency on `worker` means every instance `worker@N`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{Dep, UnitSpec};

/// Edges between instance names.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// unit → units it `requires`.
    pub requires: BTreeMap<String, Vec<String>>,
    /// unit → units it `wants`.
    pub wants: BTreeMap<String, Vec<String>>,
    /// unit → every unit it starts after (requires ∪ wants ∪ after).
    pub order: BTreeMap<String, Vec<String>>,
    /// unit → units that start after it (the reverse of `order`).
    pub dependents: BTreeMap<String, Vec<String>>,
}

impl Graph {
    /// Builds the instance graph of a validated unit set.
    pub fn new(units: &[Arc<UnitSpec>]) -> Graph {
        let expand = |deps: &[Dep]| -> Vec<String> {
            let mut out = BTreeSet::new();
            for d in deps {
                out.extend(super::expand_dep(&d.name, units));
            }
            out.into_iter().collect()
        };
        let mut g = Graph::default();
        for u in units {
            let req = expand(&u.requires);
            let wants = expand(&u.wants);
            let mut order: BTreeSet<String> = req.iter().chain(&wants).cloned().collect();
            order.extend(expand(&u.after));
            for o in &order {
                g.dependents
                    .entry(o.clone())
                    .or_default()
                    .push(u.name.clone());
            }
            g.requires.insert(u.name.clone(), req);
            g.wants.insert(u.name.clone(), wants);
            g.order.insert(u.name.clone(), order.into_iter().collect());
        }
        g
    }

    /// Units that start after `name`.
    pub fn dependents_of(&self, name: &str) -> &[String] {
        self.dependents.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Units `name` starts after.
    pub fn order_of(&self, name: &str) -> &[String] {
        self.order.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// `names` plus every unit that (transitively) `requires` one of them: what must stop
    /// or restart with them.
    pub fn required_by_closure(&self, names: &[String]) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = names.iter().cloned().collect();
        let mut changed = true;
        while changed {
            changed = false;
            for (u, reqs) in &self.requires {
                if !out.contains(u) && reqs.iter().any(|r| out.contains(r)) {
                    out.insert(u.clone());
                    changed = true;
                }
            }
        }
        out
    }

    /// `names` plus everything they (transitively) `requires` or `wants`: what a start
    /// pulls in.
    pub fn pull_in_closure(&self, names: &[String]) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut stack: Vec<String> = names.to_vec();
        while let Some(n) = stack.pop() {
            if out.insert(n.clone()) {
                stack.extend(self.requires.get(&n).into_iter().flatten().cloned());
                stack.extend(self.wants.get(&n).into_iter().flatten().cloned());
            }
        }
        out
    }

    /// Start order: each unit after everything it is ordered after; ties by name.
    /// Units in the same "level" can start in parallel.
    pub fn levels(&self) -> Vec<Vec<String>> {
        let mut level: BTreeMap<&str, usize> = BTreeMap::new();
        fn depth<'a>(
            g: &'a Graph,
            n: &'a str,
            memo: &mut BTreeMap<&'a str, usize>,
            seen: &mut BTreeSet<&'a str>,
        ) -> usize {
            if let Some(d) = memo.get(n) {
                return *d;
            }
            if !seen.insert(n) {
                return 0; // cycles are rejected at load; stay total anyway
            }
            let d = g
                .order_of(n)
                .iter()
                .map(|o| depth(g, o, memo, seen) + 1)
                .max()
                .unwrap_or(0);
            memo.insert(n, d);
            d
        }
        for n in self.order.keys() {
            let mut seen = BTreeSet::new();
            depth(self, n, &mut level, &mut seen);
        }
        let mut out: Vec<Vec<String>> = vec![];
        for (n, d) in level {
            if out.len() <= d {
                out.resize(d + 1, vec![]);
            }
            out[d].push(n.to_string());
        }
        out
    }

    /// A readable dependency tree of `root` (`units deps UNIT`).
    pub fn tree(&self, root: &str) -> String {
        let mut out = String::new();
        self.tree_into(root, "", "", &mut out, &mut BTreeSet::new());
        out
    }

    fn tree_into(
        &self,
        name: &str,
        prefix: &str,
        edge: &str,
        out: &mut String,
        path: &mut BTreeSet<String>,
    ) {
        out.push_str(&format!("{prefix}{name}{edge}\n"));
        if !path.insert(name.to_string()) {
            return;
        }
        let kids: Vec<(String, &str)> = self
            .order_of(name)
            .iter()
            .map(|d| {
                let kind = if self.requires[name].contains(d) {
                    " (requires)"
                } else if self.wants[name].contains(d) {
                    " (wants)"
                } else {
                    " (after)"
                };
                (d.clone(), kind)
            })
            .collect();
        let child_prefix = prefix.replace("├── ", "│   ").replace("└── ", "    ");
        for (i, (k, kind)) in kids.iter().enumerate() {
            let branch = if i + 1 == kids.len() {
                "└── "
            } else {
                "├── "
            };
            self.tree_into(k, &format!("{child_prefix}{branch}"), kind, out, path);
        }
        path.remove(name);
    }
}

/// Finds one cycle among `edges` (node → dependencies); returns it as a closed path
/// `[a, b, …, a]`, starting at the smallest node on it for a stable message.
pub fn find_cycle(edges: &BTreeMap<String, Vec<Dep>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        n: &str,
        edges: &BTreeMap<String, Vec<Dep>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = stack
                    .iter()
                    .position(|s| s == n)
                    .expect("open node on stack");
                let mut cycle: Vec<String> = stack[start..].to_vec();
                let min = cycle
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.as_str())
                    .map(|(i, _)| i)
                    .unwrap_or(0);
                cycle.rotate_left(min);
                cycle.push(cycle[0].clone());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(n.to_string(), Mark::Open);
        stack.push(n.to_string());
        for d in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(&d.name, edges, marks, stack) {
                return Some(c);
            }
        }
        stack.pop();
        marks.insert(n.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in edges.keys() {
        let mut stack = vec![];
        if let Some(c) = visit(n, edges, &mut marks, &mut stack) {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::Location;
    use std::path::Path;

    fn dep(n: &str) -> Dep {
        Dep {
            name: n.into(),
            at: Location {
                path: Arc::from(Path::new("x")),
                line: 1,
                col: 1,
            },
        }
    }

    #[test]
    fn cycle_found_and_rotated() {
        let mut e = BTreeMap::new();
        e.insert("c".to_string(), vec![dep("b")]);
        e.insert("b".to_string(), vec![dep("d")]);
        e.insert("d".to_string(), vec![dep("c")]);
        e.insert("a".to_string(), vec![dep("c")]);
        assert_eq!(find_cycle(&e).unwrap(), ["b", "d", "c", "b"]);
        e.insert("d".to_string(), vec![]);
        assert_eq!(find_cycle(&e), None);
    }
}
