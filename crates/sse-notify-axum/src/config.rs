//! Configuration from the environment, with fastapi-sse-events' variable names.

use std::path::PathBuf;
use std::time::Duration;

use axum::http::HeaderName;
use sse_notify_core::{Topic, DEFAULT_HEARTBEAT_SECONDS};

use crate::clients::ClientLimits;
use sse_notify_broker::BrokerLimits;
#[cfg(feature = "redis")]
use sse_notify_broker::RedisOptions;

/// Why the configuration could not be read; names the variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid {var}={value:?}: {reason}")]
pub struct ConfigError {
    /// The environment variable.
    pub var: &'static str,
    /// Its value as given (or `(hidden)` for secrets).
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
    /// The error it came from, when one said it (a parse error, an I/O error).
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ConfigError {
    /// `var` holds `value`, which is wrong for `reason` (an app's own settings use it too).
    ///
    /// ```
    /// let e = sse_notify_axum::ConfigError::new("READ_CACHE", "maybe", "must be on or off");
    /// assert_eq!(e.to_string(), r#"invalid READ_CACHE="maybe": must be on or off"#);
    /// ```
    pub fn new(var: &'static str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { var, value: value.into(), reason: reason.into(), source: None }
    }

    /// `var` holds `value`, which `source` (a parse error, say) refused; it is kept as the cause.
    pub fn caused_by(
        var: &'static str,
        value: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self { var, value: value.into(), reason: source.to_string(), source: Some(Box::new(source)) }
    }
}

/// Everything the SSE integration reads from the environment.
///
/// ```
/// let cfg = sse_notify_axum::SseConfig::default();
/// assert_eq!(cfg.heartbeat, Some(std::time::Duration::from_secs(30)));
/// assert!(cfg.redis_url.is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseConfig {
    /// `REDIS_URL`, or built from `REDIS_HOST`/`REDIS_PORT`/`REDIS_DB`; `None` (and no
    /// sentinels) = embedded broker.
    pub redis_url: Option<String>,
    /// TLS files, a password file and Sentinel for Redis (`REDIS_TLS_*`, `REDIS_PASSWORD_FILE`,
    /// `REDIS_SENTINELS`, `REDIS_SENTINEL_MASTER`).
    pub redis: RedisSettings,
    /// `SSE_HEARTBEAT_SECONDS` (default 30; 0 = off).
    pub heartbeat: Option<Duration>,
    /// `CORS_ORIGINS`, comma-separated; empty = CORS off.
    pub cors_origins: Vec<String>,
    /// `SSE_MAX_CONNECTIONS`: open streams per process.
    pub max_connections: usize,
    /// `SSE_MAX_STREAMS_PER_CLIENT` and `SSE_MAX_TOPICS_PER_CLIENT` (defaults 256 and 1024;
    /// see [`ClientLimits`] for why).
    pub client_limits: ClientLimits,
    /// `SSE_CLIENT_IP_HEADER`: behind a reverse proxy, the header that carries the client's
    /// address (`x-forwarded-for`, `x-real-ip`); unset = the peer address is the client.
    pub client_ip_header: Option<HeaderName>,
    /// What the broker holds and keeps, each read from its variable (declared once, in
    /// [`BrokerLimits`]): `TOPIC_PREFIX`, `SSE_MAX_QUEUE_SIZE`, `SSE_MAX_MESSAGE_SIZE`,
    /// `SSE_HISTORY_SIZE`, `SSE_HISTORY_SECONDS`, `SSE_OUTBOX_SIZE`, `SSE_PRESENCE_TTL_SECONDS`,
    /// `SSE_PRESENCE_MAX_LISTED`.
    pub broker: BrokerLimits,
    /// `HTTP_HEADER_TIMEOUT_SECONDS`: how long a client may take to send a request head, also
    /// how long an idle keep-alive connection stays open (default 10 s). SSE streams are not
    /// affected: their request was read long ago.
    pub header_timeout: Duration,
    /// `SSE_WRITE_TIMEOUT_SECONDS`: how long a stream's writes may make no progress (its client
    /// stopped reading, and the kernel's buffers are full) before the stream is cut (within one
    /// to two times this) and all it held freed, counted as a slow-consumer disconnect (default
    /// 30 s). A client that reads
    /// slowly but reads is not cut by it (the queue bound is what catches one that falls behind).
    pub write_timeout: Duration,
    /// `HTTP_BODY_TIMEOUT_SECONDS`: how long a request body may take to arrive on the routes
    /// that read one (default 30 s; applied with [`crate::SseApp::body_timeout`]).
    pub body_timeout: Duration,
    /// `HTTP_MAX_PENDING_PER_CLIENT`: connections one client address may have open that have
    /// not sent a complete request head yet (default 128; more are refused with 429). Not
    /// applied when `SSE_CLIENT_IP_HEADER` is set: behind a proxy every connection is the
    /// proxy's, and the proxy forwards complete heads only.
    pub max_pending_per_client: usize,
    /// `SHUTDOWN_GRACE_SECONDS`: at shutdown, how long open connections get to finish (streams
    /// are ended at once; a request being answered is let finish) before they are closed
    /// (default 10 s). The outbox is flushed after that, for up to 4 s more.
    pub shutdown_grace: Duration,
}

