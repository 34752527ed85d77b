//! The process's log output: the subscriber `app serve` and `app worker` install, its writer
//! and its clock.
//!
//! Every request writes one access line (`http::middleware::track`), so the per-line costs
//! are per-request costs:
//! - lines are appended to a buffer that a thread of its own writes out every
//!   [`FLUSH_EVERY`] or when it holds [`FLUSH_AT`] bytes, as nginx's `access_log ...
//!   buffer= flush=`: a copy under an uncontended lock per line instead of a `write` (and a
//!   wake-up of a writer thread) per line. A logging thread waits while the buffer holds
//!   [`MAX_BUFFERED`] bytes: no line is dropped;
//! - the timestamp's date and time of day are formatted once a second, as nginx caches its
//!   time strings.

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// The longest a line waits in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A buffer this full is written at once.
pub const FLUSH_AT: usize = 64 * 1024;
/// A buffer this full makes logging threads wait for the writer.
pub const MAX_BUFFERED: usize = 1024 * 1024;

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the subscriber: levels from `APP_LOG` (or `RUST_LOG`; `info` by default, e.g.
/// `APP_LOG=info,app::access=warn` drops the access lines), lines to stdout through a
/// [`LogBuffer`]. The guard writes what is left when it is dropped, at exit.
#[must_use = "lines logged after the guard is dropped are lost"]
pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_env("APP_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (buffer, guard) = LogBuffer::spawn(std::io::stdout());
    // Colour codes only on a terminal: in a log file they are bytes to write and to strip.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(buffer)
        .with_timer(CachedTime)
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    guard
}

/// Lines waiting for the writer thread. `&LogBuffer` is the subscriber's writer (one
/// `write_all` per line).
pub struct LogBuffer {
    state: Mutex<Pending>,
    /// Signals both ways: the writer thread that there is work, logging threads that there
    /// is room.
    changed: Condvar,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    closed: bool,
}

impl LogBuffer {
    /// A buffer and its writer thread, which writes into `out` until the guard is dropped.
    pub fn spawn<W: Write + Send + 'static>(out: W) -> (Arc<LogBuffer>, LogGuard) {
        let buffer = Arc::new(LogBuffer {
            state: Mutex::new(Pending::default()),
            changed: Condvar::new(),
        });
        let b = buffer.clone();
        let writer = std::thread::Builder::new()
            .name("app-log".into())
            .spawn(move || b.write_out(out))
            .map_err(|e| eprintln!("app: no log writer thread ({e}); logs go unbuffered"))
            .ok();
        if writer.is_none() {
            buffer.lock().closed = true;
        }
        let guard = LogGuard {
            buffer: buffer.clone(),
            writer,
        };
        (buffer, guard)
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A thread that panicked while appending left whole lines or none: carry on.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer thread: every [`FLUSH_EVERY`], or as soon as [`FLUSH_AT`] bytes wait, takes
    /// the buffer and writes it; after the close, writes the rest and ends.
    fn write_out<W: Write>(&self, mut out: W) {
        // Two buffers swapped, kept at their size: no allocation per flush, and no growth of
        // a fresh buffer line by line (large allocations made glibc consolidate its bins).
        let mut bytes = Vec::with_capacity(2 * FLUSH_AT);
        self.lock().bytes.reserve(2 * FLUSH_AT);
        loop {
            let mut p = self.lock();
            if p.bytes.len() < FLUSH_AT && !p.closed {
                p = self
                    .changed
                    .wait_timeout(p, FLUSH_EVERY)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            bytes.clear();
            std::mem::swap(&mut bytes, &mut p.bytes);
            let closed = p.closed;
            drop(p);
            self.changed.notify_all();
            if !bytes.is_empty() {
                // Nowhere to report a failed write of the log but stderr.
                if let Err(e) = out.write_all(&bytes).and_then(|()| out.flush()) {
                    eprintln!("app: writing the log failed: {e}");
                }
            }
            if closed {
                return;
            }
        }
    }
}

impl Write for &LogBuffer {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut p = self.lock();
        loop {
            if p.closed {
                // No writer thread left (after the guard, also when the close came while this
                // thread waited for room): write directly, or the line would be lost.
                drop(p);
                return std::io::stdout().write(line);
            }
            if p.bytes.len() < MAX_BUFFERED {
                break;
            }
            p = self.changed.wait(p).unwrap_or_else(PoisonError::into_inner);
        }
        let was_below = p.bytes.len() < FLUSH_AT;
        p.bytes.extend_from_slice(line);
        if was_below && p.bytes.len() >= FLUSH_AT {
            self.changed.notify_all();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Ends the writer thread after it wrote every buffered line.
pub struct LogGuard {
    buffer: Arc<LogBuffer>,
    writer: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.buffer.lock().closed = true;
        self.buffer.changed.notify_all();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// RFC 3339 UTC with microseconds (`2026-12-07T18:13:51.318241Z`, the format of
/// tracing-subscriber's default clock), its first 19 characters kept per thread and
/// rebuilt when the second changes.
#[derive(Debug, Clone, Copy, Default)]
pub struct CachedTime;

thread_local! {
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

impl FormatTime for CachedTime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        SECOND.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.0 != now.as_secs() {
                *cell = (now.as_secs(), date_time(now.as_secs()));
            }
            write!(w, "{}.{:06}Z", cell.1, now.subsec_micros())
        })
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time.
fn date_time(unix_s: u64) -> String {
    let days = i64::try_from(unix_s / 86_400).unwrap_or(i64::MAX / 2);
    let (y, m, d) = civil_from_days(days);
    let s = unix_s % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` that keeps what it got.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_in_order_from_many_threads() {
        let sink = Sink::default();
        let (buffer, guard) = LogBuffer::spawn(sink.clone());
        // More than MAX_BUFFERED in all, so writers also wait for room.
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let buffer = buffer.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        let line = format!("thread {t} line {i:06} {}\n", "x".repeat(20));
                        (&*buffer).write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let got = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let mut next = [0usize; 4];
        for line in got.lines() {
            let mut w = line.split(' ');
            let t: usize = w.nth(1).unwrap().parse().unwrap();
            let i: usize = w.nth(1).unwrap().parse().unwrap();
            assert_eq!(i, next[t], "thread {t}'s lines out of order or lost");
            next[t] += 1;
        }
        assert_eq!(next, [20_000; 4]);
    }

    #[test]
    fn dates_across_leap_years_and_centuries() {
        assert_eq!(date_time(0), "1970-01-01T00:00:00");
        assert_eq!(date_time(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(date_time(4_107_542_400), "2100-03-01T00:00:00");
        assert_eq!(date_time(1_796_666_031), "2026-12-07T17:53:51");
        assert_eq!(date_time(253_402_300_799), "9999-12-31T23:59:59");
    }

    #[test]
    fn matches_the_default_clock_to_the_second() {
        // The default clock and ours read the time apart; retry across a second boundary.
        for _ in 0..3 {
            let (mut ours, mut theirs) = (String::new(), String::new());
            tracing_subscriber::fmt::time::SystemTime
                .format_time(&mut Writer::new(&mut theirs))
                .unwrap();
            CachedTime.format_time(&mut Writer::new(&mut ours)).unwrap();
            assert_eq!(ours.len(), theirs.len(), "{ours} vs {theirs}");
            assert!(ours.ends_with('Z'));
            if ours[..19] == theirs[..19] {
                return;
            }
        }
        panic!("our clock never agreed with tracing-subscriber's to the second");
    }
}
