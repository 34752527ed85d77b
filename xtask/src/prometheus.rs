//! `cargo xtask test prometheus`: the rules under `prometheus/` pass `promtool check rules`
//! and their unit tests (`promtool test rules`), every alert has a test where it fires and one
//! where it stays silent, and the rules name only metrics docs/metrics.md lists (a test of
//! the lbd and app packages keeps that page equal to what they expose); so does the Grafana
//! dashboard `prometheus/grafana/lb-xdp.json`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::util::{self, run, step};

/// The `*.yml` files of `dir`, sorted.
fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no *.yml in {}", dir.display());
    }
    Ok(files)
}

pub fn check() -> Result<()> {
    let root = util::root().join("prometheus");
    let rules = yaml_files(&root.join("rules"))?;
    let tests = yaml_files(&root.join("tests"))?;
    step("promtool check rules");
    run(Command::new("promtool")
        .args(["check", "rules"])
        .args(&rules))?;
    step("promtool test rules (every alert firing and silent)");
    run(Command::new("promtool")
        .args(["test", "rules"])
        .args(&tests)
        .current_dir(root.join("tests")))?;
    let mut rules_text = String::new();
    for r in &rules {
        rules_text.push_str(&fs::read_to_string(r).with_context(|| format!("{}", r.display()))?);
    }
    let mut tests_text = String::new();
    for t in &tests {
        tests_text.push_str(&fs::read_to_string(t).with_context(|| format!("{}", t.display()))?);
    }
    let mut problems = untested_alerts(&rules_text, &tests_text);
    let page = util::root().join("docs/metrics.md");
    let documented = documented_names(
        &fs::read_to_string(&page).with_context(|| format!("{}", page.display()))?,
    );
    for name in metric_names(&rules_text) {
        if !documented.contains(&name) {
            problems.push(format!(
                "the rules use {name}, which docs/metrics.md does not list (renamed or gone?)"
            ));
        }
    }
    // The Grafana dashboard cannot be rendered here (no Grafana); its queries run against the
    // lab's Prometheus in the e2e test, and name only documented metrics.
    let dashboard = root.join("grafana/lb-xdp.json");
    let text = fs::read_to_string(&dashboard)
        .with_context(|| format!("reading {}", dashboard.display()))?;
    for name in metric_names(&text) {
        if !documented.contains(&name) {
            problems.push(format!(
                "{} uses {name}, which docs/metrics.md does not list",
                dashboard.display()
            ));
        }
    }
    if !problems.is_empty() {
        bail!("prometheus/:\n  {}", problems.join("\n  "));
    }
    eprintln!(
        "    {} rule files, {} alerts each tested firing and silent",
        rules.len(),
        alerts(&rules_text).len()
    );
    Ok(())
}

/// Names of the alerts (`- alert: NAME`).
fn alerts(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_string())
        .collect()
}

/// Alerts without a test case expecting them (firing) or expecting none (silent).
fn untested_alerts(rules: &str, tests: &str) -> Vec<String> {
    // alert -> (has a silent case, has a firing case)
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for (i, l) in lines.iter().enumerate() {
        let Some(name) = l.strip_prefix("alertname:") else {
            continue;
        };
        let next = lines.get(i + 1).copied().unwrap_or("");
        let e = cases.entry(name.trim().to_string()).or_default();
        if next == "exp_alerts: []" {
            e.0 = true;
        } else if next == "exp_alerts:" {
            e.1 = true;
        }
    }
    let mut problems = Vec::new();
    for a in alerts(rules) {
        match cases.get(&a) {
            Some((true, true)) => {}
            Some((silent, _)) => problems.push(format!(
                "alert {a} has no test where it {}",
                if *silent { "fires" } else { "stays silent" }
            )),
            None => problems.push(format!("alert {a} has no unit test")),
        }
    }
    problems
}

/// Metric names of docs/metrics.md's tables (first cell, in backticks).
fn documented_names(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(n, _)| n.to_string())
        .collect()
}

/// Metric names the rules read: identifiers of lbd's and app's prefixes (recording rules'
/// names hold a `:` and are left out; a histogram's series map to their family).
fn metric_names(rules: &str) -> BTreeSet<String> {
    let body: String = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    body.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| !t.contains(':'))
        .filter(|t| ["lb_", "lbd_", "app_"].iter().any(|p| t.starts_with(p)))
        .map(|t| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| t.strip_suffix(s))
                .unwrap_or(t)
                .to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_need_both_cases_and_names_are_read() {
        let rules = "- alert: A\n  expr: rate(app_x_bucket[1m]) > lb:y:rate1m\n- alert: B\n";
        let tests = "alertname: A\nexp_alerts: []\nalertname: A\nexp_alerts:\n\
                     alertname: B\nexp_alerts: []\n";
        assert_eq!(
            untested_alerts(rules, tests),
            ["alert B has no test where it fires"]
        );
        assert_eq!(
            metric_names(rules).into_iter().collect::<Vec<_>>(),
            ["app_x"]
        );
    }
}
