//! docs/metrics.md against the metrics a service really has: the families a real instance
//! exposes (`# TYPE` lines and samples of its `/metrics`) and the metric names its source
//! defines (string literals with the service's prefixes: families that only appear after an
//! event, a label set being empty at start, are found there).
//!
//! The page has one section per service (`## lbd`, `## app`), each with a table
//! `| metric | type | labels | meaning |`, names and labels in backticks, `—` for no labels.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One documented family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Documented {
    /// Type: `counter`, `gauge`, `histogram`.
    pub kind: String,
    /// Label names (without a histogram's `le`).
    pub labels: BTreeSet<String>,
}

/// One exposed family: its `# TYPE` and the label names its samples carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exposed {
    /// Type from the `# TYPE` line (empty if there was none).
    pub kind: String,
    /// Label names seen on samples (without `le`); empty when no sample was exposed.
    pub labels: BTreeSet<String>,
    /// Whether any sample was exposed (only then are its labels known).
    pub sampled: bool,
}

/// The table of section `## {service}` of the page at `path`, by metric name.
pub fn documented(path: &Path, service: &str) -> Result<BTreeMap<String, Documented>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let heading = format!("## {service}");
    let mut inside = false;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("## ") {
            inside = line.trim() == heading;
            continue;
        }
        if !inside || !line.starts_with("| `") {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() < 4 {
            return Err(format!(
                "{at}: a row has 4 cells (metric, type, labels, meaning)"
            ));
        }
        let name = cells[0].trim_matches('`').to_string();
        let kind = cells[1].to_string();
        if !matches!(kind.as_str(), "counter" | "gauge" | "histogram") {
            return Err(format!(
                "{at}: {name}: type `{kind}` is not counter, gauge or histogram"
            ));
        }
        let labels = if cells[2] == "—" || cells[2].is_empty() {
            BTreeSet::new()
        } else {
            cells[2]
                .split(',')
                .map(|l| l.trim().trim_matches('`').to_string())
                .collect()
        };
        if cells[3].is_empty() {
            return Err(format!("{at}: {name}: no meaning given"));
        }
        if out
            .insert(name.clone(), Documented { kind, labels })
            .is_some()
        {
            return Err(format!("{at}: {name} is listed twice"));
        }
    }
    if out.is_empty() {
        return Err(format!("{}: no table under `{heading}`", path.display()));
    }
    Ok(out)
}

/// The families of a Prometheus text exposition, by name (a histogram's `_bucket`, `_sum`
/// and `_count` samples belong to its family).
pub fn exposed(text: &str) -> BTreeMap<String, Exposed> {
    let mut out: BTreeMap<String, Exposed> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                out.entry(name.to_string()).or_default().kind = kind.to_string();
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let family = family_of(name, &out);
        let e = out.entry(family).or_default();
        e.sampled = true;
        e.labels.extend(
            label_names(labels.trim_end_matches('}'))
                .into_iter()
                .filter(|l| l != "le"),
        );
    }
    out
}

/// The family a sample name belongs to: a histogram's series carry suffixes.
fn family_of(name: &str, known: &BTreeMap<String, Exposed>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && known.get(base).is_some_and(|e| e.kind == "histogram")
        {
            return base.to_string();
        }
    }
    name.to_string()
}

/// Label names of `a="x",b="y"` (values may hold escaped quotes and commas).
fn label_names(s: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = s;
    while let Some((name, after)) = rest.split_once("=\"") {
        names.push(name.trim_start_matches(',').trim().to_string());
        // Skip the value up to its closing, unescaped quote.
        let mut escaped = false;
        let mut end = after.len();
        for (i, c) in after.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = i;
                    break;
                }
                _ => escaped = false,
            }
        }
        rest = after.get(end + 1..).unwrap_or("");
    }
    names
}

/// Metric names defined in the Rust files under `dir`: string literals that start with one
/// of `prefixes` and hold only `[a-z0-9_]`.
pub fn in_source(dir: &Path, prefixes: &[&str]) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let text =
                    std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                out.extend(literals(&text, prefixes));
            }
        }
    }
    Ok(out)
}

fn literals(text: &str, prefixes: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices('"') {
        let rest = &text[i + 1..];
        if !prefixes.iter().any(|p| rest.starts_with(p)) {
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(rest.len());
        if rest[end..].starts_with('"') {
            out.push(rest[..end].to_string());
        }
    }
    out
}

/// Every disagreement between the page's table, an instance's `/metrics` and the source: an
/// exposed family that is not documented, or with another type or labels; a documented one
/// the source no longer defines; a name the source defines that is not documented.
pub fn compare(
    documented: &BTreeMap<String, Documented>,
    exposed: &BTreeMap<String, Exposed>,
    source: &BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, e) in exposed {
        let Some(d) = documented.get(name) else {
            problems.push(format!("{name}: exposed but not documented"));
            continue;
        };
        if !e.kind.is_empty() && e.kind != d.kind {
            problems.push(format!(
                "{name}: exposed as a {}, documented as a {}",
                e.kind, d.kind
            ));
        }
        if e.sampled && e.labels != d.labels {
            problems.push(format!(
                "{name}: exposed with labels {:?}, documented with {:?}",
                e.labels, d.labels
            ));
        }
    }
    for name in documented.keys() {
        if !source.contains(name) && !exposed.contains_key(name) {
            problems.push(format!("{name}: documented but no longer exists"));
        }
    }
    for name in source {
        if !documented.contains_key(name) {
            problems.push(format!("{name}: defined in the source but not documented"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_and_labels_are_read_back() {
        let text = "# HELP h x\n# TYPE h histogram\nh_bucket{route=\"/a,\\\"b\",le=\"0.1\"} 1\n\
                    h_sum{route=\"/a\"} 1\nh_count{route=\"/a\"} 1\n# TYPE g gauge\n\
                    # TYPE c counter\nc 3\n";
        let e = exposed(text);
        assert_eq!(e["h"].kind, "histogram");
        assert_eq!(e["h"].labels, BTreeSet::from(["route".to_string()]));
        assert!(!e["g"].sampled);
        assert!(e["c"].sampled && e["c"].labels.is_empty());
        assert_eq!(e.len(), 3, "{e:?}");
    }

    #[test]
    fn every_kind_of_drift_is_reported() {
        let doc = BTreeMap::from([
            (
                "a_total".to_string(),
                Documented {
                    kind: "counter".into(),
                    labels: BTreeSet::from(["x".to_string()]),
                },
            ),
            (
                "a_gone".to_string(),
                Documented {
                    kind: "gauge".into(),
                    labels: BTreeSet::new(),
                },
            ),
        ]);
        let exp = exposed("# TYPE a_total gauge\na_total{y=\"1\"} 1\n# TYPE a_new gauge\n");
        let src = BTreeSet::from(["a_total".to_string(), "a_late".to_string()]);
        let p = compare(&doc, &exp, &src).join("\n");
        for want in [
            "a_total: exposed as a gauge",
            "a_total: exposed with labels",
            "a_new: exposed but not documented",
            "a_gone: documented but no longer exists",
            "a_late: defined in the source but not documented",
        ] {
            assert!(p.contains(want), "{want} missing from:\n{p}");
        }
        assert_eq!(
            literals("x(\"a_b1\", \"a_B\", \"ab_c\", \"a_c d\")", &["a_"]),
            ["a_b1"]
        );
    }
}
