//! `cargo xtask package`: Debian packages of lbd (with lbctl) and of app, made by cargo-deb
//! from the release binaries, the systemd units in `packaging/systemd`, the example configs
//! and man pages generated from the programs' own clap definitions (clap_mangen).

use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

use crate::{deps, util};

/// The packages: (cargo package, Debian package).
pub const PACKAGES: &[(&str, &str)] = &[("lbd", "lbd"), ("app", "lb-app")];

/// Builds everything and returns the paths of the `.deb` files.
pub fn run() -> Result<Vec<PathBuf>> {
    deps::cargo_deb()?;
    crate::lab::up::build()?;
    man_pages()?;
    let mut debs = Vec::new();
    for (pkg, _) in PACKAGES {
        util::step(&format!("cargo deb -p {pkg}"));
        let out = util::output(
            util::cargo()
                .args(["deb", "-p", pkg, "--no-build"])
                .arg("--output")
                .arg(util::root().join("target/debian")),
        )?;
        let deb = out
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.ends_with(".deb"))
            .map(PathBuf::from)
            .with_context(|| format!("cargo deb -p {pkg} did not name its package: {out}"))?;
        eprintln!("{}", deb.display());
        debs.push(deb);
    }
    Ok(debs)
}

/// `target/package/man`: lbd.8, lbctl*.1 and app*.1, gzipped as Debian wants them.
fn man_pages() -> Result<()> {
    util::step("man pages from the clap definitions");
    let root = util::root();
    let dir = root.join("target/package/man");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let bin = |name: &str| root.join("target/release").join(name);
    util::run(Command::new(bin("lbd")).arg("--generate-man").arg(&dir))?;
    util::run(Command::new(bin("lbctl")).arg("generate-man").arg(&dir))?;
    util::run(Command::new(bin("app")).arg("generate-man").arg(&dir))?;
    let mut n = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "1" || e == "8") {
            // -n: no name or time stamp inside, so the package is reproducible.
            util::run(Command::new("gzip").args(["-9", "-n", "-f"]).arg(&path))?;
            n += 1;
        }
    }
    if n < 3 {
        bail!(
            "expected man pages for lbd, lbctl and app in {}",
            dir.display()
        );
    }
    Ok(())
}