impl Default for SseConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis: RedisSettings::default(),
            heartbeat: Some(Duration::from_secs(DEFAULT_HEARTBEAT_SECONDS)),
            cors_origins: Vec::new(),
            max_connections: 19_000,
            client_limits: ClientLimits::default(),
            client_ip_header: None,
            broker: BrokerLimits::default(),
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            max_pending_per_client: 128,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl SseConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads configuration through `get` (testable without touching the process environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let d = Self::default();
        let redis_url = match get("REDIS_URL") {
            Some(url) => Some(check_redis_url("REDIS_URL", url)?),
            None => match get("REDIS_HOST") {
                Some(host) => {
                    let port: u16 = parse("REDIS_PORT", get("REDIS_PORT"), 6379)?;
                    let db: u32 = parse("REDIS_DB", get("REDIS_DB"), 0)?;
                    Some(check_redis_url("REDIS_HOST", format!("redis://{host}:{port}/{db}"))?)
                }
                None => None,
            },
        };
        let heartbeat_secs: u64 =
            parse("SSE_HEARTBEAT_SECONDS", get("SSE_HEARTBEAT_SECONDS"), DEFAULT_HEARTBEAT_SECONDS)?;
        let topic_prefix = get("TOPIC_PREFIX").unwrap_or_default();
        // A prefix is held to the topic alphabet and length (the wire contract's rules, in one
        // place): the separator joining it to a topic is outside that alphabet.
        if !topic_prefix.is_empty() {
            Topic::validate(&topic_prefix).map_err(|e| caused("TOPIC_PREFIX", &topic_prefix, e))?;
        }
        let cors_origins: Vec<String> = get("CORS_ORIGINS")
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        for origin in &cors_origins {
            check_origin(origin).map_err(|reason| err("CORS_ORIGINS", origin, reason))?;
        }
        let client_ip_header = match get("SSE_CLIENT_IP_HEADER") {
            Some(name) => {
                Some(HeaderName::try_from(name.as_str()).map_err(|e| caused("SSE_CLIENT_IP_HEADER", &name, e))?)
            }
            None => None,
        };
        let redis = RedisSettings {
            tls_ca_file: get("REDIS_TLS_CA_FILE").map(PathBuf::from),
            tls_cert_file: get("REDIS_TLS_CERT_FILE").map(PathBuf::from),
            tls_key_file: get("REDIS_TLS_KEY_FILE").map(PathBuf::from),
            password_file: get("REDIS_PASSWORD_FILE").map(PathBuf::from),
            sentinels: match get("REDIS_SENTINELS") {
                Some(list) => parse_addresses("REDIS_SENTINELS", &list)?,
                None => Vec::new(),
            },
            sentinel_master: get("REDIS_SENTINEL_MASTER"),
            cluster_nodes: match get("REDIS_CLUSTER_NODES") {
                Some(list) => parse_addresses("REDIS_CLUSTER_NODES", &list)?,
                None => Vec::new(),
            },
            min_replicas: parse("SSE_REDIS_MIN_REPLICAS", get("SSE_REDIS_MIN_REPLICAS"), 0)?,
            min_replicas_wait: Duration::from_millis(positive(
                "SSE_REDIS_MIN_REPLICAS_WAIT_MS",
                get("SSE_REDIS_MIN_REPLICAS_WAIT_MS"),
                DEFAULT_MIN_REPLICAS_WAIT_MS as usize,
            )? as u64),
        };
        match (&redis.sentinel_master, redis.sentinels.is_empty()) {
            (None, false) => {
                return Err(err("REDIS_SENTINELS", "", "needs REDIS_SENTINEL_MASTER, the name they watch"))
            }
            (Some(name), true) => return Err(err("REDIS_SENTINEL_MASTER", name, "needs REDIS_SENTINELS")),
            _ => {}
        }
        if !redis.sentinels.is_empty() && !redis.cluster_nodes.is_empty() {
            return Err(err(
                "REDIS_CLUSTER_NODES",
                "",
                "a Redis Cluster has no sentinels: set REDIS_SENTINELS or this",
            ));
        }
        #[cfg(not(feature = "redis"))]
        if redis.is_managed() {
            let var = if redis.sentinels.is_empty() { "REDIS_CLUSTER_NODES" } else { "REDIS_SENTINELS" };
            return Err(err(var, "", NO_REDIS));
        }
        match &redis_url {
            // Read now, so that a missing file or a wrong pairing stops start-up naming it.
            #[cfg(feature = "redis")]
            Some(url) => drop(redis.options(url)?),
            #[cfg(feature = "redis")]
            None if redis.is_managed() => drop(redis.options(MANAGED_URL)?),
            #[cfg(not(feature = "redis"))]
            Some(_) => {}
            None => {
                if let Some((var, path)) = redis.first_set() {
                    return Err(err(var, &path.display().to_string(), "set, but REDIS_URL is not"));
                }
            }
        }
        let cfg = Self {
            redis_url,
            redis,
            heartbeat: (heartbeat_secs > 0).then(|| Duration::from_secs(heartbeat_secs)),
            cors_origins,
            max_connections: positive("SSE_MAX_CONNECTIONS", get("SSE_MAX_CONNECTIONS"), d.max_connections)?,
            client_limits: ClientLimits {
                max_streams: positive(
                    "SSE_MAX_STREAMS_PER_CLIENT",
                    get("SSE_MAX_STREAMS_PER_CLIENT"),
                    d.client_limits.max_streams,
                )?,
                max_topics: positive(
                    "SSE_MAX_TOPICS_PER_CLIENT",
                    get("SSE_MAX_TOPICS_PER_CLIENT"),
                    d.client_limits.max_topics,
                )?,
            },
            client_ip_header,
            broker: BrokerLimits {
                topic_prefix,
                max_queue_size: positive("SSE_MAX_QUEUE_SIZE", get("SSE_MAX_QUEUE_SIZE"), d.broker.max_queue_size)?,
                max_message_size: positive(
                    "SSE_MAX_MESSAGE_SIZE",
                    get("SSE_MAX_MESSAGE_SIZE"),
                    d.broker.max_message_size,
                )?,
                history_size: positive("SSE_HISTORY_SIZE", get("SSE_HISTORY_SIZE"), d.broker.history_size)?,
                history_age: seconds("SSE_HISTORY_SECONDS", get("SSE_HISTORY_SECONDS"), d.broker.history_age)?,
                outbox_size: positive("SSE_OUTBOX_SIZE", get("SSE_OUTBOX_SIZE"), d.broker.outbox_size)?,
                presence_ttl: seconds(
                    "SSE_PRESENCE_TTL_SECONDS",
                    get("SSE_PRESENCE_TTL_SECONDS"),
                    d.broker.presence_ttl,
                )?,
                presence_max_listed: positive(
                    "SSE_PRESENCE_MAX_LISTED",
                    get("SSE_PRESENCE_MAX_LISTED"),
                    d.broker.presence_max_listed,
                )?,
            },
            header_timeout: seconds(
                "HTTP_HEADER_TIMEOUT_SECONDS",
                get("HTTP_HEADER_TIMEOUT_SECONDS"),
                d.header_timeout,
            )?,
            write_timeout: seconds("SSE_WRITE_TIMEOUT_SECONDS", get("SSE_WRITE_TIMEOUT_SECONDS"), d.write_timeout)?,
            body_timeout: seconds("HTTP_BODY_TIMEOUT_SECONDS", get("HTTP_BODY_TIMEOUT_SECONDS"), d.body_timeout)?,
            max_pending_per_client: positive(
                "HTTP_MAX_PENDING_PER_CLIENT",
                get("HTTP_MAX_PENDING_PER_CLIENT"),
                d.max_pending_per_client,
            )?,
            shutdown_grace: seconds("SHUTDOWN_GRACE_SECONDS", get("SHUTDOWN_GRACE_SECONDS"), d.shutdown_grace)?,
        };
        Ok(cfg)
    }
}

