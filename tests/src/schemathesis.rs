//! [Schemathesis](https://schemathesis.readthedocs.io/) runs against a service's OpenAPI
//! document: the command line of a bounded run, and what its reports say (cases, checks,
//! failures). `cargo xtask setup` (and every `cargo xtask test`) installs it from PyPI into a
//! virtualenv of its own, [`DEFAULT_VENV`] under the home folder, or where `LB_SCHEMATHESIS`
//! points to (xtask sets it for the tests it runs).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

/// The variable naming the `schemathesis` executable.
pub const ENV: &str = "LB_SCHEMATHESIS";

/// The variable that replays a run: its value is passed as `--seed` (a failure's report
/// prints the seed that found it).
pub const SEED_ENV: &str = "LB_SCHEMATHESIS_SEED";

/// The virtualenv xtask installs into, relative to `$HOME` (xtask/src/deps.rs).
pub const DEFAULT_VENV: &str = ".local/share/lb-xdp/schemathesis";

/// The installed `schemathesis` program.
#[derive(Clone, Debug)]
pub struct Schemathesis {
    exe: PathBuf,
}

/// One bounded run: the service's document, the config file (tests/schemathesis/*.toml) and
/// how many cases per operation and phase.
#[derive(Clone, Debug)]
pub struct Run<'a> {
    /// URL of the OpenAPI document; the API's base is the document's server or its origin.
    pub schema_url: &'a str,
    /// A schemathesis.toml (headers, checks' settings, excluded operations).
    pub config: &'a Path,
    /// Cases per operation in each phase (`--max-examples`): the run's bound.
    pub max_examples: u32,
    /// Where the JSON and NDJSON reports go (also the working directory of the run).
    pub reports: &'a Path,
}

impl Schemathesis {
    /// Finds the program, or says how to install it.
    pub fn find() -> Result<Self, String> {
        let exe = match std::env::var_os(ENV) {
            Some(p) => PathBuf::from(p),
            None => {
                let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
                PathBuf::from(home)
                    .join(DEFAULT_VENV)
                    .join("bin/schemathesis")
            }
        };
        if exe.is_file() {
            Ok(Self { exe })
        } else {
            Err(format!(
                "schemathesis is not installed at {}: `cargo xtask setup` (or any `cargo xtask \
                 test`) installs it from PyPI into a virtualenv",
                exe.display()
            ))
        }
    }

    /// The command line of `run` (program first), to run directly or inside a namespace;
    /// [`finish`] runs it in `run.reports` (schemathesis keeps its example database in the
    /// working directory).
    pub fn command_line(&self, run: &Run<'_>) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![self.exe.clone().into()];
        args.extend(["--config-file".into(), run.config.as_os_str().to_owned()]);
        args.extend(["run".into(), run.schema_url.into()]);
        args.extend(["--max-examples".into(), run.max_examples.to_string().into()]);
        args.extend(["--no-color".into(), "--report".into(), "json,ndjson".into()]);
        args.extend(["--report-dir".into(), run.reports.as_os_str().to_owned()]);
        if let Some(seed) = std::env::var_os(SEED_ENV) {
            args.extend(["--seed".into(), seed]);
        }
        args
    }
}

