//! `redis.url`: which Redis the app uses, in one of three modes.
//!
//! ```text
//! redis://[[user]:password@]host[:port][/db]                          one server (rediss:// is TLS)
//! redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/master[/db]
//!                  [?sentinel_username=U&sentinel_password=P]         a Sentinel set
//! redis+cluster://[[user]:password@]host[:port][,host[:port]...]      a Redis Cluster (seed nodes)
//! ```
//!
//! Sentinel hosts default to port 26379, the others to 6379. The user and password are
//! those of the data nodes (master and replicas, or every cluster node); sentinels that
//! require their own credentials get them from the query. IPv6 hosts are written in
//! brackets (`[::1]:7000`).

use std::fmt;

use redis::IntoConnectionInfo;

/// How the app reaches Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode {
    Single,
    Sentinel,
    Cluster,
}

impl RedisMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RedisMode::Single => "single",
            RedisMode::Sentinel => "sentinel",
            RedisMode::Cluster => "cluster",
        }
    }
}

impl fmt::Display for RedisMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why `redis.url` is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TargetError(String);

fn err(msg: impl Into<String>) -> TargetError {
    TargetError(msg.into())
}

/// `host:port` as written in the URL (an IPv6 host keeps its brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

fn parse_host_port(s: &str, default_port: u16) -> Result<HostPort, TargetError> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| err(format!("`{s}`: unclosed `[` in an IPv6 host")))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| err(format!("`{s}`: expected `:port` after `]`")))?,
            ),
        };
        (format!("[{inside}]"), port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (s.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(err(format!("`{s}`: empty host")));
    }
    if host.contains(|c: char| c.is_whitespace() || "/@?#,".contains(c)) {
        return Err(err(format!("`{s}`: invalid host")));
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| err(format!("`{s}`: port must be a number from 1 to 65535")))?,
    };
    Ok(HostPort { host, port })
}

/// A Sentinel set watching one master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    pub master: String,
    pub sentinels: Vec<HostPort>,
    pub db: i64,
    userinfo: Option<String>,
    sentinel_userinfo: Option<String>,
}

impl SentinelTarget {
    /// URLs of the sentinels themselves.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|h| node_url(self.sentinel_userinfo.as_deref(), h, 0))
            .collect()
    }

    /// Database and credentials of the master and replicas.
    pub fn data_node_settings(&self) -> redis::RedisResult<redis::RedisConnectionInfo> {
        let probe = HostPort {
            host: "127.0.0.1".into(),
            port: 6379,
        };
        Ok(node_url(self.userinfo.as_deref(), &probe, self.db)
            .into_connection_info()?
            .redis_settings()
            .clone())
    }
}

/// A Redis Cluster reached through its seed nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTarget {
    pub seeds: Vec<HostPort>,
    userinfo: Option<String>,
}

impl ClusterTarget {
    pub fn seed_urls(&self) -> Vec<String> {
        self.seeds
            .iter()
            .map(|h| node_url(self.userinfo.as_deref(), h, 0))
            .collect()
    }
}

fn node_url(userinfo: Option<&str>, h: &HostPort, db: i64) -> String {
    match userinfo {
        Some(u) => format!("redis://{u}@{h}/{db}"),
        None => format!("redis://{h}/{db}"),
    }
}

/// A parsed `redis.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Single { url: String },
    Sentinel(SentinelTarget),
    Cluster(ClusterTarget),
}

const SCHEMES: &str = "redis://, rediss://, redis+sentinel:// or redis+cluster://";