/// How to reach Redis beyond `REDIS_URL`: files, so that secrets can come from a mount.
///
/// ```
/// # #[cfg(feature = "redis")] {
/// # use sse_notify_axum::config::RedisSettings;
/// # let dir = std::env::temp_dir().join(format!("redis-settings-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// std::fs::write(dir.join("password"), "s3cret\n").unwrap();
/// let access = RedisSettings { password_file: Some(dir.join("password")), ..Default::default() };
/// let options = access.options("redis://broker@127.0.0.1:6379").unwrap(); // the newline is not part of it
/// assert!(!format!("{options:?}").contains("s3cret"));
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisSettings {
    /// `REDIS_TLS_CA_FILE`: the CA (PEM) to trust for `rediss://` instead of the system's.
    pub tls_ca_file: Option<PathBuf>,
    /// `REDIS_TLS_CERT_FILE`: a client certificate (PEM), for a Redis that asks for one.
    pub tls_cert_file: Option<PathBuf>,
    /// `REDIS_TLS_KEY_FILE`: the client certificate's key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// `REDIS_PASSWORD_FILE`: the password (its trailing newline dropped), instead of the URL's;
    /// the user stays the URL's (`rediss://user@host`).
    pub password_file: Option<PathBuf>,
    /// `REDIS_SENTINELS` (`host:port,host:port,...`): ask these sentinels where the primary is,
    /// and follow it through failovers. `REDIS_URL` is then optional and gives only the scheme
    /// (`rediss://` = TLS to sentinels and primary), user, password and database.
    pub sentinels: Vec<(String, u16)>,
    /// `REDIS_SENTINEL_MASTER`: the name the sentinels know the primary by.
    pub sentinel_master: Option<String>,
    /// `REDIS_CLUSTER_NODES` (`host:port,...`, some of the nodes are enough): use this Redis
    /// Cluster, with sharded Pub/Sub. `REDIS_URL` is then optional, as with sentinels.
    pub cluster_nodes: Vec<(String, u16)>,
    /// `SSE_REDIS_MIN_REPLICAS`: a publish is answered only once this many replicas hold it
    /// (default 0 = off; see [`RedisOptions::min_replicas`]).
    pub min_replicas: usize,
    /// `SSE_REDIS_MIN_REPLICAS_WAIT_MS`: how long a publish waits for them (default 500 ms).
    pub min_replicas_wait: Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            password_file: None,
            sentinels: Vec::new(),
            sentinel_master: None,
            cluster_nodes: Vec::new(),
            min_replicas: 0,
            min_replicas_wait: Duration::from_millis(DEFAULT_MIN_REPLICAS_WAIT_MS),
        }
    }
}

