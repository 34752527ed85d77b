//! What is cached and under which Redis keys.

use std::fmt;

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

/// Redis key names under the configured prefix.
#[derive(Debug, Clone)]
pub struct KeySpace {
    prefix: String,
    channel: String,
}

impl KeySpace {
    pub fn new(prefix: &str, channel: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            channel: format!("{prefix}:{channel}"),
        }
    }
    pub fn value(&self, k: &Key) -> String {
        format!("{}:{}", self.prefix, k)
    }
    pub fn lock(&self, k: &Key) -> String {
        format!("{}:lock:{}", self.prefix, k)
    }
    pub fn bloom_bits(&self, e: Entity) -> String {
        format!("{}:bloom:{}", self.prefix, e.as_str())
    }
    /// Present only when the filter holds every id (set at the end of a complete rebuild).
    pub fn bloom_ready(&self, e: Entity) -> String {
        format!("{}:bloom:{}:ready", self.prefix, e.as_str())
    }
    pub fn bloom_rebuild_lock(&self, e: Entity) -> String {
        format!("{}:bloom:{}:rebuild", self.prefix, e.as_str())
    }
    pub fn channel(&self) -> &str {
        &self.channel
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
        let ks = KeySpace::new("app", "invalidate");
        assert_eq!(ks.value(&k), "app:user:42");
        assert_eq!(ks.lock(&k), "app:lock:user:42");
        assert_eq!(ks.channel(), "app:invalidate");
    }
}