impl RedisTarget {
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(err(format!("must start with {SCHEMES}")));
        };
        match scheme {
            "redis" | "rediss" | "redis+unix" | "unix" => {
                // redis-rs knows this grammar (and whether TLS is built in).
                redis::Client::open(url).map_err(|e| err(e.to_string()))?;
                Ok(RedisTarget::Single {
                    url: url.to_string(),
                })
            }
            "redis+sentinel" => parse_sentinel(rest),
            "redis+cluster" => parse_cluster(rest),
            "rediss+sentinel" | "rediss+cluster" => Err(err(
                "TLS to a Sentinel set or a Cluster is not built in; use redis+sentinel:// or redis+cluster://",
            )),
            other => Err(err(format!(
                "unknown scheme `{other}://`: must start with {SCHEMES}"
            ))),
        }
    }

    pub fn mode(&self) -> RedisMode {
        match self {
            RedisTarget::Single { .. } => RedisMode::Single,
            RedisTarget::Sentinel(_) => RedisMode::Sentinel,
            RedisTarget::Cluster(_) => RedisMode::Cluster,
        }
    }

    /// One line for `app check-config` and the start-up log (no credentials).
    pub fn describe(&self) -> String {
        let list = |hs: &[HostPort]| {
            hs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            RedisTarget::Single { url } => match url.as_str().into_connection_info() {
                Ok(info) => format!(
                    "single server {} (db {})",
                    info.addr(),
                    info.redis_settings().db()
                ),
                Err(_) => "single server".into(),
            },
            RedisTarget::Sentinel(s) => format!(
                "sentinel: master `{}` (db {}) found through {} sentinel(s): {}",
                s.master,
                s.db,
                s.sentinels.len(),
                list(&s.sentinels)
            ),
            RedisTarget::Cluster(c) => format!(
                "cluster: {} seed node(s): {}",
                c.seeds.len(),
                list(&c.seeds)
            ),
        }
    }
}

/// `[userinfo@]hosts[/path][?query]` of a multi-host URL.
struct MultiHost<'a> {
    userinfo: Option<&'a str>,
    hosts: Vec<&'a str>,
    path: Vec<&'a str>,
    query: Vec<(&'a str, &'a str)>,
}

fn split_multi(rest: &str) -> Result<MultiHost<'_>, TargetError> {
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = main.split_once('/').unwrap_or((main, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if hosts.is_empty() {
        return Err(err("no host given"));
    }
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .ok_or_else(|| err(format!("query parameter `{p}` has no value")))
        })
        .collect::<Result<_, _>>()?;
    Ok(MultiHost {
        userinfo: userinfo.filter(|u| !u.is_empty()),
        hosts: hosts.split(',').collect(),
        path: path.split('/').filter(|s| !s.is_empty()).collect(),
        query,
    })
}

fn parse_hosts(hosts: &[&str], default_port: u16) -> Result<Vec<HostPort>, TargetError> {
    let parsed = hosts
        .iter()
        .map(|h| parse_host_port(h, default_port))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, h) in parsed.iter().enumerate() {
        if parsed[..i].contains(h) {
            return Err(err(format!("host {h} is listed twice")));
        }
    }
    Ok(parsed)
}

fn parse_db(s: &str) -> Result<i64, TargetError> {
    s.parse::<i64>()
        .ok()
        .filter(|&d| d >= 0)
        .ok_or_else(|| err(format!("database `{s}` must be a number ≥ 0")))
}

fn parse_sentinel(rest: &str) -> Result<RedisTarget, TargetError> {
    let m = split_multi(rest)?;
    let sentinels = parse_hosts(&m.hosts, 26379)?;
    let (master, db) = match m.path.as_slice() {
        [master] => (*master, 0),
        [master, db] => (*master, parse_db(db)?),
        [] => {
            return Err(err(
                "the master's name is missing: redis+sentinel://HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB]",
            ));
        }
        _ => return Err(err("expected /MASTER[/DB] after the hosts")),
    };
    if !master
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(err(format!(
            "master name `{master}`: only letters, digits, `.`, `_` and `-`"
        )));
    }
    let (mut s_user, mut s_pass) = (None, None);
    for (k, v) in m.query {
        match k {
            "sentinel_username" => s_user = Some(v),
            "sentinel_password" => s_pass = Some(v),
            other => {
                return Err(err(format!(
                    "unknown query parameter `{other}` (known: sentinel_username, sentinel_password)"
                )));
            }
        }
    }
    let sentinel_userinfo = match (s_user, s_pass) {
        (None, None) => None,
        (u, p) => Some(format!("{}:{}", u.unwrap_or(""), p.unwrap_or(""))),
    };
    let t = SentinelTarget {
        master: master.to_string(),
        sentinels,
        db,
        userinfo: m.userinfo.map(str::to_string),
        sentinel_userinfo,
    };
    // Credentials that redis-rs cannot read (bad percent-encoding) fail here, not at run time.
    t.data_node_settings().map_err(|e| err(e.to_string()))?;
    for u in t.sentinel_urls() {
        u.as_str()
            .into_connection_info()
            .map_err(|e| err(e.to_string()))?;
    }
    Ok(RedisTarget::Sentinel(t))
}

