//! The lint step's module-cycle check: inside every crate of the workspace, the top-level
//! modules must depend on each other without a cycle, so that each can be read, tested and
//! moved on its own. Each module's files are scanned for `crate::NAME` paths (also inside
//! `use crate::{...}` groups; comments and string literals do not count). A module reaches
//! another one through `crate::` paths only (`super::` never leaves a top-level module), so
//! the scan sees every edge. Cargo already forbids cycles between crates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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
    "app",
    "app/redis",
    "app/testkit",
    "tests",
    "xtask",
];

/// Modules that must use no other module of their crate: the app's queue is wired to the
/// rest by the composition root (`app/src/wiring.rs`), never the other way round.
const STANDALONE: &[(&str, &str)] = &[("app", "queue")];

/// Module name -> the modules it uses, each with the first file that does.
type Graph = BTreeMap<String, BTreeMap<String, PathBuf>>;

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
        let g = graph(&src)?;
        if let Some(cycle) = find_cycle(&g) {
            let why: Vec<String> = cycle
                .windows(2)
                .map(|w| {
                    let f = &g[&w[0]][&w[1]];
                    let f = f.strip_prefix(root).unwrap_or(f);
                    format!("{} -> {} ({})", w[0], w[1], f.display())
                })
                .collect();
            found.push(format!(
                "{krate}: {}\n    {}",
                cycle.join(" -> "),
                why.join("\n    ")
            ));
        }
        for (_, m) in STANDALONE.iter().filter(|(k, _)| k == krate) {
            match g.get(*m) {
                Some(uses) if !uses.is_empty() => found.push(format!(
                    "{krate}: {m} must stand alone but uses {:?}",
                    uses.keys().collect::<Vec<_>>()
                )),
                Some(_) => {}
                None => bail!("{krate}: no module {m} (update xtask/src/cycles.rs)"),
            }
        }
    }
    if !found.is_empty() {
        bail!("module cycles:\n  {}", found.join("\n  "));
    }
    Ok(())
}

