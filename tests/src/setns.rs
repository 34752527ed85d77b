//! Running Rust code inside a network namespace.
//!
//! A socket belongs to the namespace of the thread that created it, for its whole life. So the
//! pattern is: create the socket inside [`in_netns`], then use it from any thread:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::net::{TcpListener, TcpStream};
//! let listener = tests::setns::in_netns("lbt1x0-be1", || TcpListener::bind("[::]:8080"))??;
//! let stream = tests::setns::in_netns("lbt1x0-client", || TcpStream::connect("10.77.0.11:8080"))??;
//! # Ok(()) }
//! ```
//! (`??`: the outer error is entering the namespace, the inner one the closure's own result.)
//! For async code, build the std socket this way and hand it to `tokio::net::*::from_std`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::error::{LabError, Result};

/// Where `ip netns` keeps its named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

fn open_ns(ns: &str) -> Result<File> {
    let path = PathBuf::from(NETNS_DIR).join(ns);
    File::open(&path)
        .map_err(|e| LabError::io(format!("opening network namespace {}", path.display()), e))
}

fn enter(ns: &str, file: &File) -> Result<()> {
    // SAFETY: setns on a valid namespace fd; it only changes this (fresh) thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(LabError::io(
            format!("setns(CLONE_NEWNET) into `{ns}`"),
            std::io::Error::last_os_error(),
        ))
    }
}

/// Runs `f` on a new thread that has entered network namespace `ns` (a name under
/// `/run/netns`) and returns its result. The calling thread stays where it is. `f` may borrow
/// from the caller. A panic inside `f` is resumed in the caller (so assertions inside work).
pub fn in_netns<F, R>(ns: &str, f: F) -> Result<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let file = open_ns(ns)?;
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name(format!("netns:{ns}"))
            .spawn_scoped(s, move || -> Result<R> {
                enter(ns, &file)?;
                drop(file);
                Ok(f())
            })
            .map_err(|e| LabError::io("spawning a thread", e))?;
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Starts a background thread that enters network namespace `ns` and then runs `f` (e.g. a
/// small server loop). Returns once the thread is inside the namespace, or the error of
/// entering it. Keep loops bounded: the thread is not cancelled when the handle is dropped.
pub fn spawn_in_netns<F, R>(ns: &str, f: F) -> Result<JoinHandle<R>>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let file = open_ns(ns)?;
    let (tx, rx) = mpsc::channel::<Result<()>>();
    let ns_name = ns.to_string();
    let handle = std::thread::Builder::new()
        .name(format!("netns:{ns}"))
        .spawn(move || {
            let entered = enter(&ns_name, &file);
            drop(file);
            let ok = entered.is_ok();
            let _ = tx.send(entered);
            if !ok {
                // The caller gets the error from the channel; this thread has nothing to run.
                std::panic::resume_unwind(Box::new("setns failed"));
            }
            f()
        })
        .map_err(|e| LabError::io("spawning a thread", e))?;
    match rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(LabError::io(
            format!("entering `{ns}`"),
            std::io::Error::other("the namespace thread ended early"),
        )),
    }
}
