//! How the broker reaches Redis: the URL, TLS (`rediss://`, a private CA, a client
//! certificate), an ACL user's password, and the start-up check that the user may run what the
//! broker needs.

use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, IntoConnectionInfo, TlsCertificates, TlsMode};

use super::connection::RedisConnection;
use super::keys::{Fanout, Keys};
use super::primary::Locator;
use crate::error::BackendError;

/// Where Redis is and how to log in: the URL (`redis://` or `rediss://`, with `user:password@`
/// for an ACL user), what a URL cannot carry, and the sentinels when Sentinel manages it.
///
/// ```
/// use sse_notify_broker::RedisOptions;
/// let options = RedisOptions::new("rediss://broker@redis.internal:6380/0")
///     .password("from-a-secrets-mount")
///     .ca_pem(b"-----BEGIN CERTIFICATE-----\n...".to_vec());
/// assert_eq!(options.url(), "rediss://broker@redis.internal:6380/0");
/// ```
#[derive(Clone)]
pub struct RedisOptions {
    url: String,
    password: Option<String>,
    ca_pem: Option<Vec<u8>>,
    client_cert: Option<(Vec<u8>, Vec<u8>)>,
    sentinel: Option<(Vec<(String, u16)>, String)>,
    cluster: Option<Vec<(String, u16)>>,
    min_replicas: Option<(usize, std::time::Duration)>,
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the password nor the key is ever printed.
        f.debug_struct("RedisOptions")
            .field("url", &redact_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "(hidden)"))
            .field("ca_pem", &self.ca_pem.is_some())
            .field("client_cert", &self.client_cert.is_some())
            .field("sentinel", &self.sentinel)
            .field("cluster", &self.cluster)
            .field("min_replicas", &self.min_replicas)
            .finish()
    }
}

