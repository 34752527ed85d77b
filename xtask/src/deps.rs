//! Installs what the project needs, idempotently: the nightly `rust-src` component,
//! `bpf-linker` (built against the nightly toolchain's own LLVM, see docs/building.md), and
//! the Debian packages the tests and the lab use.

use std::{fs, os::unix::fs::symlink, path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

use crate::util::{output, run, step, succeeds};

/// Debian packages and a binary each provides (to tell whether it is installed).
pub const APT_PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "/usr/sbin/ip"),
    ("ethtool", "/usr/sbin/ethtool"),
    ("procps", "/usr/sbin/sysctl"),
    ("iputils-ping", "/usr/bin/ping"),
    ("bpftool", "/usr/sbin/bpftool"),
    ("tcpdump", "/usr/bin/tcpdump"),
    ("redis-server", "/usr/bin/redis-server"),
    ("redis-tools", "/usr/bin/redis-benchmark"),
    ("postgresql", "/usr/lib/postgresql/15/bin/postgres"),
    ("wrk", "/usr/bin/wrk"),
    ("curl", "/usr/bin/curl"),
    ("ruby", "/usr/bin/ruby"),
    ("keepalived", "/usr/sbin/keepalived"),
    // BGP: the speaker lbd drives, and the lab's router (issue 13).
    ("bird2", "/usr/sbin/bird"),
    ("nginx", "/usr/sbin/nginx"),
    (
        "libnginx-mod-stream",
        "/usr/lib/nginx/modules/ngx_stream_module.so",
    ),
    ("haproxy", "/usr/sbin/haproxy"),
    ("rabbitmq-server", "/usr/sbin/rabbitmq-server"),
    // `cargo xtask test package`: a fresh root to install the packages into, and the
    // systemd units' checker
    ("mmdebstrap", "/usr/bin/mmdebstrap"),
    ("systemd", "/usr/bin/systemd-analyze"),
    // Reads the pcapng files `lbctl capture` writes (the capture tests check what it sees).
    ("tshark", "/usr/bin/tshark"),
    // promtool for the rules' tests, and the lab's Prometheus server (prometheus/).
    ("prometheus", "/usr/bin/promtool"),
    // The virtualenv of the Python tools (xtask/src/venv.rs).
    ("python3-venv", "/usr/lib/python3.11/ensurepip/__init__.py"),
];

/// What `cargo xtask bench app` adds: the seed's Gin service and its Redis client, built
/// from Debian's Go packages by the bench, and `perf` for the profile in app/docs.
pub const APP_BENCH_PACKAGES: &[(&str, &str)] = &[
    ("golang-go", "/usr/bin/go"),
    (
        "golang-github-gin-gonic-gin-dev",
        "/usr/share/gocode/src/github.com/gin-gonic/gin",
    ),
    (
        "golang-gopkg-redis.v5-dev",
        "/usr/share/gocode/src/gopkg.in/redis.v5",
    ),
    ("linux-perf", "/usr/bin/perf"),
];

pub fn apt_packages() -> Result<()> {
    apt_install(APT_PACKAGES)
}

/// Installs those of `packages` whose probe file is missing.
pub fn apt_install(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, probe)| !std::path::Path::new(probe).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::util::is_root() {
        bail!(
            "packages missing: {} (run as root so xtask can apt-get install them)",
            missing.join(" ")
        );
    }
    step(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    // Another apt run (a second xtask, an unattended upgrade) holds the lock for a while:
    // wait for it rather than fail.
    const LOCK_WAIT: &str = "DPkg::Lock::Timeout=600";
    run(Command::new("apt-get").args(["-o", LOCK_WAIT, "update", "-q"]))?;
    let mut install = Command::new("apt-get");
    install
        .args([
            "-o",
            LOCK_WAIT,
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
        ])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run(&mut install)?;
    // Debian starts some services on install where an init system runs; none is wanted here.
    Ok(())
}

