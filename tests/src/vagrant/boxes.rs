//! The lab's own Vagrant box (`vagrant/box/build.sh`): where a built box is cached, keyed by
//! everything that goes into it, so a second build is instant; and adding it to Vagrant.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{LabError, Result};
use crate::exec;

/// Files of `vagrant/box/` whose content makes the box.
const INPUTS: [&str; 3] = ["build.sh", "customize.sh", "packages"];

/// Environment variables of build.sh that change what it builds.
pub const INPUT_VARS: [&str; 3] = [
    "LAB_BOX_MIRROR",
    "LAB_BOX_SECURITY_MIRROR",
    "LAB_BOX_DISK_GIB",
];

/// A built (or to-be-built) box in the cache.
#[derive(Debug, Clone)]
pub struct BoxImage {
    /// Cache key: a hash of the inputs.
    pub key: String,
    /// Folder holding `lab.box`, `vmlinuz`, `initrd.img`.
    pub dir: PathBuf,
}

/// FNV-1a, 64 bits: a stable content hash without a crypto dependency (a cache key, not a
/// security boundary).
fn fnv1a(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h ^= u64::from(*b);
        *h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

/// The lasting cache folder: `$LAB_BOX_CACHE`, else `$XDG_CACHE_HOME/lb-xdp/boxes`, else
/// `~/.cache/lb-xdp/boxes`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("LAB_BOX_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("lb-xdp").join("boxes")
}

impl BoxImage {
    /// The box built from `vagrant/box/` of repository `repo` with the current environment.
    pub fn for_repo(repo: &Path) -> Result<Self> {
        let dir = repo.join("vagrant/box");
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for name in INPUTS {
            let path = dir.join(name);
            let text = std::fs::read(&path)
                .map_err(|e| LabError::io(format!("reading {}", path.display()), e))?;
            fnv1a(&mut h, name.as_bytes());
            fnv1a(&mut h, &text);
        }
        for var in INPUT_VARS {
            fnv1a(&mut h, var.as_bytes());
            fnv1a(&mut h, std::env::var(var).unwrap_or_default().as_bytes());
        }
        let key = format!("{h:016x}");
        Ok(Self {
            dir: cache_root().join(&key),
            key,
        })
    }

    /// The box file.
    pub fn file(&self) -> PathBuf {
        self.dir.join("lab.box")
    }

    /// The box's kernel (for the KVM probe).
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    /// The box's initrd.
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }

    /// Whether the box is built.
    pub fn is_built(&self) -> bool {
        self.file().is_file() && self.kernel().is_file() && self.initrd().is_file()
    }

    /// Name under which Vagrant knows this box.
    pub fn name(&self) -> String {
        format!("lb-xdp/bookworm-{}", &self.key[..12])
    }

    /// The image Vagrant unpacked from the box (`VAGRANT_HOME/boxes/NAME/0/libvirt/box.img`).
    pub fn vagrant_image(&self) -> PathBuf {
        let home = std::env::var_os("VAGRANT_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".vagrant.d")))
            .unwrap_or_else(|| PathBuf::from("/root/.vagrant.d"));
        home.join("boxes")
            .join(self.name().replace('/', "-VAGRANTSLASH-"))
            .join("0/libvirt/box.img")
    }

    /// Puts the box image into the dir pool at `pool_dir` under the volume name vagrant-libvirt
    /// looks for, so it finds it there instead of streaming it through libvirt (minutes for a
    /// 900 MB image from Ruby on a busy machine; a file copy takes seconds). Returns the name.
    pub fn seed_pool(&self, pool_dir: &Path) -> Result<String> {
        let image = self.vagrant_image();
        let meta = std::fs::metadata(&image)
            .map_err(|e| LabError::io(format!("reading {}", image.display()), e))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // vagrant-libvirt's name for version-less boxes (HandleBoxImage.get_volume_name).
        let volume = format!(
            "{}_vagrant_box_image_0_{mtime}_box.img",
            self.name().replace('/', "-VAGRANTSLASH-")
        );
        let dest = pool_dir.join(&volume);
        if !dest.exists() {
            exec::run(
                Command::new("cp")
                    .arg("--sparse=always")
                    .arg(&image)
                    .arg(&dest),
            )?;
        }
        Ok(volume)
    }

    /// Removes this box's name from Vagrant (after a rebuild, so the next
    /// [`BoxImage::ensure_added`] adds the new image). Absent is fine.
    pub fn forget(&self) -> Result<()> {
        let mut rm = Command::new("vagrant");
        rm.args(["box", "remove", "--force", "--all", &self.name()]);
        let out = exec::output(&mut rm, Duration::from_secs(120))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || stderr.contains("could not be found") {
            Ok(())
        } else {
            exec::check(&rm, &out)
        }
    }

    /// Adds the box to Vagrant (`vagrant box add`) unless it is there already.
    pub fn ensure_added(&self) -> Result<bool> {
        if !self.is_built() {
            return Err(LabError::Option {
                option: "box".into(),
                reason: format!(
                    "{} is not built: run `cargo xtask vagrant box`",
                    self.file().display()
                ),
            });
        }
        let list = exec::run(Command::new("vagrant").args(["box", "list", "--machine-readable"]))?;
        let name = self.name();
        let present = list.lines().any(|l| {
            let f: Vec<&str> = l.split(',').collect();
            f.get(2) == Some(&"box-name") && f.get(3) == Some(&name.as_str())
        });
        if present {
            return Ok(false);
        }
        let mut add = Command::new("vagrant");
        add.args(["box", "add", "--force", "--name", &name])
            .args(["--provider", "libvirt"])
            .arg(self.file());
        let out = exec::output(&mut add, Duration::from_secs(600))?;
        exec::check(&add, &out)?;
        Ok(true)
    }
}
