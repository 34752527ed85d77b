//! The one error type of the lab helper.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::topology::TopologyError;

/// Anything that can go wrong while building, using or tearing down a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Namespaces, veths and mounts need root.
    #[error("the lab needs root (effective uid is {euid}): run the tests as root")]
    NotRoot {
        /// The effective uid we run as.
        euid: u32,
    },
    /// A required program is not on `PATH`.
    #[error("`{tool}` is missing (apt-get install {package})")]
    MissingTool {
        /// The program.
        tool: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// A command could not be started at all.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why it could not start.
        #[source]
        source: io::Error,
    },
    /// A command ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status as text.
        status: String,
        /// What it wrote to stderr (trimmed).
        stderr: String,
    },
    /// A command or a wait did not finish in time.
    #[error("`{command}` did not finish within {timeout:?}{detail}")]
    Timeout {
        /// The command line or the condition waited for.
        command: String,
        /// The bound.
        timeout: Duration,
        /// Extra context (e.g. the tail of a log), starting with a separator, or empty.
        detail: String,
    },
    /// A spawned process exited while we waited for it to become ready.
    #[error("`{name}` exited ({status}) while waiting for it; log {}:\n{log_tail}", log.display())]
    Exited {
        /// The process's name.
        name: String,
        /// Exit status as text.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of the log.
        log_tail: String,
    },
    /// The lab has no host by that name.
    #[error("no host named `{name}` in this lab (hosts: {known})")]
    UnknownHost {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: String,
    },
    /// A command printed something we could not understand.
    #[error("unexpected output from `{command}`: {reason}")]
    Parse {
        /// The command line.
        command: String,
        /// What was wrong.
        reason: String,
    },
    /// A file-system or system-call operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A lab option is invalid (names the option).
    #[error("{option}: {reason}")]
    Option {
        /// The option, e.g. `mtu(be1)`.
        option: String,
        /// What is wrong.
        reason: String,
    },
    /// The topology was rejected.
    #[error(transparent)]
    Topology(#[from] TopologyError),
}

impl LabError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result with [`LabError`].
pub type Result<T, E = LabError> = std::result::Result<T, E>;
