//! Names of the Redis keys the queue uses, and the partitions they are grouped in. One place,
//! so scripts and readers agree.
//!
//! Each queue is split over `queue.partitions` partitions. A partition is a Redis Cluster
//! hash tag `{t}`: every key of one partition carries it, so a script that touches a job,
//! its stream, its schedule and its dead letters stays in one hash slot, while the
//! partitions' tags are chosen in equal slot ranges and so spread over the masters
//! ([`app_redis::slot::spread_tag`]). The tags depend only on the partition count, not on
//! the queue: partition `t` of every queue shares one slot, so a job and the job it triggers
//! on another queue (a task's callback notification) are created in one script.
//!
//! `{p}` is the configured prefix, `{t}` a partition's tag:
//! - `{p}:job:{t}:{id}`          hash: the job record (state, attempts, payload, history, ...);
//!   a job id starts with its partition's tag (`t.uuid`), so the key follows from the id
//! - `{p}:stream:{t}:{queue}`    stream: jobs ready to run (entries hold only the job id)
//! - `{p}:delayed:{t}:{queue}`   sorted set: job id -> due time (ms); delayed jobs and retries
//! - `{p}:dlq:{t}:{queue}`       stream: dead letters (job id, last error, attempt history)
//! - `{p}:idem:{t}:{queue}:{k}`  string: idempotency key -> first job id (`t` from the key)
//! - `{p}:running:{t}:{queue}`   set (RabbitMQ backend): ids of the partition's jobs in state
//!   `running`, changed by the same scripts that change the state (`stats().pending`)
//! - `{p}:outbox:{t}`            sorted set (RabbitMQ backend): jobs whose publish is not
//!   confirmed yet
//! - `{p}:rate:{queue}`          hash: the queue's current one-second window and how many jobs
//!   started in it (tagged by the queue: one slot per queue whatever the partition)
//! - `{p}:alive:{consumer}`      string (RabbitMQ backend): a pool's liveness

use app_redis::slot;

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    /// Partition `i`'s hash tag (without braces).
    tags: Vec<String>,
}

/// Where a job is kept: its partition's index and tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition<'a> {
    pub index: usize,
    pub tag: &'a str,
}

impl Keys {
    /// Keys under `prefix` with `partitions` partitions (at least one).
    pub fn new(prefix: &str, partitions: u32) -> Self {
        Self {
            prefix: prefix.to_string(),
            tags: tags_of_count(partitions),
        }
    }

    /// The partition counts every producer and pool of this prefix has used (a set): pools
    /// read the partitions of all of them, so a changed `queue.partitions` leaves no job in a
    /// partition nobody reads.
    pub fn partition_counts(&self) -> String {
        format!("{}:partition-counts", self.prefix)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every partition, in index order.
    pub fn partitions(&self) -> impl ExactSizeIterator<Item = Partition<'_>> + Clone {
        self.tags
            .iter()
            .enumerate()
            .map(|(index, tag)| Partition { index, tag })
    }

    pub fn partition(&self, index: usize) -> Partition<'_> {
        let index = index % self.tags.len();
        Partition {
            index,
            tag: &self.tags[index],
        }
    }

    /// The partition a routing key (ordering or idempotency key) always lands in.
    pub fn partition_of_key(&self, key: &str) -> Partition<'_> {
        self.partition(usize::from(slot::key_slot(key.as_bytes())))
    }

    /// A new job id in partition `p`: its tag, a dot, a random part.
    pub fn new_job_id(&self, p: Partition<'_>) -> String {
        format!("{}.{}", p.tag, uuid::Uuid::new_v4().simple())
    }

    /// The job hash prefix of partition `tag`; scripts append the job id.
    pub fn job_prefix(&self, tag: &str) -> String {
        format!("{}:job:{{{tag}}}:", self.prefix)
    }

    /// The job hash of `id`. An id that is not ours (no tag) names a key that never exists.
    pub fn job(&self, id: &str) -> String {
        match job_tag(id) {
            Some(tag) => format!("{}{id}", self.job_prefix(tag)),
            None => format!("{}:job:-:{id}", self.prefix),
        }
    }

    /// The job hash of `id` in partition `tag`, for ids read from that partition's own keys
    /// (a stray id of another partition then names a key that never exists, instead of a
    /// key in another hash slot that a script could not declare).
    pub fn job_in(&self, tag: &str, id: &str) -> String {
        format!("{}{id}", self.job_prefix(tag))
    }

    pub fn stream(&self, tag: &str, queue: &str) -> String {
        format!("{}:stream:{{{tag}}}:{queue}", self.prefix)
    }

    /// What scripts append a queue name to, for the stream of that queue in partition `tag`.
    pub fn stream_prefix(&self, tag: &str) -> String {
        format!("{}:stream:{{{tag}}}:", self.prefix)
    }

    pub fn delayed(&self, tag: &str, queue: &str) -> String {
        format!("{}:delayed:{{{tag}}}:{queue}", self.prefix)
    }

    pub fn dlq(&self, tag: &str, queue: &str) -> String {
        format!("{}:dlq:{{{tag}}}:{queue}", self.prefix)
    }

    /// Ids of the partition's running jobs (RabbitMQ backend; Redis Streams reads XPENDING).
    pub fn running(&self, tag: &str, queue: &str) -> String {
        format!("{}:running:{{{tag}}}:{queue}", self.prefix)
    }

    /// Jobs of partition `tag` whose publish is not confirmed yet (RabbitMQ backend).
    pub fn outbox(&self, tag: &str) -> String {
        format!("{}:outbox:{{{tag}}}", self.prefix)
    }

    pub fn idempotency(&self, tag: &str, queue: &str, key: &str) -> String {
        format!("{}:idem:{{{tag}}}:{queue}:{key}", self.prefix)
    }

    /// The queue's rate-limit window (a hash: window second, count).
    pub fn rate(&self, queue: &str) -> String {
        format!("{}:rate:{{{queue}}}", self.prefix)
    }

    /// A pool's liveness key (RabbitMQ backend).
    pub fn alive(&self, consumer: &str) -> String {
        format!("{}:alive:{consumer}", self.prefix)
    }

    /// Prefix for handler-owned keys (effect fences and the like). A handler whose script
    /// touches several keys tags them alike (`{p}:name:{tag}:...`).
    pub fn scoped(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }
}

