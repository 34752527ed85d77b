//! `cargo xtask fuzz [TARGET] [--time S]`: the parsers under libFuzzer (cargo-fuzz, nightly),
//! each target starting from its committed corpus (`fuzz/corpus/TARGET`: seeds and every
//! crash found so far, as regression cases). New inputs go to `fuzz/target/corpus/TARGET`, a
//! crash to `fuzz/artifacts/TARGET/` (the command fails and names it).

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{deps, util};

/// Every fuzz target (`fuzz/fuzz_targets/NAME.rs`) and what it feeds.
pub const TARGETS: &[(&str, &str)] = &[
    (
        "packet",
        "the packet describer on any bytes; the builder on frames made from them",
    ),
    (
        "pcap",
        "the pcap reader; what it reads writes back the same",
    ),
    (
        "lbd_config",
        "lbd's config file (errors name file:line: field)",
    ),
    (
        "vrrp",
        "the VRRPv3 codec (IPv4 packet, bare message, both families)",
    ),
    ("topology", "the lab's topology file"),
    (
        "app_bodies",
        "the app's request bodies: users, tasks, orders",
    ),
    ("app_config", "the app's config file and APP_* overrides"),
];

/// How the targets are built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// Optimised: for real fuzzing runs (`cargo xtask fuzz`).
    Release,
    /// Unoptimised: builds in a fraction of the time, runs slower; enough for the short
    /// regression runs of `cargo xtask test`.
    Dev,
}

impl Build {
    /// cargo-fuzz's flags: the build profile, and no sanitizer (the code is safe Rust, a
    /// crash is a panic; AddressSanitizer would double build and run time for nothing).
    fn flags(self) -> &'static [&'static str] {
        match self {
            Build::Release => &["-s", "none"],
            Build::Dev => &["-s", "none", "--dev"],
        }
    }
}

/// Runs `target` (or every target) for `seconds` each.
pub fn run(target: Option<&str>, seconds: u64, how: Build) -> Result<()> {
    let targets: Vec<&str> = match target {
        Some(t) => {
            if !TARGETS.iter().any(|(n, _)| *n == t) {
                bail!(
                    "no fuzz target {t:?}; targets: {}",
                    TARGETS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            vec![t]
        }
        None => TARGETS.iter().map(|(n, _)| *n).collect(),
    };
    deps::cargo_fuzz()?;
    let dir = util::root().join("fuzz");
    util::step(&format!(
        "building {} fuzz target(s) (nightly, coverage-instrumented)",
        targets.len()
    ));
    let mut build = fuzz_cargo();
    build.args(["fuzz", "build"]).args(how.flags());
    if targets.len() == 1 {
        build.arg(targets[0]);
    }
    util::run(&mut build)?;
    for t in targets {
        util::step(&format!("fuzzing {t} for {seconds} s"));
        let seeds = dir.join("corpus").join(t);
        if !seeds.is_dir() {
            bail!(
                "fuzz target {t} has no seed corpus: {} is missing (commit at least one \
                 valid input there)",
                seeds.display()
            );
        }
        let artifacts = dir.join("artifacts").join(t);
        let crashes_before = count_files(&artifacts);
        let found = dir.join("target/corpus").join(t);
        std::fs::create_dir_all(&found).with_context(|| format!("creating {}", found.display()))?;
        let status = fuzz_cargo()
            .args(["fuzz", "run"])
            .args(how.flags())
            .arg(t)
            .arg(&found)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .args(["-rss_limit_mb=2048", "-print_final_stats=1"])
            .status()
            .context("running cargo fuzz")?;
        if !status.success() {
            if count_files(&artifacts) > crashes_before {
                bail!(
                    "fuzz target {t} failed ({status}): the crashing input is in {}; fix the \
                     crash, then add the input to fuzz/corpus/{t} as a regression case",
                    artifacts.display()
                );
            }
            bail!(
                "fuzz target {t} failed ({status}) without a crashing input: see its output above"
            );
        }
    }
    Ok(())
}

/// Files in `dir` (0 when it does not exist).
fn count_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

/// `cargo +nightly` in `fuzz/` (cargo-fuzz needs nightly's sanitizer flags).
fn fuzz_cargo() -> Command {
    let mut c = util::nightly_cargo();
    c.current_dir(util::root().join("fuzz")).arg("+nightly");
    c
}