/// The npm packages of `dir` (`package-lock.json`) installed with `npm ci` when
/// `node_modules` is missing or older than the lock file; Node.js and npm from Debian when
/// the machine has none.
pub fn npm_ci(dir: &std::path::Path) -> Result<()> {
    if !succeeds(Command::new("node").arg("--version"))
        || !succeeds(Command::new("npm").arg("--version"))
    {
        apt_install(&[("nodejs", "/usr/bin/node"), ("npm", "/usr/bin/npm")])?;
    }
    let modified = |p: &std::path::Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    let stamp = dir.join("node_modules/.package-lock.json");
    if modified(&stamp).is_some() && modified(&stamp) >= modified(&dir.join("package-lock.json")) {
        return Ok(());
    }
    step(&format!("installing npm packages in {}", dir.display()));
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir))
}

/// What the dashboard tests drive: Debian's `chromium` (headless) and `playwright-core` from
/// tests/dashboard's lockfile.
pub fn dashboard() -> Result<()> {
    apt_install(&[("chromium", "/usr/bin/chromium")])?;
    npm_ci(&crate::util::root().join("tests/dashboard"))
}

fn nightly_sysroot() -> Result<PathBuf> {
    let out = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"])).context(
        "the nightly toolchain is required for the eBPF build (rustup toolchain install nightly)",
    )?;
    Ok(PathBuf::from(out.trim()))
}

pub fn rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    step("installing the nightly rust-src component");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// A lasting folder holding `lib/libLLVM*` links to the nightly toolchain's LLVM.
fn llvm_prefix() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".local/share/lb-xdp/llvm"))
}

fn linker_works() -> bool {
    succeeds(Command::new("bpf-linker").arg("--version"))
}

pub fn bpf_linker() -> Result<()> {
    let sysroot = nightly_sysroot()?;
    let lib = sysroot.join("lib");
    let llvm = fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))?;
    let prefix = llvm_prefix()?;
    let plib = prefix.join("lib");
    fs::create_dir_all(&plib)?;
    // The linker asks for the library by its versioned name at run time, and the build looks
    // for plain libLLVM.so: both links must exist (and stay: the prefix is not a temp dir).
    for name in ["libLLVM.so", llvm.as_str()] {
        let link = plib.join(name);
        let target = lib.join(&llvm);
        if fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
            let _ = fs::remove_file(&link);
            symlink(&target, &link).with_context(|| format!("linking {}", link.display()))?;
        }
    }
    if linker_works() {
        return Ok(());
    }
    let version = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("cannot read the nightly LLVM version")?
        .to_string();
    step(&format!(
        "installing bpf-linker against the nightly LLVM {major} (about 2 minutes)"
    ));
    let install = |locked: bool| {
        let mut c = Command::new("cargo");
        c.args(["install", "bpf-linker"]);
        if locked {
            c.arg("--locked");
        }
        c.args(["--no-default-features", "--features"])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix)
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO_TARGET_DIR");
        run(&mut c)
    };
    // `--locked` can fail when the published lock file does not fit this toolchain.
    if install(true).is_err() {
        install(false)?;
    }
    if !linker_works() {
        bail!(
            "bpf-linker was installed but `bpf-linker --version` fails: check {}",
            plib.display()
        );
    }
    Ok(())
}

pub fn toolchain() -> Result<()> {
    rust_src()?;
    bpf_linker()
}

/// The cargo-deb version `cargo xtask package` uses (builds with this rustc; gzip only, so
/// no C library to build).
const CARGO_DEB: &str = "3.8.0";

pub fn cargo_deb() -> Result<()> {
    let have = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if have.is_some_and(|v| v.contains(CARGO_DEB)) {
        return Ok(());
    }
    step(&format!(
        "installing cargo-deb {CARGO_DEB} (about a minute)"
    ));
    run(Command::new("cargo")
        .args(["install", "cargo-deb", "--locked", "--version", CARGO_DEB])
        .args(["--no-default-features", "--features", "gzip"])
        .env_remove("CARGO_TARGET_DIR"))
}