fn parse_cluster(rest: &str) -> Result<RedisTarget, TargetError> {
    let m = split_multi(rest)?;
    let seeds = parse_hosts(&m.hosts, 6379)?;
    match m.path.as_slice() {
        [] | ["0"] => {}
        _ => {
            return Err(err(
                "a Redis Cluster has only database 0: no path after the hosts",
            ));
        }
    }
    if let Some((k, _)) = m.query.first() {
        return Err(err(format!(
            "unknown query parameter `{k}` (redis+cluster:// takes none)"
        )));
    }
    let t = ClusterTarget {
        seeds,
        userinfo: m.userinfo.map(str::to_string),
    };
    for u in t.seed_urls() {
        u.as_str()
            .into_connection_info()
            .map_err(|e| err(e.to_string()))?;
    }
    Ok(RedisTarget::Cluster(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(host: &str, port: u16) -> HostPort {
        HostPort {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn single() {
        let t = RedisTarget::parse("redis://127.0.0.1:6379/2").unwrap();
        assert_eq!(t.mode(), RedisMode::Single);
        assert_eq!(t.describe(), "single server 127.0.0.1:6379 (db 2)");
        assert!(RedisTarget::parse("redis://:secret@10.0.0.1").is_ok());
    }

    #[test]
    fn sentinel() {
        let t = RedisTarget::parse(
            "redis+sentinel://:pw@10.0.0.1,10.0.0.2:26380,[::1]:5000/mymaster/3?sentinel_password=spw",
        )
        .unwrap();
        let RedisTarget::Sentinel(s) = &t else {
            panic!("{t:?}")
        };
        assert_eq!(s.master, "mymaster");
        assert_eq!(s.db, 3);
        assert_eq!(
            s.sentinels,
            vec![
                hp("10.0.0.1", 26379),
                hp("10.0.0.2", 26380),
                hp("[::1]", 5000)
            ]
        );
        assert_eq!(s.sentinel_urls()[0], "redis://:spw@10.0.0.1:26379/0");
        let d = s.data_node_settings().unwrap();
        assert_eq!((d.db(), d.password()), (3, Some("pw")));
        assert!(
            t.describe()
                .starts_with("sentinel: master `mymaster` (db 3)")
        );
        assert!(!t.describe().contains("pw"));
    }

    #[test]
    fn cluster() {
        let t = RedisTarget::parse("redis+cluster://u:p@a:7000,b:7001,c").unwrap();
        let RedisTarget::Cluster(c) = &t else {
            panic!("{t:?}")
        };
        assert_eq!(c.seeds, vec![hp("a", 7000), hp("b", 7001), hp("c", 6379)]);
        assert_eq!(c.seed_urls()[1], "redis://u:p@b:7001/0");
        assert_eq!(
            t.describe(),
            "cluster: 3 seed node(s): a:7000, b:7001, c:6379"
        );
    }

    #[test]
    fn bad_urls_say_why() {
        let cases = [
            ("http://x", "unknown scheme"),
            ("localhost:6379", "must start with"),
            ("redis+sentinel://a,b", "master's name is missing"),
            ("redis+sentinel://a/m/x", "database `x`"),
            (
                "redis+sentinel://a/m?foo=1",
                "unknown query parameter `foo`",
            ),
            ("redis+sentinel://a/m b", "master name"),
            ("redis+cluster://a:0", "port must be"),
            ("redis+cluster://a:7000,a:7000", "listed twice"),
            ("redis+cluster://a,,b", "empty host"),
            ("redis+cluster://", "no host"),
            ("redis+cluster://a/1", "only database 0"),
            ("redis+cluster://[::1", "unclosed"),
            ("rediss+cluster://a", "TLS"),
            ("rediss://a", "TLS"),
        ];
        for (url, want) in cases {
            let e = RedisTarget::parse(url).expect_err(url).to_string();
            assert!(e.contains(want), "{url}: {e}");
        }
    }
}
