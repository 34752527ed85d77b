//! The peers the benches measure the app against, from the registries the project uses:
//! - the design seed's Gin service (`peers/gin/main.go`), built here from Debian's Go
//!   packages (golang-go, golang-github-gin-gonic-gin-dev, golang-gopkg-redis.v5-dev);
//! - BullMQ (`peers/bullmq`), installed from npm by `cargo xtask bench queue` (`npm ci`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The peers' sources in this crate.
pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// Debian's Go source tree, where its `golang-*-dev` packages install.
const GOPATH: &str = "/usr/share/gocode";

/// The Gin peer's binary, built (again when its source is newer) next to the bench binary.
pub fn gin_peer(progress: &dyn Fn(&str)) -> anyhow::Result<PathBuf> {
    let src = source_dir().join("gin");
    let main = src.join("main.go");
    crate::procs::need("go", "golang-go")?;
    for (pkg, dir) in [
        (
            "golang-github-gin-gonic-gin-dev",
            "github.com/gin-gonic/gin",
        ),
        ("golang-gopkg-redis.v5-dev", "gopkg.in/redis.v5"),
    ] {
        if !Path::new(GOPATH).join("src").join(dir).is_dir() {
            bail!(
                "{GOPATH}/src/{dir} not found: install the apt package `{pkg}` (`cargo xtask bench app` does)"
            );
        }
    }
    let out_dir = std::env::current_exe()?
        .parent()
        .context("the bench binary has no folder")?
        .join("peers");
    std::fs::create_dir_all(&out_dir)?;
    let bin = out_dir.join("gin-peer");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&bin).is_some() && modified(&bin) >= modified(&main) {
        return Ok(bin);
    }
    progress("building the Gin peer from Debian's Go packages (GO111MODULE=off)");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg("main.go")
        .current_dir(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOCACHE", out_dir.join("go-cache"))
        .env_remove("GOFLAGS")
        .output()
        .context("running go build")?;
    if !out.status.success() {
        bail!(
            "go build of {} failed:\n{}",
            main.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(bin)
}

/// The BullMQ peer's folder, with its npm packages installed.
pub fn bullmq_dir() -> anyhow::Result<PathBuf> {
    crate::procs::need("node", "nodejs")?;
    let dir = source_dir().join("bullmq");
    if !dir.join("node_modules/bullmq/package.json").is_file() {
        bail!(
            "BullMQ is not installed in {}: `cargo xtask bench queue` runs `npm ci` there",
            dir.display()
        );
    }
    Ok(dir)
}