impl RedisOptions {
    /// Redis at `url`, trusting the system's CAs for `rediss://`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password: None,
            ca_pem: None,
            client_cert: None,
            sentinel: None,
            cluster: None,
            min_replicas: None,
        }
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The password, instead of the URL's (`REDIS_PASSWORD_FILE`).
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Trusts this CA (PEM) for `rediss://` instead of the system's (`REDIS_TLS_CA_FILE`).
    pub fn ca_pem(mut self, pem: Vec<u8>) -> Self {
        self.ca_pem = Some(pem);
        self
    }

    /// Presents this certificate and key (PEM) to a Redis that asks for one
    /// (`REDIS_TLS_CERT_FILE`, `REDIS_TLS_KEY_FILE`; redis-server's `tls-auth-clients yes`).
    pub fn client_cert(mut self, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Self {
        self.client_cert = Some((cert_pem, key_pem));
        self
    }

    /// Asks these sentinels (`host`, `port`) for the primary of `master`, and follows it when
    /// they fail it over (`REDIS_SENTINELS`, `REDIS_SENTINEL_MASTER`). The URL then gives only
    /// the scheme (`rediss://` for TLS to the sentinels and the primary), the user, password and
    /// database; its host is not used.
    pub fn sentinels(mut self, sentinels: Vec<(String, u16)>, master: impl Into<String>) -> Self {
        self.sentinel = Some((sentinels, master.into()));
        self
    }

    /// Answers a publish only once `replicas` replicas hold it (Redis `WAIT`, at most `wait`),
    /// so that a failover to one of them cannot lose it (`SSE_REDIS_MIN_REPLICAS`). A publish
    /// they do not confirm in time fails, and the outbox publishes it again. 0 = off.
    pub fn min_replicas(mut self, replicas: usize, wait: std::time::Duration) -> Self {
        self.min_replicas = (replicas > 0).then_some((replicas, wait));
        self
    }

    pub(super) fn replicas_to_wait_for(&self) -> Option<(usize, std::time::Duration)> {
        self.min_replicas
    }

    /// Uses the Redis Cluster that these nodes (`host`, `port`; some of them are enough)
    /// belong to (`REDIS_CLUSTER_NODES`): the log and channels of the prefix live on the shard
    /// that owns its slot, and events fan out with sharded Pub/Sub. The URL then gives only the
    /// scheme, user and password; its host is not used.
    pub fn cluster(mut self, nodes: Vec<(String, u16)>) -> Self {
        self.cluster = Some(nodes);
        self
    }

    /// Which shape of deployment the options name.
    pub(super) fn deployment(&self) -> Deployment {
        if self.cluster.is_some() {
            Deployment::Cluster
        } else {
            Deployment::Single
        }
    }

    /// A cluster client; with `pushes`, one that delivers sharded Pub/Sub messages there (RESP3).
    pub(super) fn cluster_client(
        &self,
        pushes: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
    ) -> Result<redis::cluster::ClusterClient, BackendError> {
        let nodes = self.cluster.as_deref().unwrap_or_default();
        let login = self.login()?;
        let scheme = if login.tls { "rediss" } else { "redis" };
        let urls: Vec<String> = nodes.iter().map(|(host, port)| format!("{scheme}://{host}:{port}")).collect();
        let mut builder = redis::cluster::ClusterClientBuilder::new(urls)
            .connection_timeout(std::time::Duration::from_secs(2))
            .response_timeout(std::time::Duration::from_secs(2))
            .retries(2);
        if let Some(user) = login.user {
            builder = builder.username(user);
        }
        if let Some(password) = login.password {
            builder = builder.password(password);
        }
        if login.tls {
            builder = builder.tls(TlsMode::Secure).certs(self.certificates());
        }
        if let Some(pushes) = pushes {
            builder = builder.use_protocol(redis::ProtocolVersion::RESP3).push_sender(pushes);
        }
        builder.build().map_err(BackendError::redis("reading the cluster's options"))
    }

    /// How to find the primary.
    pub(super) fn locator(&self) -> Result<Locator, BackendError> {
        let Some((sentinels, master)) = &self.sentinel else { return Ok(Locator::Fixed(self.client()?)) };
        let login = self.login()?;
        let addresses = sentinels.iter().map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port));
        let mut builder = SentinelClientBuilder::new(addresses, master, SentinelServerType::Master)
            .map_err(BackendError::redis("reading the sentinels' options"))?
            .set_client_to_redis_db(login.db);
        if let Some(user) = login.user {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(password) = login.password {
            builder = builder.set_client_to_redis_password(password);
        }
        if login.tls {
            let certificates = self.certificates();
            builder = builder
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                .set_client_to_redis_certificates(certificates.clone())
                .set_client_to_sentinel_certificates(certificates);
        }
        let client = builder.build().map_err(BackendError::redis("reading the sentinels' options"))?;
        Ok(Locator::Sentinel { sentinels: tokio::sync::Mutex::new(client), master: master.clone() })
    }

    /// What the URL and the options say of logging in, for the clients built from parts
    /// (Sentinel, Cluster); TLS files with a `redis://` URL are refused here for all of them.
    fn login(&self) -> Result<Login, BackendError> {
        let info = self.url.as_str().into_connection_info().map_err(BackendError::redis("reading REDIS_URL"))?;
        let redis = info.redis_settings();
        let tls = self.url.starts_with("rediss://");
        if tls {
            install_crypto_provider();
        } else if self.ca_pem.is_some() || self.client_cert.is_some() {
            return Err(BackendError::Options(
                "a TLS CA or client certificate was given for a redis:// URL; use rediss://",
            ));
        }
        Ok(Login {
            user: redis.username().map(str::to_owned),
            password: self.password.clone().or_else(|| redis.password().map(str::to_owned)),
            db: redis.db(),
            tls,
        })
    }

    fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: self
                .client_cert
                .clone()
                .map(|(client_cert, client_key)| redis::ClientTlsConfig { client_cert, client_key }),
            root_cert: self.ca_pem.clone(),
        }
    }

    /// The `redis` client for the URL's server.
    pub(crate) fn client(&self) -> Result<redis::Client, BackendError> {
        let login = self.login()?;
        let mut info = self.url.as_str().into_connection_info().map_err(BackendError::redis("reading REDIS_URL"))?;
        if let Some(password) = &self.password {
            info = info.clone().set_redis_settings(info.redis_settings().clone().set_password(password));
        }
        let client = if login.tls {
            redis::Client::build_with_tls(info, self.certificates())
        } else {
            redis::Client::open(info)
        };
        client.map_err(BackendError::redis("reading REDIS_URL"))
    }
}

/// The shapes of deployment the options can name.
pub(super) enum Deployment {
    /// One server, or the primary that sentinels name.
    Single,
    /// A Redis Cluster.
    Cluster,
}

/// The login the URL and the options give (see [`RedisOptions::login`]).
struct Login {
    user: Option<String>,
    password: Option<String>,
    db: i64,
    tls: bool,
}