/// Runs `cmd` (a [`Schemathesis::command_line`], perhaps inside a namespace) to its end,
/// bounded by `limit`, and reads its reports from `reports`. An error holds everything
/// needed to see why: the run's output (its failures, each with a `curl` line that
/// reproduces it) and the report's summary.
pub fn finish(
    cmd: &mut Command,
    reports: &Path,
    limit: Duration,
    service: &str,
) -> Result<Report, String> {
    let out = crate::exec::output(cmd.current_dir(reports), limit)
        .map_err(|e| format!("schemathesis did not finish: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = Report::read(reports).map_err(|e| format!("{e}\n{stdout}"))?;
    if out.status.success() && report.failures == 0 && report.errors == 0 {
        Ok(report)
    } else {
        Err(format!(
            "{}\nschemathesis found problems ({}):\n{stdout}\n{}",
            report.summary(service),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// What a finished run did, from its reports.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Test cases generated and sent.
    pub cases: u64,
    /// Operations (`METHOD /path`) that were tested.
    pub operations: BTreeSet<String>,
    /// Check name -> (passed, failed) over every case.
    pub checks: BTreeMap<String, (u64, u64)>,
    /// Operations on which `ignored_auth` ran and passed: a request without the credentials
    /// was refused with 401.
    pub auth_enforced: BTreeSet<String>,
    /// Unique failures the run reported.
    pub failures: u64,
    /// Errors (an operation that could not be tested at all).
    pub errors: u64,
    /// The seed that reproduces the run (`--seed`).
    pub seed: String,
}

impl Report {
    /// Reads `run.json` and `events.ndjson`-style reports from `dir`.
    pub fn read(dir: &Path) -> Result<Self, String> {
        let find = |ext: &str| -> Result<PathBuf, String> {
            std::fs::read_dir(dir)
                .map_err(|e| format!("reading {}: {e}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|x| x == ext))
                .ok_or_else(|| format!("no .{ext} report in {}", dir.display()))
        };
        let path = find("json")?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut r = Report {
            cases: json["test_cases"]["generated"].as_u64().unwrap_or(0),
            failures: json["test_cases"]["unique_failures"].as_u64().unwrap_or(0),
            errors: json["errors"].as_array().map_or(0, |a| a.len() as u64),
            seed: seed(&text),
            ..Report::default()
        };
        let events = std::fs::read_to_string(find("ndjson")?)
            .map_err(|e| format!("reading the NDJSON report: {e}"))?;
        for line in events.lines() {
            let Ok(event) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let scenario = &event["ScenarioFinished"];
            let Some(label) = scenario["recorder"]["label"].as_str() else {
                continue;
            };
            if scenario["phase"] != "stateful" {
                r.operations.insert(label.to_string());
            }
            for case in scenario["recorder"]["checks"]
                .as_object()
                .into_iter()
                .flatten()
            {
                for check in case.1.as_array().into_iter().flatten() {
                    let name = check["name"].as_str().unwrap_or("?").to_string();
                    let passed = check["status"] == "success";
                    let e = r.checks.entry(name.clone()).or_default();
                    if passed {
                        e.0 += 1;
                    } else {
                        e.1 += 1;
                    }
                    if passed && name == "ignored_auth" {
                        r.auth_enforced.insert(label.to_string());
                    }
                }
            }
        }
        Ok(r)
    }

    /// One paragraph for the test's output (and the report to the reader).
    pub fn summary(&self, service: &str) -> String {
        let checks: Vec<String> = self
            .checks
            .iter()
            .map(|(n, (ok, bad))| format!("{n} {ok}/{}", ok + bad))
            .collect();
        format!(
            "schemathesis against {service}: {} cases over {} operations, {} failures, {} errors \
             (seed {}); checks passed/run: {}",
            self.cases,
            self.operations.len(),
            self.failures,
            self.errors,
            self.seed,
            checks.join(", ")
        )
    }
}

/// The seed as written: it has more digits than a JSON number read as `f64` keeps.
fn seed(json: &str) -> String {
    json.split_once("\"seed\":")
        .map(|(_, rest)| {
            rest.trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_read() {
        let dir = std::env::temp_dir().join(format!("st-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join("run.json"),
            r#"{"seed": 218573455071939645008081522078714926211, "test_cases": {"generated": 7, "unique_failures": 1}, "errors": []}"#,
        )
        .expect("json");
        let scenario = |phase: &str, label: &str, checks: &str| {
            format!(
                r#"{{"ScenarioFinished": {{"phase": "{phase}", "recorder": {{"label": "{label}", "checks": {checks}}}}}}}"#
            )
        };
        let events = [
            r#"{"Initialize": {}}"#.to_string(),
            scenario(
                "examples",
                "GET /v1/vips",
                r#"{"a": [{"name": "ignored_auth", "status": "success"}, {"name": "not_a_server_error", "status": "success"}]}"#,
            ),
            scenario(
                "fuzzing",
                "POST /v1/vips",
                r#"{"b": [{"name": "not_a_server_error", "status": "failure"}]}"#,
            ),
            scenario("stateful", "Stateful tests", r#"{}"#),
        ];
        std::fs::write(dir.join("events.ndjson"), events.join("\n")).expect("ndjson");
        let r = Report::read(&dir).expect("read");
        assert_eq!(
            (r.cases, r.failures, r.seed.as_str()),
            (7, 1, "218573455071939645008081522078714926211")
        );
        assert_eq!(r.operations.len(), 2);
        assert_eq!(r.checks["not_a_server_error"], (1, 1));
        assert_eq!(r.auth_enforced.iter().collect::<Vec<_>>(), ["GET /v1/vips"]);
        assert!(r.summary("lbd").contains("7 cases over 2 operations"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