const DEFAULT_MIN_REPLICAS_WAIT_MS: u64 = 500;

/// The URL whose scheme, user and database apply behind Sentinel or to a Cluster when
/// `REDIS_URL` is unset.
#[cfg(feature = "redis")]
const MANAGED_URL: &str = "redis://sentinel-or-cluster";

/// `host:port,host:port` (IPv6 as `[::1]:26379`).
fn parse_addresses(var: &'static str, list: &str) -> Result<Vec<(String, u16)>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            let (host, port) = a.rsplit_once(':').ok_or_else(|| err(var, list, format!("{a:?} is not host:port")))?;
            let port = port.parse::<u16>().map_err(|_| err(var, list, format!("{a:?} has no valid port")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(err(var, list, format!("{a:?} has no host")));
            }
            Ok((host.to_owned(), port))
        })
        .collect()
}

#[cfg(feature = "redis")]
impl SseConfig {
    /// How to reach Redis, with its files read now; `None` for the embedded broker.
    pub fn redis_options(&self) -> Result<Option<RedisOptions>, ConfigError> {
        match &self.redis_url {
            Some(url) => self.redis.options(url).map(Some),
            None if self.redis.is_managed() => self.redis.options(MANAGED_URL).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(feature = "redis")]
impl RedisSettings {
    /// The broker's options for `url`, with the files read now.
    pub fn options(&self, url: &str) -> Result<RedisOptions, ConfigError> {
        let read = |var: &'static str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| err(var, &path.display().to_string(), format!("cannot read it: {e}")))
        };
        let tls_files = self.tls_ca_file.is_some() || self.tls_cert_file.is_some() || self.tls_key_file.is_some();
        if tls_files && !url.starts_with("rediss://") {
            let (var, path) = self.first_set().expect("a TLS file is set");
            return Err(err(var, &path.display().to_string(), "TLS files need a rediss:// REDIS_URL"));
        }
        let mut options = RedisOptions::new(url);
        if let Some(path) = &self.tls_ca_file {
            options = options.ca_pem(read("REDIS_TLS_CA_FILE", path)?);
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => {
                options = options.client_cert(read("REDIS_TLS_CERT_FILE", cert)?, read("REDIS_TLS_KEY_FILE", key)?);
            }
            (None, None) => {}
            (Some(cert), None) => {
                return Err(err("REDIS_TLS_CERT_FILE", &cert.display().to_string(), "needs REDIS_TLS_KEY_FILE too"))
            }
            (None, Some(key)) => {
                return Err(err("REDIS_TLS_KEY_FILE", &key.display().to_string(), "needs REDIS_TLS_CERT_FILE too"))
            }
        }
        if let Some(master) = &self.sentinel_master {
            options = options.sentinels(self.sentinels.clone(), master.clone());
        }
        if !self.cluster_nodes.is_empty() {
            options = options.cluster(self.cluster_nodes.clone());
        }
        options = options.min_replicas(self.min_replicas, self.min_replicas_wait);
        if let Some(path) = &self.password_file {
            let bytes = read("REDIS_PASSWORD_FILE", path)?;
            let text = String::from_utf8(bytes)
                .map_err(|_| err("REDIS_PASSWORD_FILE", &path.display().to_string(), "is not UTF-8"))?;
            let password = text.strip_suffix('\n').map(|p| p.strip_suffix('\r').unwrap_or(p)).unwrap_or(&text);
            if password.is_empty() {
                return Err(err("REDIS_PASSWORD_FILE", &path.display().to_string(), "is empty"));
            }
            options = options.password(password);
        }
        Ok(options)
    }
}

impl RedisSettings {
    /// Whether Redis is found through sentinels or cluster nodes rather than `REDIS_URL`.
    fn is_managed(&self) -> bool {
        !self.sentinels.is_empty() || !self.cluster_nodes.is_empty()
    }

