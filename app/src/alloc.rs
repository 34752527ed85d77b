//! The memory allocator of the `app` binary, chosen at start by `APP_ALLOCATOR`
//! (`system`, `jemalloc` or `mimalloc`; default [`Allocator::DEFAULT`]).
//!
//! One binary carries all three so that an operator can switch without a rebuild and the
//! benchmark compares them on the same build (`cargo xtask bench app -- --allocators
//! system,jemalloc,mimalloc`; the numbers behind the default are in app/README.md).
//!
//! The choice is made at the first allocation, before `main`, and never changes: every
//! block is freed by the allocator that made it. The variable is read with `getenv`, which
//! does not allocate; `main` checks it again with [`Allocator::from_env`] and refuses a
//! value it does not know (the process has by then run on the default).

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

use mimalloc::MiMalloc;
use tikv_jemallocator::Jemalloc;

/// The variable that picks the allocator.
pub const ENV: &str = "APP_ALLOCATOR";

/// An allocator the binary can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Allocator {
    /// glibc's malloc.
    System,
    /// jemalloc (tikv-jemallocator).
    Jemalloc,
    /// Microsoft's mimalloc.
    Mimalloc,
}

impl Allocator {
    /// The allocator used when `APP_ALLOCATOR` is not set.
    pub const DEFAULT: Allocator = Allocator::Jemalloc;
    pub const ALL: [Allocator; 3] = [Allocator::System, Allocator::Jemalloc, Allocator::Mimalloc];

    pub fn as_str(self) -> &'static str {
        match self {
            Allocator::System => "system",
            Allocator::Jemalloc => "jemalloc",
            Allocator::Mimalloc => "mimalloc",
        }
    }

    fn parse(b: &[u8]) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str().as_bytes() == b)
    }

    /// The allocator `APP_ALLOCATOR` names (the default when unset or empty), or the reason
    /// it names none.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var(ENV) {
            Err(std::env::VarError::NotPresent) => Ok(Self::DEFAULT),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!("{ENV}: not valid UTF-8")),
            Ok(v) if v.is_empty() => Ok(Self::DEFAULT),
            Ok(v) => v.parse(),
        }
    }

    /// The allocator this process runs on: `None` unless [`Selectable`] is the global
    /// allocator (it decides at its first allocation).
    pub fn current() -> Option<Self> {
        match CHOICE.load(Ordering::Relaxed) {
            UNSET => None,
            v => Some(decode(v)),
        }
    }
}

impl std::str::FromStr for Allocator {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s.as_bytes())
            .ok_or_else(|| format!("{ENV}: unknown allocator {s:?} (system, jemalloc or mimalloc)"))
    }
}

impl fmt::Display for Allocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const UNSET: u8 = u8::MAX;
static CHOICE: AtomicU8 = AtomicU8::new(UNSET);

fn encode(a: Allocator) -> u8 {
    a as u8
}

fn decode(v: u8) -> Allocator {
    match v {
        1 => Allocator::Jemalloc,
        2 => Allocator::Mimalloc,
        _ => Allocator::System,
    }
}

/// The choice, read from the environment once. Two threads racing on the very first
/// allocation read the same variable and store the same value.
#[inline]
fn choice() -> u8 {
    let c = CHOICE.load(Ordering::Relaxed);
    if c != UNSET {
        return c;
    }
    // SAFETY: a NUL-terminated name; getenv neither allocates nor keeps the pointer, and
    // the returned string is read at once, before anything could call setenv.
    let picked = unsafe {
        let p = libc::getenv(c"APP_ALLOCATOR".as_ptr());
        if p.is_null() {
            Allocator::DEFAULT
        } else {
            Allocator::parse(std::ffi::CStr::from_ptr(p).to_bytes()).unwrap_or(Allocator::DEFAULT)
        }
    };
    let v = encode(picked);
    CHOICE.store(v, Ordering::Relaxed);
    v
}

/// The global allocator of the `app` binary: forwards to the one `APP_ALLOCATOR` chose.
pub struct Selectable;

// SAFETY: every call forwards to one allocator, the same for the life of the process, so a
// block is always reallocated and freed by the allocator that made it.
unsafe impl GlobalAlloc for Selectable {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe {
            match choice() {
                1 => Jemalloc.alloc(layout),
                2 => MiMalloc.alloc(layout),
                _ => System.alloc(layout),
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe {
            match choice() {
                1 => Jemalloc.alloc_zeroed(layout),
                2 => MiMalloc.alloc_zeroed(layout),
                _ => System.alloc_zeroed(layout),
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from the same allocator (the choice never changes).
        unsafe {
            match choice() {
                1 => Jemalloc.dealloc(ptr, layout),
                2 => MiMalloc.dealloc(ptr, layout),
                _ => System.dealloc(ptr, layout),
            }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from the same allocator (the choice never changes).
        unsafe {
            match choice() {
                1 => Jemalloc.realloc(ptr, layout, new_size),
                2 => MiMalloc.realloc(ptr, layout, new_size),
                _ => System.realloc(ptr, layout, new_size),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Allocator::ALL {
            assert_eq!(a.as_str().parse::<Allocator>(), Ok(a));
            assert_eq!(decode(encode(a)), a);
        }
        let e = "tcmalloc".parse::<Allocator>().unwrap_err();
        assert!(e.contains("APP_ALLOCATOR") && e.contains("tcmalloc"), "{e}");
    }

    /// Each allocator hands out usable, aligned memory through the selector's paths.
    #[test]
    fn every_allocator_allocates() {
        let layout = Layout::from_size_align(100, 64).unwrap();
        unsafe {
            for (name, a) in [
                ("system", &System as &dyn GlobalAlloc),
                ("jemalloc", &Jemalloc),
                ("mimalloc", &MiMalloc),
            ] {
                let p = a.alloc_zeroed(layout);
                assert!(!p.is_null() && (p as usize).is_multiple_of(64), "{name}");
                assert!(std::slice::from_raw_parts(p, 100).iter().all(|b| *b == 0));
                let q = a.realloc(p, layout, 4000);
                assert!(!q.is_null(), "{name}");
                a.dealloc(q, Layout::from_size_align(4000, 64).unwrap());
            }
        }
    }
}