/// The top-level modules declared in the crate root (`mod NAME;` with any visibility).
fn declared_modules(lib_rs: &str) -> Vec<String> {
    strip(lib_rs)
        .lines()
        .filter_map(|l| {
            let l = l.trim().strip_suffix(';')?;
            let name = l.rsplit_once("mod ")?.1.trim();
            let prefix = l.rsplit_once("mod ")?.0.trim();
            let visibility_only = prefix.is_empty()
                || prefix == "pub"
                || (prefix.starts_with("pub(") && prefix.ends_with(')'));
            (visibility_only && is_ident(name)).then(|| name.to_string())
        })
        .collect()
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// `src/NAME.rs`, or every `.rs` file under `src/NAME/`.
fn files_of(src: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let file = src.join(format!("{name}.rs"));
    if file.is_file() {
        return Ok(vec![file]);
    }
    let mut out = Vec::new();
    let mut dirs = vec![src.join(name)];
    while let Some(d) = dirs.pop() {
        let entries = std::fs::read_dir(&d).with_context(|| d.display().to_string())?;
        for e in entries {
            let p = e?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The source without comments, string literals and char literals (each replaced by a
/// space), so that only code is scanned.
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &src[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |e| e + 2);
            out.push(' ');
        } else if let Some(hashes) = raw_string_start(rest) {
            let open = 2 + hashes; // r, hashes, quote
            let close = format!("\"{}", "#".repeat(hashes));
            i += rest[open..]
                .find(&close)
                .map_or(rest.len(), |e| open + e + close.len());
            out.push(' ');
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(' ');
        } else if b[i] == b'\'' && is_char_literal(rest) {
            // The closing quote: after the escaped character of `'\''`, else the next one.
            let body = &rest[1..];
            let skip = usize::from(body.starts_with('\\')) * 2;
            i += body[skip..]
                .find('\'')
                .map_or(rest.len(), |e| 1 + skip + e + 1);
            out.push(' ');
        } else {
            let c = rest.chars().next().expect("non-empty rest");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// `r"`, `r#"`, `br##"`...: the number of hashes.
fn raw_string_start(s: &str) -> Option<usize> {
    let s = s.strip_prefix('b').unwrap_or(s);
    let s = s.strip_prefix('r')?;
    let hashes = s.len() - s.trim_start_matches('#').len();
    s[hashes..].starts_with('"').then_some(hashes)
}

/// `'x'` or `'\n'` (a char literal), not `'a` (a lifetime).
fn is_char_literal(s: &str) -> bool {
    let mut c = s.chars().skip(1);
    matches!(
        (c.next(), c.next()),
        (Some('\\'), _) | (Some(_), Some('\''))
    )
}

/// The first path segment after every `crate::`, including each item of a
/// `crate::{a::X, b}` group.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = code.as_bytes();
    let mut from = 0;
    while let Some(pos) = code[from..].find("crate::") {
        let at = from + pos;
        from = at + "crate::".len();
        if at > 0 && (b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_') {
            continue; // e.g. `my_crate::`
        }
        let rest = code[from..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut expect_item = true;
            let mut word = String::new();
            for c in group.chars() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    if expect_item && depth == 1 {
                        word.push(c);
                    }
                    continue;
                }
                if !word.is_empty() {
                    out.insert(std::mem::take(&mut word));
                    expect_item = false;
                }
                match c {
                    '{' => depth += 1,
                    '}' if depth == 1 => break,
                    '}' => depth -= 1,
                    ',' if depth == 1 => expect_item = true,
                    _ => {}
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn graph(src: &Path) -> Result<Graph> {
    let root = ["lib.rs", "main.rs"]
        .iter()
        .map(|f| src.join(f))
        .find(|p| p.is_file())
        .with_context(|| format!("{}: no lib.rs or main.rs", src.display()))?;
    let lib = std::fs::read_to_string(&root).with_context(|| root.display().to_string())?;
    let modules = declared_modules(&lib);
    let known: BTreeSet<&str> = modules.iter().map(String::as_str).collect();
    let mut g = Graph::new();
    for m in &modules {
        let edges = g.entry(m.clone()).or_default();
        for f in files_of(src, m)? {
            let text = std::fs::read_to_string(&f).with_context(|| f.display().to_string())?;
            for dep in crate_paths(&strip(&text)) {
                if dep != *m && known.contains(dep.as_str()) {
                    edges.entry(dep).or_insert_with(|| f.clone());
                }
            }
        }
    }
    Ok(g)
}

/// A cycle as a list of modules (the first repeated at the end), if there is one.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        g: &Graph,
        n: &str,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|p| p == n).expect("open node on path");
                let mut cycle = path[start..].to_vec();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(n.to_string(), Mark::Open);
        path.push(n.to_string());
        for next in g.get(n).into_iter().flat_map(|e| e.keys()) {
            if let Some(c) = visit(g, next, marks, path) {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(n.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    g.keys()
        .find_map(|n| visit(g, n, &mut marks, &mut Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_reads_paths_groups_and_skips_comments_and_strings() {
        let code = strip(
            "use crate::{a::B, c, d::{E, F}};\n\
             let x = crate::g::h();\n\
             // crate::comment\n\
             /* crate::block */\n\
             let s = \"crate::string\";\n\
             let r = r#\"crate::raw \"quoted\" \"#;\n\
             let ch = '\"'; let q = '\\''; fn f<'a>(_: &'a str) { crate::i::j(); }\n\
             my_crate::k::l();\n",
        );
        let got: Vec<String> = crate_paths(&code).into_iter().collect();
        assert_eq!(got, ["a", "c", "d", "g", "i"]);
        assert_eq!(
            declared_modules(
                "//! doc\npub mod a;\nmod b;\npub(crate) mod c;\n#[cfg(test)]\nmod d;\nmod e {}\n"
            ),
            ["a", "b", "c", "d"]
        );
    }

    #[test]
    fn cycle_finder_finds_a_cycle() {
        let edge = |to: &str| (to.to_string(), PathBuf::from("x.rs"));
        let mut g = Graph::new();
        g.insert("a".into(), [edge("b")].into());
        g.insert("b".into(), [edge("c")].into());
        g.insert("c".into(), BTreeMap::new());
        assert_eq!(find_cycle(&g), None);
        g.insert("c".into(), [edge("a")].into());
        assert_eq!(
            find_cycle(&g),
            Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
    }
}