    /// The first variable set, with its path.
    fn first_set(&self) -> Option<(&'static str, &PathBuf)> {
        [
            ("REDIS_TLS_CA_FILE", &self.tls_ca_file),
            ("REDIS_TLS_CERT_FILE", &self.tls_cert_file),
            ("REDIS_TLS_KEY_FILE", &self.tls_key_file),
            ("REDIS_PASSWORD_FILE", &self.password_file),
        ]
        .into_iter()
        .find_map(|(var, path)| path.as_ref().map(|p| (var, p)))
    }
}

/// An origin as a browser sends it (`Origin:`): `scheme://host` or `scheme://host:port`, nothing
/// more. Anything else can never match a browser's, and CORS would fail at run time instead of
/// start-up; `*` cannot go with credentials at all.
pub(crate) fn check_origin(origin: &str) -> Result<(), String> {
    const SHAPE: &str = "must be an origin as a browser sends it: scheme://host[:port], no path, no wildcard";
    let (scheme, authority) = origin.split_once("://").ok_or(SHAPE)?;
    // An IPv6 host is bracketed (`[::1]`); any other host has no `:` of its own.
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (address, after) = bracketed.split_once(']').ok_or(SHAPE)?;
            let ipv6 = !address.is_empty() && address.chars().all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'));
            (if ipv6 { "ipv6" } else { "" }, after)
        }
        None => authority.find(':').map_or((authority, ""), |at| authority.split_at(at)),
    };
    let host_ok = !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
    let port_ok = port.is_empty() || port.strip_prefix(':').is_some_and(|p| p.parse::<u16>().is_ok());
    if !matches!(scheme, "http" | "https") || !host_ok || !port_ok {
        return Err(SHAPE.to_owned());
    }
    Ok(())
}

