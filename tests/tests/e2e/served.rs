//! Which backend answered which request. `app` logs one access line per response with the
//! request's `x-request-id`; every request of these tests carries a unique id, so the three
//! backends' logs name the backend of each request without any change to the app and without
//! trusting the balancer's own counters. The app writes its lines out every 100 ms
//! (`app::logs::FLUSH_EVERY`), so a scan right after a request may not see it yet:
//! [`Ledger::scan_for`] waits for the ids a test is about to look up.

use std::collections::HashMap;

use anyhow::{Context, Result};
use tests::System;

/// Request id -> backend host name, accumulated over scans (a restarted app truncates its log,
/// so scan before restarting one).
#[derive(Debug, Default)]
pub struct Ledger {
    by_id: HashMap<String, String>,
}

impl Ledger {
    /// Reads every backend's `app.log` again and records the ids found there.
    pub fn scan(&mut self, system: &System) -> Result<()> {
        for be in system.backends() {
            let path = system.host_dir(&be).join("app.log");
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let text = strip_ansi(&String::from_utf8_lossy(&bytes));
            for id in text.lines().filter_map(request_id) {
                self.by_id
                    .entry(id.to_string())
                    .or_insert_with(|| be.clone());
            }
        }
        Ok(())
    }

    /// Scans until every one of `ids` is in some backend's log, at most 5 s (the app writes a
    /// line within 100 ms of the answer); the caller then checks what it found.
    pub fn scan_for<'a>(
        &mut self,
        system: &System,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<()> {
        let ids: Vec<&str> = ids.into_iter().collect();
        for _ in 0..50 {
            self.scan(system)?;
            if ids.iter().all(|id| self.by_id.contains_key(*id)) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Ok(())
    }

    /// The backend that answered request `id`, if its log shows it.
    pub fn backend(&self, id: &str) -> Option<&str> {
        self.by_id.get(id).map(String::as_str)
    }

    /// Ids of the requests backend `be` answered.
    pub fn ids_of<'a>(&'a self, be: &'a str) -> impl Iterator<Item = &'a str> {
        self.by_id
            .iter()
            .filter(move |(_, b)| *b == be)
            .map(|(id, _)| id.as_str())
    }

    /// Scans until request `id` shows up in a log (the line is written when the answer is
    /// sent, so a short bounded wait covers the write).
    pub fn wait_for(&mut self, system: &System, id: &str) -> Result<String> {
        for _ in 0..50 {
            self.scan(system)?;
            if let Some(be) = self.backend(id) {
                return Ok(be.to_string());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        anyhow::bail!("request {id} is in no backend's app.log after 5 s")
    }
}

/// The `request_id=` field of a log line (`-` when the request carried none).
fn request_id(line: &str) -> Option<&str> {
    let rest = &line[line.find("request_id=")? + "request_id=".len()..];
    let end = rest
        .find(|c: char| c == '}' || c == ',' || c.is_whitespace())
        .unwrap_or(rest.len());
    let id = &rest[..end];
    (!id.is_empty() && id != "-").then_some(id)
}

/// Removes terminal colour codes (`ESC [ ... letter`) that the log may contain.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn finds_the_id_with_and_without_colours() {
        let plain = "INFO http{method=GET uri=/ping request_id=s1-7}: tower_http: finished";
        assert_eq!(request_id(plain), Some("s1-7"));
        let coloured = "\u{1b}[3mrequest_id\u{1b}[0m\u{1b}[2m=\u{1b}[0ms1-8\u{1b}[2m}";
        assert_eq!(request_id(&strip_ansi(coloured)), Some("s1-8"));
        assert_eq!(request_id("request_id=- x"), None);
        assert_eq!(request_id("no id here"), None);
    }
}