/// What the VM lab needs (`cargo xtask vagrant`): QEMU, libvirt, Vagrant with vagrant-libvirt,
/// and mmdebstrap (plus sfdisk) for the box.
pub const VM_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "/usr/bin/qemu-system-x86_64"),
    ("libvirt-daemon-system", "/usr/sbin/libvirtd"),
    (
        "libvirt-daemon-driver-qemu",
        "/var/lib/dpkg/info/libvirt-daemon-driver-qemu.list",
    ),
    ("libvirt-clients", "/usr/bin/virsh"),
    ("dnsmasq-base", "/usr/sbin/dnsmasq"),
    ("vagrant", "/usr/bin/vagrant"),
    ("vagrant-libvirt", "/var/lib/dpkg/info/vagrant-libvirt.list"),
    ("mmdebstrap", "/usr/bin/mmdebstrap"),
    ("fdisk", "/usr/sbin/sfdisk"),
    ("binutils", "/usr/bin/objcopy"),
    ("openssh-client", "/usr/bin/ssh"),
];

/// On Debian 12, QEMU and libvirt come from bookworm-backports (a newer qemu-utils may be
/// installed from there already, and bookworm's own QEMU refuses to sit beside it): the
/// backports suite from the mirror the machine already uses, pinned to QEMU, libvirt and SeaBIOS.
fn bookworm_backports() -> Result<()> {
    let os = fs::read_to_string("/etc/os-release").unwrap_or_default();
    if !os.lines().any(|l| l == "VERSION_CODENAME=bookworm") {
        return Ok(());
    }
    let sources = std::path::Path::new("/etc/apt/sources.list.d/lb-xdp-backports.sources");
    let pin = std::path::Path::new("/etc/apt/preferences.d/lb-xdp-backports.pref");
    if sources.exists() && pin.exists() {
        return Ok(());
    }
    let configured =
        output(Command::new("apt-get").args(["indextargets", "--format", "$(REPO_URI)"]))?;
    let mirror = configured
        .lines()
        .map(str::trim)
        .find(|u| u.ends_with("/debian/") || u.ends_with("/debian"))
        .unwrap_or("http://deb.debian.org/debian/")
        .to_string();
    step(&format!(
        "adding bookworm-backports from {mirror} for QEMU and libvirt"
    ));
    fs::write(
        sources,
        format!(
            "# Added by the lb-xdp project (cargo xtask vagrant): QEMU and libvirt for the VM lab.\n\
             Types: deb\nURIs: {mirror}\nSuites: bookworm-backports\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        ),
    )
    .with_context(|| format!("writing {}", sources.display()))?;
    fs::write(
        pin,
        "# Added by the lb-xdp project (cargo xtask vagrant): only QEMU, libvirt and SeaBIOS come\n\
         # from bookworm-backports.\nPackage: src:qemu src:libvirt src:seabios\n\
         Pin: release n=bookworm-backports\nPin-Priority: 500\n",
    )
    .with_context(|| format!("writing {}", pin.display()))?;
    // apt_install runs `apt-get update` before installing.
    Ok(())
}

/// Installs what the VM lab needs. Idempotent.
pub fn vm_packages() -> Result<()> {
    let missing = VM_PACKAGES
        .iter()
        .any(|(_, probe)| !std::path::Path::new(probe).exists());
    if !missing {
        return Ok(());
    }
    if crate::util::is_root() {
        bookworm_backports()?;
    }
    apt_install(VM_PACKAGES)
}
/// cargo-fuzz (the `cargo fuzz` subcommand; it drives libFuzzer with the nightly toolchain).
pub fn cargo_fuzz() -> Result<()> {
    if succeeds(Command::new("cargo").args(["fuzz", "--version"])) {
        return Ok(());
    }
    step("installing cargo-fuzz (about 2 minutes)");
    let install = |locked: bool| {
        let mut c = Command::new("cargo");
        c.args(["install", "cargo-fuzz"]);
        if locked {
            c.arg("--locked");
        }
        c.env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO_TARGET_DIR");
        run(&mut c)
    };
    if install(true).is_err() {
        install(false)?;
    }
    Ok(())
}