fn err(var: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::new(var, value, reason)
}

fn caused(var: &'static str, value: &str, source: impl std::error::Error + Send + Sync + 'static) -> ConfigError {
    ConfigError::caused_by(var, value, source)
}

fn parse<T: std::str::FromStr>(var: &'static str, value: Option<String>, default: T) -> Result<T, ConfigError>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match value {
        None => Ok(default),
        Some(v) => v.parse().map_err(|e: T::Err| caused(var, &v, e)),
    }
}

/// Whole seconds, at least 1.
fn seconds(var: &'static str, value: Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    Ok(Duration::from_secs(positive(var, value, default.as_secs() as usize)? as u64))
}

fn positive(var: &'static str, value: Option<String>, default: usize) -> Result<usize, ConfigError> {
    let raw = value.clone();
    match parse(var, value, default)? {
        0 => Err(err(var, &raw.unwrap_or_default(), "must be at least 1")),
        n => Ok(n),
    }
}

#[cfg(feature = "redis")]
fn check_redis_url(var: &'static str, url: String) -> Result<String, ConfigError> {
    redis::Client::open(url.as_str()).map_err(|e| caused(var, &sse_notify_broker::redact_url(&url), e))?;
    Ok(url)
}

/// Built without the `redis` feature: a Redis setting is a mistake to stop on, not to ignore.
#[cfg(not(feature = "redis"))]
fn check_redis_url(var: &'static str, url: String) -> Result<String, ConfigError> {
    Err(err(var, &sse_notify_broker::redact_url(&url), NO_REDIS))
}