/// The tags of the partitions of a queue split `count` ways (partition `i` in the `i`-th of
/// `count` equal slot ranges).
pub fn tags_of_count(count: u32) -> Vec<String> {
    let n = count.max(1);
    (0..n).map(|i| slot::spread_tag("p", i, n)).collect()
}

/// The tags of every partition of the given counts, those of `first` first, without repeats.
pub fn tags_of_counts(first: u32, others: impl IntoIterator<Item = u32>) -> Vec<String> {
    let mut counts: Vec<u32> = others.into_iter().filter(|&c| c != first).collect();
    counts.sort_unstable();
    counts.dedup();
    let mut tags = Vec::new();
    for c in std::iter::once(first).chain(counts) {
        for t in tags_of_count(c) {
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
    }
    tags
}

/// The partition tag a job id starts with, if it is a well-formed id of ours.
pub fn job_tag(id: &str) -> Option<&str> {
    let (tag, rest) = id.split_once('.')?;
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    };
    (id.len() <= 128 && plain(tag) && plain(rest)).then_some(tag)
}

/// Queue names become parts of Redis keys and URL paths: keep them plain.
pub fn validate_queue_name(name: &str) -> Result<(), String> {
    let ok_len = (1..=64).contains(&name.len());
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok_len && ok_chars {
        Ok(())
    } else {
        Err(format!(
            "queue name {name:?} must be 1-64 characters of [A-Za-z0-9._-]"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let k = Keys::new("q", 1);
        let p = k.partition(0);
        let id = k.new_job_id(p);
        assert_eq!(job_tag(&id), Some(p.tag));
        assert_eq!(k.job(&id), format!("q:job:{{{}}}:{id}", p.tag));
        assert_eq!(
            k.stream(p.tag, "tasks"),
            format!("q:stream:{{{}}}:tasks", p.tag)
        );
        assert_eq!(k.rate("tasks"), "q:rate:{tasks}");
        assert_eq!(k.job("nonsense"), "q:job:-:nonsense");
        assert!(validate_queue_name("tasks").is_ok());
        assert!(validate_queue_name("").is_err());
        assert!(validate_queue_name("a b").is_err());
        assert!(validate_queue_name("a:b").is_err());
    }

    /// Every key a script of one partition touches is in that partition's slot, and a
    /// notification job (`id.n0`) stays there too.
    #[test]
    fn one_slot_per_partition() {
        let k = Keys::new("q", 5);
        for p in k.partitions() {
            let id = k.new_job_id(p);
            let slot = slot::key_slot(k.job(&id).as_bytes());
            for key in [
                k.job(&format!("{id}.n0")),
                k.stream(p.tag, "tasks"),
                k.stream(p.tag, "callbacks"),
                k.delayed(p.tag, "tasks"),
                k.dlq(p.tag, "tasks"),
                k.running(p.tag, "tasks"),
                k.outbox(p.tag),
                k.idempotency(p.tag, "tasks", "x{y}"),
            ] {
                assert_eq!(slot::key_slot(key.as_bytes()), slot, "{key}");
            }
        }
        // The same routing key always picks the same partition.
        assert_eq!(k.partition_of_key("order-1"), k.partition_of_key("order-1"));
    }

    #[test]
    fn partitions_spread_over_slot_ranges() {
        let k = Keys::new("q", 3);
        let parts: Vec<u32> = k
            .partitions()
            .map(|p| slot::slot_part(slot::key_slot(p.tag.as_bytes()), 3))
            .collect();
        assert_eq!(parts, [0, 1, 2]);
    }

    #[test]
    fn tags_of_several_counts() {
        let t = tags_of_counts(3, [4, 3, 1]);
        assert_eq!(&t[..3], tags_of_count(3).as_slice());
        for x in tags_of_count(4).iter().chain(&tags_of_count(1)) {
            assert!(t.contains(x), "{x}");
        }
        let mut d = t.clone();
        d.dedup();
        assert_eq!(d.len(), t.len());
    }

    #[test]
    fn job_ids() {
        assert_eq!(job_tag("p-0-0.abc"), Some("p-0-0"));
        assert_eq!(job_tag("p-0-0.abc.n1"), Some("p-0-0"));
        assert_eq!(job_tag("abc"), None);
        assert_eq!(job_tag(".abc"), None);
        assert_eq!(job_tag("a.{b}"), None);
        assert_eq!(job_tag("a. b"), None);
    }
}
