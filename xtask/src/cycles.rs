//! The lint step's module-cycle check: inside every crate of the workspace, the top-level
//! modules (`src/NAME.rs` or `src/NAME/`) must depend on each other without a cycle, so that
//! each can be read, tested and moved on its own. A module depends on another when one of its
//! files names `crate::OTHER` (in a `use` or a path). Cargo already forbids cycles between
//! crates.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

/// The crates whose modules are checked (folders holding `src/`).
const CRATES: &[&str] = &[
    "lb-common",
    "lb-userspace/lb-dataplane",
    "lb-userspace/lb-config",
    "lb-userspace/lb-api",
    "lb-userspace/lb-vrrp",
    "lb-userspace/lbd",
    "lb-userspace/lbctl",
    "lb-userspace/lb-bench",
    // app joins once its queue seam (issue 18) removes config -> orders -> queue -> config.
    "tests",
    "xtask",
];

pub fn check(root: &Path) -> Result<()> {
    let mut found = Vec::new();
    for krate in CRATES {
        let src = root.join(krate).join("src");
        if !src.is_dir() {
            bail!(
                "{}: no src folder (update xtask/src/cycles.rs)",
                src.display()
            );
        }
        let graph = graph(&src)?;
        if let Some(cycle) = find_cycle(&graph) {
            found.push(format!("{krate}: {}", cycle.join(" -> ")));
        }
    }
    if !found.is_empty() {
        bail!("module cycles:\n  {}", found.join("\n  "));
    }
    Ok(())
}

/// Top-level module name -> the top-level modules its files name.
fn graph(src: &Path) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut modules: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in fs::read_dir(src).with_context(|| src.display().to_string())? {
        let path = entry?.path();
        let name = match path.file_stem().and_then(|s| s.to_str()) {
            Some(n) => n.to_string(),
            None => continue,
        };
        if matches!(name.as_str(), "lib" | "main" | "bin") {
            continue;
        }
        let files = if path.is_dir() {
            rust_files(&path)?
        } else if path.extension().is_some_and(|e| e == "rs") {
            vec![path.clone()]
        } else {
            continue;
        };
        modules.entry(name).or_default().extend(files);
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (name, files) in &modules {
        let mut deps = BTreeSet::new();
        for f in files {
            let text = fs::read_to_string(f).with_context(|| f.display().to_string())?;
            for dep in crate_paths(&text) {
                if dep != *name && names.contains(&dep) {
                    deps.insert(dep);
                }
            }
        }
        graph.insert(name.clone(), deps);
    }
    Ok(graph)
}

fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(out)
}

/// The first segment after every `crate::` outside comments, including those inside
/// `use crate::{a, b::c}` groups.
fn crate_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                // `crate::{a, b::c, ...}` on one line; multi-line groups are read below.
                let inner = group.split('}').next().unwrap_or("");
                out.extend(inner.split(',').filter_map(first_ident));
            } else if let Some(id) = first_ident(after) {
                out.push(id);
            }
            rest = after;
        }
    }
    // Multi-line `use crate::{` groups: every line until the closing `};` at depth 0.
    let mut in_group = false;
    let mut depth = 0i32;
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("").trim();
        if !in_group {
            if code.ends_with("crate::{") {
                in_group = true;
                depth = 1;
            }
            continue;
        }
        if depth == 1
            && let Some(id) = first_ident(code)
        {
            out.push(id);
        }
        depth += code.matches('{').count() as i32 - code.matches('}').count() as i32;
        if depth <= 0 {
            in_group = false;
        }
    }
    out
}

fn first_ident(s: &str) -> Option<String> {
    let id: String = s
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!id.is_empty() && id != "self").then_some(id)
}

/// A cycle in `graph`, as the list of its modules with the first repeated at the end.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(n.to_string(), Mark::Open);
        stack.push(n.to_string());
        for d in graph.get(n).into_iter().flatten() {
            match marks.get(d).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let start = stack.iter().position(|s| s == d).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(d.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(d, graph, marks, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(n.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in graph.keys() {
        if marks.get(n).copied().unwrap_or(Mark::New) == Mark::New {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, graph, &mut marks, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(edges: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        edges
            .iter()
            .map(|(n, ds)| (n.to_string(), ds.iter().map(|d| d.to_string()).collect()))
            .collect()
    }

    #[test]
    fn finds_a_cycle_and_accepts_a_tree() {
        let cyclic = g(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])]);
        assert_eq!(
            find_cycle(&cyclic),
            Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
        let tree = g(&[("a", &["b", "c"]), ("b", &["c"]), ("c", &[])]);
        assert_eq!(find_cycle(&tree), None);
    }

    #[test]
    fn reads_paths_and_groups() {
        let text = "use crate::a::X;\nuse crate::{b, c::Y}; // crate::z\nlet v = crate::d::f();\nuse crate::{\n    e::{F, G},\n    h,\n};\n";
        let mut got = crate_paths(text);
        got.sort();
        assert_eq!(got, ["a", "b", "c", "d", "e", "h"]);
    }
}