#[cfg(not(feature = "redis"))]
const NO_REDIS: &str = "this build has no Redis support (sse-notify-axum's `redis` feature is off)";

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<SseConfig, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        SseConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_when_unset() {
        assert_eq!(from(&[]).unwrap(), SseConfig::default());
    }

    #[test]
    #[cfg(feature = "redis")]
    fn reads_every_variable() {
        let cfg = from(&[
            ("REDIS_HOST", "127.0.0.1"),
            ("REDIS_PORT", "6380"),
            ("REDIS_DB", "2"),
            ("SSE_HEARTBEAT_SECONDS", "0"),
            ("TOPIC_PREFIX", "app1:"),
            (
                "CORS_ORIGINS",
                "http://a.test, https://b.test:8443, http://127.0.0.1:8080, http://[::1]:3000, http://[::1]",
            ),
            ("SSE_MAX_CONNECTIONS", "10"),
            ("SSE_MAX_QUEUE_SIZE", "5"),
            ("SSE_MAX_MESSAGE_SIZE", "100"),
            ("SSE_HISTORY_SIZE", "50"),
            ("SSE_HISTORY_SECONDS", "60"),
            ("HTTP_HEADER_TIMEOUT_SECONDS", "3"),
            ("HTTP_BODY_TIMEOUT_SECONDS", "4"),
            ("SSE_WRITE_TIMEOUT_SECONDS", "5"),
            ("SSE_MAX_STREAMS_PER_CLIENT", "7"),
            ("SSE_OUTBOX_SIZE", "9"),
            ("SSE_MAX_TOPICS_PER_CLIENT", "8"),
            ("SSE_CLIENT_IP_HEADER", "X-Real-IP"),
            ("HTTP_MAX_PENDING_PER_CLIENT", "6"),
            ("SHUTDOWN_GRACE_SECONDS", "2"),
        ])
        .unwrap();
        assert_eq!(cfg.redis_url.as_deref(), Some("redis://127.0.0.1:6380/2"));
        assert_eq!(cfg.heartbeat, None);
        assert_eq!(cfg.broker.topic_prefix, "app1:");
        assert_eq!(
            cfg.cors_origins,
            ["http://a.test", "https://b.test:8443", "http://127.0.0.1:8080", "http://[::1]:3000", "http://[::1]"]
        );
        assert_eq!((cfg.max_connections, cfg.broker.max_queue_size, cfg.broker.max_message_size), (10, 5, 100));
        assert_eq!((cfg.broker.history_size, cfg.broker.history_age), (50, Duration::from_secs(60)));
        assert_eq!((cfg.header_timeout, cfg.body_timeout), (Duration::from_secs(3), Duration::from_secs(4)));
        assert_eq!((cfg.broker.outbox_size, cfg.write_timeout), (9, Duration::from_secs(5)));
        assert_eq!(cfg.client_limits, ClientLimits { max_streams: 7, max_topics: 8 });
        assert_eq!(cfg.client_ip_header.as_ref().map(HeaderName::as_str), Some("x-real-ip"));
        assert_eq!((cfg.max_pending_per_client, cfg.shutdown_grace), (6, Duration::from_secs(2)));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("SSE_HEARTBEAT_SECONDS", "soon"),
            ("SSE_MAX_CONNECTIONS", "0"),
            ("SSE_MAX_QUEUE_SIZE", "-1"),
            ("REDIS_URL", "http://nope"),
            ("TOPIC_PREFIX", "a b"),
            ("TOPIC_PREFIX", "a/b"),
            ("TOPIC_PREFIX", "p".repeat(129).leak()),
            ("SSE_HISTORY_SIZE", "0"),
            ("SSE_HISTORY_SECONDS", "a day"),
            ("SSE_MAX_STREAMS_PER_CLIENT", "0"),
            ("SSE_MAX_TOPICS_PER_CLIENT", "many"),
            ("SSE_WRITE_TIMEOUT_SECONDS", "0"),
            ("SSE_CLIENT_IP_HEADER", "x forwarded"),
            ("HTTP_MAX_PENDING_PER_CLIENT", "0"),
            ("SHUTDOWN_GRACE_SECONDS", "0"),
            ("SHUTDOWN_GRACE_SECONDS", "soon"),
            ("CORS_ORIGINS", "*"),
            ("CORS_ORIGINS", "http://a.test/"),
            ("CORS_ORIGINS", "http://ok.test, 127.0.0.1:8080"),
            ("CORS_ORIGINS", "ftp://a.test"),
            ("CORS_ORIGINS", "http://a.test:port"),
            ("CORS_ORIGINS", "http://*.a.test"),
            ("CORS_ORIGINS", "http://[::1"),
            ("CORS_ORIGINS", "http://[::1]x"),
            ("CORS_ORIGINS", "http://[zz]"),
            ("CORS_ORIGINS", "http://a.test:"),
        ] {
            let e = from(&[(var, value)]).unwrap_err();
            assert_eq!(e.var, var);
            assert!(e.to_string().contains(var), "{e}");
        }
    }
}

#[cfg(test)]
mod redis_settings_tests {
    use super::*;

