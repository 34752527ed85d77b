//! The L2 value format: `<fresh-until ms>|<json>`; an empty payload caches "not found".
//!
//! The Redis TTL is longer than the logical one: between the two the value is stale, and
//! instances that lose the rebuild race serve it instead of waiting or hitting the database.

use axum::body::Bytes;

/// A cached answer: the record's JSON, or "there is no such record".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    Found(Bytes),
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub fresh_until_ms: i64,
    pub value: Cached,
}

impl Envelope {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("{}|", self.fresh_until_ms).into_bytes();
        if let Cached::Found(b) = &self.value {
            out.extend_from_slice(b);
        }
        out
    }

    /// `None` for bytes that are not an envelope (treated as a miss, then overwritten). The
    /// value shares `raw`'s allocation: an L2 hit copies nothing.
    pub fn decode(raw: impl Into<Bytes>) -> Option<Self> {
        let raw: Bytes = raw.into();
        let bar = raw.iter().position(|&b| b == b'|')?;
        let fresh_until_ms = std::str::from_utf8(&raw[..bar]).ok()?.parse().ok()?;
        let value = if bar + 1 == raw.len() {
            Cached::Missing
        } else {
            Cached::Found(raw.slice(bar + 1..))
        };
        Some(Self {
            fresh_until_ms,
            value,
        })
    }

    pub fn is_fresh(&self, now_ms: i64) -> bool {
        now_ms < self.fresh_until_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let e = Envelope {
            fresh_until_ms: 123,
            value: Cached::Found(Bytes::from_static(b"{\"a\":1}")),
        };
        assert_eq!(Envelope::decode(e.encode()), Some(e));
        let n = Envelope {
            fresh_until_ms: 5,
            value: Cached::Missing,
        };
        assert_eq!(Envelope::decode(n.encode()), Some(n.clone()));
        assert!(n.is_fresh(4) && !n.is_fresh(5));
        assert_eq!(Envelope::decode(&b"garbage"[..]), None);
        assert_eq!(
            Envelope::decode(&b"12|"[..]).map(|e| e.value),
            Some(Cached::Missing)
        );
    }
}
