//! Python tools from PyPI, each pinned in a virtualenv of its own under
//! `~/.local/share/lb-xdp/` (a lasting folder shared by every clone, like the LLVM prefix):
//! Schemathesis, which the API tests run against lbd's and the app's OpenAPI documents
//! (`tests::schemathesis` finds it there).

use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

use crate::util::{output, run, step};

/// The version the tests and their configs (tests/schemathesis/*.toml) are written for.
pub const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// `~/.local/share/lb-xdp/schemathesis` (`tests::schemathesis::DEFAULT_VENV`).
fn schemathesis_venv() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".local/share/lb-xdp/schemathesis"))
}

/// Installs Schemathesis unless the pinned version is there already; returns its program.
pub fn schemathesis() -> Result<PathBuf> {
    let venv = schemathesis_venv()?;
    let exe = venv.join("bin/schemathesis");
    let installed = |exe: &PathBuf| {
        output(Command::new(exe).arg("--version"))
            .is_ok_and(|v| v.split_whitespace().last() == Some(SCHEMATHESIS_VERSION))
    };
    if installed(&exe) {
        return Ok(exe);
    }
    step(&format!(
        "installing schemathesis {SCHEMATHESIS_VERSION} from PyPI into {} (about a minute)",
        venv.display()
    ));
    if !venv.join("bin/python").exists() {
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
            .context("making the virtualenv (Debian package python3-venv)")?;
    }
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("schemathesis=={SCHEMATHESIS_VERSION}"),
    ]))?;
    if !installed(&exe) {
        bail!(
            "schemathesis was installed but `{} --version` does not say {SCHEMATHESIS_VERSION}",
            exe.display()
        );
    }
    Ok(exe)
}