    #[cfg(feature = "redis")]
    fn dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "redis-settings-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn from(pairs: &[(&str, String)]) -> Result<SseConfig, ConfigError> {
        SseConfig::from_lookup(|k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    #[cfg(not(feature = "redis"))]
    fn without_the_redis_feature_a_redis_setting_stops_start_up() {
        let e = from(&[("REDIS_URL", "redis://:pw@127.0.0.1:6379".to_owned())]).err().unwrap();
        assert_eq!((e.var, e.reason.as_str()), ("REDIS_URL", NO_REDIS));
        assert!(!e.value.contains("pw"), "the password stays hidden: {}", e.value);
        let e = from(&[("REDIS_CLUSTER_NODES", "10.0.0.1:7000".to_owned())]).err().unwrap();
        assert_eq!(e.var, "REDIS_CLUSTER_NODES");
        assert!(from(&[]).is_ok(), "positive control: the embedded broker");
    }

    #[test]
    #[cfg(feature = "redis")]
    fn a_redis_url_that_does_not_parse_is_refused_without_its_password() {
        for url in ["redis://:Pw_555@127.0.0.1:notaport", "redis//:Pw_555@127.0.0.1", "redis://u:Pw_555@h:1/db?x"] {
            let e = from(&[("REDIS_URL", url.to_owned())]).err().unwrap_or_else(|| panic!("{url} accepted"));
            assert_eq!(e.var, "REDIS_URL");
            assert!(!e.to_string().contains("Pw_555"), "the password stays hidden: {e}");
        }
    }

    #[test]
    #[cfg(feature = "redis")]
    fn files_are_read_and_checked_at_start_up() {
        let d = dir();
        std::fs::write(d.join("pw"), "s3cret\r\n").unwrap();
        std::fs::write(d.join("empty"), "\n").unwrap();
        std::fs::write(d.join("ca.pem"), "pem").unwrap();
        let path = |name: &str| d.join(name).display().to_string();
        let tls = || ("REDIS_URL", "rediss://u@127.0.0.1:6380".to_owned());
        let plain = || ("REDIS_URL", "redis://u@127.0.0.1:6379".to_owned());
        let cfg = from(&[tls(), ("REDIS_TLS_CA_FILE", path("ca.pem")), ("REDIS_PASSWORD_FILE", path("pw"))]).unwrap();
        assert_eq!(cfg.redis.tls_ca_file, Some(d.join("ca.pem")));
        let sentinels =
            |list: &str| vec![("REDIS_SENTINELS", list.to_owned()), ("REDIS_SENTINEL_MASTER", "main".to_owned())];
        let cfg = from(&sentinels("10.0.0.1:26379, [::1]:26380")).unwrap();
        assert_eq!(cfg.redis.sentinels, [("10.0.0.1".to_owned(), 26379), ("::1".to_owned(), 26380)]);
        assert!(cfg.redis_url.is_none() && cfg.redis_options().unwrap().is_some(), "sentinels alone mean Redis");
        let cfg = from(&[("REDIS_CLUSTER_NODES", "10.0.0.1:7000,10.0.0.2:7000".to_owned())]).unwrap();
        assert_eq!(cfg.redis.cluster_nodes.len(), 2);
        assert!(cfg.redis_options().unwrap().is_some(), "cluster nodes alone mean Redis");
        let mut both = sentinels("10.0.0.1:26379");
        both.push(("REDIS_CLUSTER_NODES", "10.0.0.1:7000".to_owned()));
        assert_eq!(from(&both).err().unwrap().var, "REDIS_CLUSTER_NODES");
        for (pairs, var, says) in [
            (vec![plain(), ("REDIS_TLS_CA_FILE", path("ca.pem"))], "REDIS_TLS_CA_FILE", "rediss://"),
            (vec![tls(), ("REDIS_TLS_CA_FILE", path("missing"))], "REDIS_TLS_CA_FILE", "cannot read"),
            (vec![tls(), ("REDIS_TLS_CERT_FILE", path("ca.pem"))], "REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE"),
            (vec![tls(), ("REDIS_TLS_KEY_FILE", path("ca.pem"))], "REDIS_TLS_KEY_FILE", "REDIS_TLS_CERT_FILE"),
            (vec![plain(), ("REDIS_PASSWORD_FILE", path("empty"))], "REDIS_PASSWORD_FILE", "empty"),
            (vec![("REDIS_PASSWORD_FILE", path("pw"))], "REDIS_PASSWORD_FILE", "REDIS_URL"),
            (vec![("REDIS_SENTINELS", "127.0.0.1:26379".to_owned())], "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER"),
            (vec![("REDIS_SENTINEL_MASTER", "main".to_owned())], "REDIS_SENTINEL_MASTER", "REDIS_SENTINELS"),
            (sentinels("127.0.0.1"), "REDIS_SENTINELS", "host:port"),
            (sentinels("127.0.0.1:port"), "REDIS_SENTINELS", "port"),
            (sentinels(":26379"), "REDIS_SENTINELS", "host"),
        ] {
            let e = from(&pairs).err().unwrap_or_else(|| panic!("{var} accepted"));
            assert_eq!(e.var, var);
            assert!(e.to_string().contains(says), "{e}");
        }
    }
}
