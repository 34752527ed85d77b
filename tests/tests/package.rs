//! The Debian packages of `cargo xtask package` (run it first; `cargo xtask test package`
//! does): `dpkg-deb --info/--contents` list what a server needs, the systemd units pass
//! `systemd-analyze verify`, and both packages install into a fresh Debian root (made by
//! mmdebstrap), run there, and purge without leaving a file behind.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

fn root_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// The newest `.deb` of `name` in target/debian.
fn deb(name: &str) -> PathBuf {
    let dir = root_dir().join("target/debian");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}: run `cargo xtask package` first (or `cargo xtask test package`)",
                dir.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{name}_")) && n.ends_with(".deb"))
        })
        .collect();
    found.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    found.pop().unwrap_or_else(|| {
        panic!(
            "no {name}_*.deb in {}: run `cargo xtask package`",
            dir.display()
        )
    })
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (is it installed? `cargo xtask setup`)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the package tests need root (dpkg --root, chroot): run `cargo xtask test package`"
    );
}

#[test]
fn packages_list_what_a_server_needs() {
    let lbd = deb("lbd");
    let info = run(Command::new("dpkg-deb").arg("--info").arg(&lbd));
    for want in [
        "Package: lbd",
        "Depends: ",
        "libc6",
        "Section: net",
        "Description: ",
    ] {
        assert!(info.contains(want), "lbd info lacks {want:?}:\n{info}");
    }
    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&lbd));
    for want in [
        "./usr/sbin/lbd",
        "./usr/bin/lbctl",
        "./etc/lbd/lbd.toml",
        "./lib/systemd/system/lbd.service",
        "./usr/share/man/man8/lbd.8.gz",
        "./usr/share/man/man1/lbctl.1.gz",
        "./usr/share/man/man1/lbctl-reload.1.gz",
        "./usr/share/doc/lbd/copyright",
    ] {
        assert!(contents.contains(want), "lbd lacks {want}:\n{contents}");
    }
    let conffiles = run(Command::new("dpkg-deb")
        .arg("--info")
        .arg(&lbd)
        .arg("conffiles"));
    assert!(
        conffiles.contains("/etc/lbd/lbd.toml"),
        "lbd keeps an edited config across upgrades (conffile): {conffiles}"
    );

    let app = deb("lb-app");
    let info = run(Command::new("dpkg-deb").arg("--info").arg(&app));
    assert!(info.contains("Package: lb-app"), "{info}");
    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&app));
    for want in [
        "./usr/bin/app",
        "./etc/lb-app/app.toml",
        "./lib/systemd/system/lb-app.service",
        "./usr/share/man/man1/app.1.gz",
        "./usr/share/man/man1/app-serve.1.gz",
    ] {
        assert!(contents.contains(want), "lb-app lacks {want}:\n{contents}");
    }
}

/// Every regular file and link under `root`, relative, except dpkg's own records.
fn files(root: &Path) -> BTreeSet<String> {
    let out = run(Command::new("find").arg(root).args([
        "-mindepth",
        "1",
        "(",
        "-type",
        "f",
        "-o",
        "-type",
        "l",
        ")",
    ]));
    out.lines()
        .filter_map(|l| l.strip_prefix(root.to_str().expect("utf-8")))
        .filter(|l| {
            !l.starts_with("/var/lib/dpkg/")
                && !l.starts_with("/var/log/")
                && !l.starts_with("/var/cache/")
        })
        .map(str::to_string)
        .collect()
}

/// A minimal Debian 12 server root (`mmdebstrap --variant=essential` plus systemd and procps,
/// which every server the units are for has: `systemd-analyze verify` needs systemd's own
/// targets, and `ExecReload` names /bin/kill), kept in target/package so a second run needs
/// no download.
fn fresh_root(dir: &Path) -> PathBuf {
    let cache = root_dir().join("target/package/bookworm-systemd.tar");
    // Anything but a file there (a directory an interrupted older run left) is rebuilt.
    if cache.is_dir() {
        std::fs::remove_dir_all(&cache).expect("remove a stale root directory");
    }
    if !cache.is_file() {
        std::fs::create_dir_all(cache.parent().expect("dir")).expect("mkdir");
        // mmdebstrap picks its output format from the name's extension: the temporary name
        // ends in .tar too (and the format is said), or it writes a directory.
        let tmp = cache.with_extension("partial.tar");
        run(Command::new("mmdebstrap")
            .args([
                "--variant=essential",
                "--mode=root",
                "--format=tar",
                "--include=systemd,procps",
                "--quiet",
            ])
            .arg("bookworm")
            .arg(&tmp));
        std::fs::rename(&tmp, &cache).expect("keep the root");
    }
    let root = dir.join("root");
    std::fs::create_dir_all(&root).expect("mkdir root");
    run(Command::new("tar")
        .arg("-xf")
        .arg(&cache)
        .arg("-C")
        .arg(&root));
    root
}

#[test]
fn packages_install_run_and_purge_cleanly_in_a_fresh_root() {
    require_root();
    let (lbd, app) = (deb("lbd"), deb("lb-app"));
    let dir = tempfile::tempdir_in(root_dir().join("target")).expect("tempdir");
    let root = fresh_root(dir.path());
    let before = files(&root);

    run(Command::new("dpkg")
        .arg("--root")
        .arg(&root)
        .arg("-i")
        .arg(&lbd)
        .arg(&app));
    let status = run(Command::new("dpkg")
        .arg("--root")
        .arg(&root)
        .args(["-s", "lbd", "lb-app"]));
    assert_eq!(
        status.matches("Status: install ok installed").count(),
        2,
        "{status}"
    );

    // The programs run against the root's own libraries.
    let chroot = |args: &[&str]| run(Command::new("chroot").arg(&root).args(args));
    assert!(chroot(&["/usr/sbin/lbd", "--version"]).starts_with("lbd "));
    assert!(chroot(&["/usr/bin/lbctl", "--version"]).starts_with("lbctl "));
    assert!(chroot(&["/usr/bin/app", "--version"]).starts_with("app "));
    let ok = chroot(&["/usr/sbin/lbd", "--check-config", "/etc/lbd/lbd.toml"]);
    assert!(ok.starts_with("ok:"), "the example config is valid: {ok}");
    let cfg = chroot(&[
        "/usr/bin/app",
        "check-config",
        "--config",
        "/etc/lb-app/app.toml",
    ]);
    assert!(cfg.contains("[database]"), "{cfg}");

    // The units, as installed, with the binaries they name.
    for unit in ["lbd.service", "lb-app.service"] {
        let path = root.join("lib/systemd/system").join(unit);
        // --man=no: the Documentation= pages are in the package, but man-db is not in the root.
        run(Command::new("systemd-analyze")
            .arg(format!("--root={}", root.display()))
            .args(["verify", "--man=no"])
            .arg(&path));
        let text = std::fs::read_to_string(&path).expect("unit");
        for want in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "StateDirectory=",
            "CapabilityBoundingSet=",
        ] {
            assert!(text.contains(want), "{unit} lacks {want}");
        }
    }

    run(Command::new("dpkg")
        .arg("--root")
        .arg(&root)
        .args(["--purge", "lbd", "lb-app"]));
    let after = files(&root);
    let left: Vec<_> = after.difference(&before).collect();
    assert!(
        left.is_empty(),
        "files left behind by the packages: {left:?}"
    );
    let gone: Vec<_> = before.difference(&after).collect();
    assert!(
        gone.is_empty(),
        "files of the root removed by the packages: {gone:?}"
    );
}