/// rustls needs a process-wide crypto provider: the app's if it installed one, else `ring`.
/// (rustls now prefers aws-lc-rs for its post-quantum key exchange, but that builds a large C
/// library with cmake; a link to Redis inside one's own network does not need it, and an app
/// that wants it installs it before this runs.)
fn install_crypto_provider() {
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The start-up error for an ACL that refuses `command`, listing all the broker needs.
pub(super) fn refused(keys: &Keys, fanout: Fanout, command: &str, source: redis::RedisError) -> BackendError {
    BackendError::Refused {
        what: format!("{command}: {source}"),
        needed: needed_acl(keys, fanout),
        source: Some(source),
    }
}

/// What an ACL user must be allowed for the broker, for a namespace's keys and channels
/// (presence, used only by apps that turn it on, needs more: `presence::needed_acl`).
pub(super) fn needed_acl(keys: &Keys, fanout: Fanout) -> String {
    let pubsub = match fanout {
        Fanout::Plain => "+publish +subscribe +unsubscribe",
        // The cluster client also reads the topology.
        Fanout::Sharded => "+spublish +ssubscribe +sunsubscribe +cluster|slots",
    };
    format!(
        "+ping +info +evalsha +script|load +get +set +hgetall +hset +hdel +xadd +xtrim +xrange {pubsub} ~{} ~{} \
         ~{} ~{} ~{} &{}",
        keys.log(),
        keys.epoch(),
        keys.head(),
        keys.forks(),
        keys.writer(),
        keys.channel("*"),
    )
}

/// Fails start-up, naming what was refused, when the Redis user may not run every command the
/// broker's scripts need or use its keys: better than a publish that fails at the first write.
/// (The channel commands are checked by the shape, on its subscription connection:
/// `Shape::probe_channels`.)
pub(super) async fn check_acl(conn: &RedisConnection, keys: &Keys, fanout: Fanout) -> Result<(), BackendError> {
    let mut conn = conn.clone();
    let ping = redis::cmd("PING").query_async::<String>(&mut conn).await;
    ping.map_err(|e| match super::primary::refused_login(&e) {
        true => BackendError::Redis { during: "logging in (is the password or user right?)", source: e },
        false => refused(keys, fanout, "PING", e),
    })?;
    let script = redis::Script::new(PROBE_SCRIPT);
    let mut probe = script.prepare_invoke();
    keys.script_keys(&mut probe);
    probe.arg(probe_channel(keys)).arg(fanout.publish_command());
    let calls =
        probe.invoke_async::<Vec<String>>(&mut conn).await.map_err(|e| refused(keys, fanout, "its scripts", e))?;
    if !calls.is_empty() {
        let what = format!("to run {} from a script", calls.join(", "));
        return Err(BackendError::Refused { what, needed: needed_acl(keys, fanout), source: None });
    }
    Ok(())
}

/// Calls every command the broker's scripts use, each with a valid arity but an argument the
/// command itself rejects, so nothing is written: Redis checks the ACL (commands, keys,
/// channels) before the arguments, so a refused call answers with the ACL error and an allowed
/// one with its own. (The PUBLISH is real, of an empty message to a channel no stream follows.)
/// Returns the refused calls with Redis's reason. KEYS: log, epoch, head, forks, writer. ARGV: a
/// channel of the namespace no topic can name, and `PUBLISH` or `SPUBLISH`.
pub(super) const PROBE_SCRIPT: &str = r#"
local refused = {}
local function try(name, ...)
  local r = redis.pcall(name, ...)
  if type(r) == 'table' and r.err and string.find(r.err, 'The user executing the script', 1, true) then
    table.insert(refused, name .. ' (' .. r.err .. ')')
  end
end
try('INFO', 'no-such-section')
try('GET', KEYS[3])
try('SET', KEYS[2], 'x', 'XX', 'NX')
try('SET', KEYS[5], 'x', 'XX', 'NX')
try('HGETALL', KEYS[4])
try('HSET', KEYS[4], 'field', 'value', 'field-without-value')
try('HDEL', KEYS[4], 'no-such-field')
try('XADD', KEYS[1], 'MAXLEN', 'not-a-number', '*', 'f', 'v')
try('XTRIM', KEYS[1], 'MINID', 'not-an-id')
try('XRANGE', KEYS[1], 'not-an-id', 'not-an-id')
try(ARGV[2], ARGV[1], '')
return refused
"#;

/// The channel the start-up check publishes to and subscribes: in the namespace, so an ACL
/// channel pattern for it matches, but with a space, which no topic may contain.
pub(super) fn probe_channel(keys: &Keys) -> String {
    keys.channel(" acl-check")
}

/// The URL with its `user:password@` hidden, for logs and errors.
use crate::redact::redact_url;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact_url("redis://:secret@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(redact_url("rediss://user:secret@h:6380"), "rediss://***@h:6380");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        // Found from outside: a URL that does not parse, or carries the password in its query.
        assert_eq!(redact_url("redis://:secret@127.0.0.1:notaport"), "redis://***@127.0.0.1:notaport");
        assert_eq!(redact_url("redis//:secret@h"), "***@h");
        assert_eq!(redact_url("unix:///tmp/r.sock?pass=secret"), "unix:///tmp/r.sock?***");
        let debug = format!("{:?}", RedisOptions::new("redis://u:p4ss@h").password("s3cret"));
        assert!(!debug.contains("p4ss") && !debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn tls_files_need_a_tls_url() {
        let e = RedisOptions::new("redis://h:6379").ca_pem(b"pem".to_vec()).client().err().unwrap();
        assert!(e.to_string().contains("rediss://"), "{e}");
    }
}
