//! What is cached and under which Redis keys.

use std::fmt;

use app_redis::slot;

/// The kinds of records the cache holds (one today; the type keeps keys well-formed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entity {
    User,
}

impl Entity {
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::User => "user",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Entity::User),
            _ => None,
        }
    }
}

/// One cached record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub entity: Entity,
    pub id: i64,
}

impl Key {
    pub fn user(id: i64) -> Self {
        Self {
            entity: Entity::User,
            id,
        }
    }

    /// `user:42`, the form used in invalidation messages.
    pub fn parse(s: &str) -> Option<Self> {
        let (e, id) = s.split_once(':')?;
        Some(Self {
            entity: Entity::parse(e)?,
            id: id.parse().ok()?,
        })
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.entity.as_str(), self.id)
    }
}

/// Redis key names under the configured prefix, placed for Redis Cluster: the keys one
/// script touches share a hash tag (`{...}`), and the tags differ per record so records
/// spread over every master.
///
/// | key | what |
/// |---|---|
/// | `P:{user:42}` | L2 value of user 42 |
/// | `P:{user:42}:lock` | its rebuild lock (same slot as the value) |
/// | `P:{bloom:user}` | Bloom filter bitmap (one slot: one key) |
/// | `P:{bloom:user}:ready`, `P:{bloom:user}:rebuild` | completeness marker, rebuild lock (same slot as the bitmap: the rebuild scripts touch all three) |
/// | `P:invalidate` (channel) | L1 invalidations (single server, Sentinel) |
/// | `P:invalidate:{inv-I-N}` (channels) | L1 invalidations in a Cluster: `shards` sharded channels, tags spread over the slot range |
#[derive(Debug, Clone)]
pub struct KeySpace {
    prefix: String,
    channels: Vec<String>,
}

impl KeySpace {
    /// `sharded_channels`: `Some(n)` in a Cluster (sharded pub/sub over `n` channels).
    pub fn new(prefix: &str, channel: &str, sharded_channels: Option<u32>) -> Self {
        let channels = match sharded_channels {
            None => vec![format!("{prefix}:{channel}")],
            Some(n) => (0..n.max(1))
                .map(|i| format!("{prefix}:{channel}:{{{}}}", slot::spread_tag("inv", i, n)))
                .collect(),
        };
        Self {
            prefix: prefix.to_string(),
            channels,
        }
    }
    pub fn value(&self, k: &Key) -> String {
        format!("{}:{{{}}}", self.prefix, k)
    }
    pub fn lock(&self, k: &Key) -> String {
        format!("{}:{{{}}}:lock", self.prefix, k)
    }
    pub fn bloom_bits(&self, e: Entity) -> String {
        format!("{}:{{bloom:{}}}", self.prefix, e.as_str())
    }
    /// Present only when the filter holds every id (set at the end of a complete rebuild).
    pub fn bloom_ready(&self, e: Entity) -> String {
        format!("{}:ready", self.bloom_bits(e))
    }
    pub fn bloom_rebuild_lock(&self, e: Entity) -> String {
        format!("{}:rebuild", self.bloom_bits(e))
    }
    /// Every invalidation channel (a subscriber listens on all).
    pub fn channels(&self) -> &[String] {
        &self.channels
    }
    /// The channel that carries invalidations of `k`: in a Cluster the shard channel whose
    /// slot range holds `k`'s slot, usually on the same master as `k` itself.
    pub fn channel_for(&self, k: &Key) -> &str {
        let n = self.channels.len() as u32;
        let i = slot::slot_part(slot::key_slot(self.value(k).as_bytes()), n);
        &self.channels[i as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trip() {
        let k = Key::user(42);
        assert_eq!(k.to_string(), "user:42");
        assert_eq!(Key::parse("user:42"), Some(k));
        assert_eq!(Key::parse("order:1"), None);
        assert_eq!(Key::parse("user:x"), None);
        let ks = KeySpace::new("app", "invalidate", None);
        assert_eq!(ks.value(&k), "app:{user:42}");
        assert_eq!(ks.lock(&k), "app:{user:42}:lock");
        assert_eq!(ks.channels(), ["app:invalidate"]);
        assert_eq!(ks.channel_for(&k), "app:invalidate");
    }

    #[test]
    fn keys_of_one_script_share_a_slot() {
        use slot::key_slot;
        let ks = KeySpace::new("app", "invalidate", Some(16));
        let k = Key::user(42);
        assert_eq!(
            key_slot(ks.value(&k).as_bytes()),
            key_slot(ks.lock(&k).as_bytes())
        );
        let e = Entity::User;
        let bits = key_slot(ks.bloom_bits(e).as_bytes());
        assert_eq!(bits, key_slot(ks.bloom_ready(e).as_bytes()));
        assert_eq!(bits, key_slot(ks.bloom_rebuild_lock(e).as_bytes()));
        // Records spread: 1000 users use more than 900 distinct slots.
        let mut slots: Vec<u16> = (0..1000)
            .map(|id| key_slot(ks.value(&Key::user(id)).as_bytes()))
            .collect();
        slots.sort();
        slots.dedup();
        assert!(slots.len() > 900, "{}", slots.len());
    }

    #[test]
    fn sharded_channels_cover_the_slot_range() {
        use slot::{key_slot, slot_part};
        let ks = KeySpace::new("app", "invalidate", Some(16));
        assert_eq!(ks.channels().len(), 16);
        for (i, ch) in ks.channels().iter().enumerate() {
            assert!(ch.starts_with("app:invalidate:{inv-"), "{ch}");
            assert_eq!(slot_part(key_slot(ch.as_bytes()), 16), i as u32);
        }
        // A key's channel lies in the same sixteenth of the slots as the key.
        for id in 0..100 {
            let k = Key::user(id);
            assert_eq!(
                slot_part(key_slot(ks.channel_for(&k).as_bytes()), 16),
                slot_part(key_slot(ks.value(&k).as_bytes()), 16)
            );
        }
    }
}
