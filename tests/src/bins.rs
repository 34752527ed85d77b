//! The workspace's own programs (`lbd`, `lbctl`, `app`...) for tests of another package,
//! where cargo's `CARGO_BIN_EXE_<name>` is not set: they sit next to the test binary's
//! `deps/` folder, in the profile folder cargo built them into.

use std::path::PathBuf;

/// The path of workspace binary `name` in the profile folder of the running test binary.
///
/// Panics with the command to build it when it is missing: a test that needs it cannot run.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's own path");
    // target/<profile>/deps/<test>-<hash>  ->  target/<profile>/<name>
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binaries live in target/<profile>/deps");
    let path = profile.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first (`cargo build -p {name}`, or run the tests through \
         `cargo xtask test`, which does)",
        path.display()
    );
    path
}
