//! Server configuration: etcd v3.5's command line, `ETCD_*` environment and
//! `--config-file` YAML, for the settings ferrocd implements so far.
//!
//! Anchor: etcd v3.5.33, `server/etcdmain/config.go` (flag set, env and file
//! precedence), `server/embed/config.go` (defaults, YAML keys, `Validate`),
//! `pkg/flags/flag.go` (`SetFlagsFromEnv`), `client/pkg/types/urls.go`
//! (URL rules) and Go's `flag` package (syntax and error texts).
//!
//! What is mirrored:
//! - Go `flag` syntax (`-f`, `--f`, `-f=v`, `-f v`; booleans only as `-f` or
//!   `-f=v`; parsing stops at the first non-flag argument or after `--`) and
//!   its messages, e.g. `flag provided but not defined: -foo` (exit code 2).
//!   Integers are parsed like Go's `strconv` with base 0 (`0x10`, `1_000`).
//! - `ETCD_<FLAG>` environment variables (upper case, `-` to `_`) for flags
//!   not given on the command line; a variable whose flag *is* also given on
//!   the command line is fatal in etcd 3.5 (`verifyEnv`), and here too.
//!   Empty variables are ignored; unknown `ETCD_*` variables are a warning.
//! - `--config-file` / `ETCD_CONFIG_FILE`: when a file is given, every other
//!   flag and environment variable is ignored (flags are still syntax- and
//!   type-checked first, as Go's parser does). YAML keys match etcd's JSON
//!   tags, case-insensitively like Go's `encoding/json`; unknown keys are
//!   ignored (a warning here); `null` means "not set".
//! - Defaults, `${name}.etcd` data dir, `--initial-cluster` following
//!   `--name` (only when the name is not `default` and the cluster was left
//!   at its default, exactly like etcd's `UpdateDefaultClusterFromName`), the
//!   "advertise-client-urls is required" rule, and `embed.Config.Validate`'s
//!   checks and messages.
//!
//! What is refused: every etcd 3.5 flag, environment variable or YAML key
//! ferrocd does not implement yet ([`UNIMPLEMENTED_ETCD_FLAGS`],
//! [`UNIMPLEMENTED_ETCD_CONFIG_KEYS`]), `https://` and `unix://` URLs, and the
//! `gateway` / `grpc-proxy` commands.

// The server that consumes most of this API lands later.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::auto_compactor::AutoCompaction;

/// etcd's `embed.DefaultName`.
pub const DEFAULT_NAME: &str = "default";
/// Default `--listen-client-urls`.
pub const DEFAULT_LISTEN_CLIENT_URLS: &str = "http://localhost:2379";
/// Default `--advertise-client-urls`.
pub const DEFAULT_ADVERTISE_CLIENT_URLS: &str = "http://localhost:2379";
/// Default `--listen-peer-urls`.
pub const DEFAULT_LISTEN_PEER_URLS: &str = "http://localhost:2380";
/// Default `--initial-advertise-peer-urls`.
pub const DEFAULT_INITIAL_ADVERTISE_PEER_URLS: &str = "http://localhost:2380";
/// Default `--initial-cluster` (etcd's `InitialClusterFromName("default")`).
pub const DEFAULT_INITIAL_CLUSTER: &str = "default=http://localhost:2380";
/// Default `--initial-cluster-token`.
pub const DEFAULT_INITIAL_CLUSTER_TOKEN: &str = "etcd-cluster";
/// etcd 3.5's `etcdserver.DefaultSnapshotCount` (3.6 lowered it to 10 000).
pub const DEFAULT_SNAPSHOT_COUNT: u64 = 100_000;
/// Default `--heartbeat-interval` in milliseconds.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 100;
/// Default `--election-timeout` in milliseconds.
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 1000;
/// etcd's `maxElectionMs`: larger election timeouts are refused.
pub const MAX_ELECTION_TIMEOUT_MS: u64 = 50_000;
/// Backend quota used when `--quota-backend-bytes` is 0 (`DefaultQuotaBytes`).
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Above this quota etcd warns "quota exceeds the maximum value" (`MaxQuotaBytes`).
pub const MAX_QUOTA_BACKEND_BYTES: u64 = 8 * 1024 * 1024 * 1024;
/// Default `--max-request-bytes` (1.5 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1_572_864;
/// Above this etcd warns "exceeded recommended request limit".
pub const RECOMMENDED_MAX_REQUEST_BYTES: u64 = 10 * 1024 * 1024;
/// Default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: u64 = 128;
/// etcd's `--experimental-watch-progress-notify-interval` default (10 min).
pub const DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL_NS: u64 = 600 * 1_000_000_000;
/// ferrocd's own environment variable for `--cores`.
pub const CORES_ENV: &str = "FERROCD_CORES";

/// What the command line asks for.
// One value per process: boxing the config would only cost callers a deref.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// Start the server with this configuration.
    Run(Config),
    /// `--version`: print the version and exit 0.
    Version,
    /// `-h`, `-help`, `--help`: print [`help_text`] and exit 0.
    Help,
}

/// `--initial-cluster-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

/// `--log-level`, parsed like zap's `Level.UnmarshalText` (case-insensitive,
/// empty means `info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
    DPanic,
    Panic,
    Fatal,
}

impl LogLevel {
    fn parse(s: &str) -> Option<LogLevel> {
        Some(match s.to_ascii_lowercase().as_str() {
            "debug" => LogLevel::Debug,
            "info" | "" => LogLevel::Info,
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            "dpanic" => LogLevel::DPanic,
            "panic" => LogLevel::Panic,
            "fatal" => LogLevel::Fatal,
            _ => return None,
        })
    }
}

/// The server configuration. Field values are etcd's (e.g. `quota_backend_bytes`
/// keeps etcd's "0 = default, negative = disabled" meaning); helper methods
/// give the effective values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `--name`.
    pub name: String,
    /// `--data-dir`; `${name}.etcd` when not given.
    pub data_dir: PathBuf,
    /// `--listen-client-urls`: sorted, de-duplicated, each an IP or `localhost`.
    pub listen_client_urls: Vec<Url>,
    /// `--advertise-client-urls`: sorted, de-duplicated; host names allowed.
    pub advertise_client_urls: Vec<Url>,
    /// `--listen-peer-urls`: sorted, de-duplicated, each an IP or `localhost`.
    pub listen_peer_urls: Vec<Url>,
    /// `--listen-metrics-urls`: where `/metrics` and `/health` are served
    /// over HTTP/1.1 (empty by default, as etcd's).
    pub listen_metrics_urls: Vec<Url>,
    /// `--initial-advertise-peer-urls`: sorted, de-duplicated; host names allowed.
    pub initial_advertise_peer_urls: Vec<Url>,
    /// `--initial-cluster`, as text (etcd parses it only when bootstrapping;
    /// see [`Config::initial_cluster_members`]).
    pub initial_cluster: String,
    /// `--initial-cluster-state`.
    pub initial_cluster_state: ClusterState,
    /// `--initial-cluster-token`.
    pub initial_cluster_token: String,
    /// `--snapshot-count` as given (0 means the default, see
    /// [`Config::effective_snapshot_count`]).
    pub snapshot_count: u64,
    /// `--heartbeat-interval` (raft tick) in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// `--election-timeout` in milliseconds.
    pub election_timeout_ms: u64,
    /// `--quota-backend-bytes` as given: 0 = 2 GiB default, negative = no quota
    /// (see [`Config::backend_quota_bytes`]).
    pub quota_backend_bytes: i64,
    /// `--max-request-bytes`.
    pub max_request_bytes: u64,
    /// `--max-txn-ops`.
    pub max_txn_ops: u64,
    /// `--experimental-watch-progress-notify-interval`, milliseconds
    /// (default 10 min).
    pub watch_progress_notify_interval_ms: u64,
    /// `--auto-compaction-mode` and `--auto-compaction-retention`; `None`:
    /// off (retention 0, the default).
    pub auto_compaction: Option<AutoCompaction>,
    /// `--log-level`.
    pub log_level: LogLevel,
    /// `--logger`; always `zap` (the only value etcd 3.5 accepts).
    pub logger: String,
    /// ferrocd's `--cores` / `FERROCD_CORES`: executor threads (>= 1).
    pub cores: usize,
    /// The config file the settings came from, if any.
    pub config_file: Option<PathBuf>,
    /// Non-fatal notes etcd would log at startup (ignored flags, unrecognized
    /// `ETCD_*` variables or YAML keys, config-file precedence, ...).
    pub warnings: Vec<String>,
}

impl Config {
    /// etcd's `ElectionTicks()`: election timeout in heartbeat ticks.
    pub fn election_ticks(&self) -> u64 {
        self.election_timeout_ms / self.heartbeat_interval_ms
    }

    /// The snapshot trigger etcd actually uses (0 becomes the default).
    pub fn effective_snapshot_count(&self) -> u64 {
        if self.snapshot_count == 0 {
            DEFAULT_SNAPSHOT_COUNT
        } else {
            self.snapshot_count
        }
    }

    /// The backend quota in bytes, or `None` when the quota is disabled
    /// (negative `--quota-backend-bytes`).
    pub fn backend_quota_bytes(&self) -> Option<u64> {
        match self.quota_backend_bytes {
            q if q < 0 => None,
            0 => Some(DEFAULT_QUOTA_BACKEND_BYTES),
            q => Some(q as u64),
        }
    }

    /// Socket addresses for `--listen-client-urls`.
    pub fn listen_client_addrs(&self) -> Vec<SocketAddr> {
        self.listen_client_urls
            .iter()
            .filter_map(Url::socket_addr)
            .collect()
    }

    /// Socket addresses for `--listen-peer-urls`.
    pub fn listen_peer_addrs(&self) -> Vec<SocketAddr> {
        self.listen_peer_urls
            .iter()
            .filter_map(Url::socket_addr)
            .collect()
    }

    /// `--initial-cluster` parsed like etcd's `types.NewURLsMap`: members sorted
    /// by name, each member's URLs sorted. Errors read like etcd's
    /// `error setting up initial cluster: ...`.
    pub fn initial_cluster_members(&self) -> Result<Vec<InitialClusterMember>, ConfigError> {
        parse_initial_cluster(&self.initial_cluster)
            .map_err(|e| ConfigError::Invalid(format!("error setting up initial cluster: {e}")))
    }

    /// etcd's `ServerConfig.VerifyBootstrap`, for a new member without data:
    /// the local name is in `--initial-cluster`, its URLs there match
    /// `--initial-advertise-peer-urls`, and no URL appears twice. Unlike etcd,
    /// host names are not resolved through DNS when the texts differ (IP
    /// literals are compared as addresses; `localhost` is never resolved,
    /// as in etcd).
    pub fn verify_bootstrap(&self) -> Result<(), ConfigError> {
        let members = self.initial_cluster_members()?;
        let Some(local) = members.iter().find(|m| m.name == self.name) else {
            return Err(ConfigError::Invalid(format!(
                "couldn't find local name {:?} in the initial cluster configuration",
                self.name
            )));
        };
        advertise_matches_cluster(
            &self.name,
            &local.peer_urls,
            &self.initial_advertise_peer_urls,
        )
        .map_err(ConfigError::Invalid)?;
        let mut seen = BTreeSet::new();
        for m in &members {
            for u in &m.peer_urls {
                if !seen.insert(u.as_str()) {
                    return Err(ConfigError::Invalid(format!(
                        "initial cluster {} has duplicate url",
                        urls_map_string(
                            members.iter().map(|m| (m.name.as_str(), &m.peer_urls[..]))
                        )
                    )));
                }
            }
        }
        if members.is_empty() {
            return Err(ConfigError::Invalid(
                "initial cluster unset and no discovery URL found".to_string(),
            ));
        }
        Ok(())
    }

    /// The member and cluster ids a brand-new cluster gets from this
    /// configuration (etcd's `NewClusterFromURLsMap` after `VerifyBootstrap`).
    /// Only meaningful for `--initial-cluster-state new` without existing data:
    /// a member joining an existing cluster gets its id from the cluster.
    pub fn bootstrap_cluster(&self) -> Result<BootstrapCluster, ConfigError> {
        self.verify_bootstrap()?;
        let members = self.initial_cluster_members()?;
        let mut out = Vec::with_capacity(members.len());
        let mut ids = BTreeSet::new();
        for m in members {
            let texts: Vec<&str> = m.peer_urls.iter().map(Url::as_str).collect();
            let id = compute_member_id(&texts, &self.initial_cluster_token, None);
            if !ids.insert(id) {
                return Err(ConfigError::Invalid(format!(
                    "member exists with identical ID {id:x}"
                )));
            }
            if id == 0 {
                return Err(ConfigError::Invalid(
                    "cannot use 0 as member id".to_string(),
                ));
            }
            out.push(BootstrapMember {
                name: m.name,
                peer_urls: m.peer_urls,
                id,
            });
        }
        let member_ids: Vec<u64> = out.iter().map(|m| m.id).collect();
        let local_member_id = out
            .iter()
            .find(|m| m.name == self.name)
            .map(|m| m.id)
            .expect("verify_bootstrap checked the local member");
        Ok(BootstrapCluster {
            cluster_id: compute_cluster_id(&member_ids),
            local_member_id,
            members: out,
        })
    }
}

/// One `name=url,...` entry group of `--initial-cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialClusterMember {
    pub name: String,
    pub peer_urls: Vec<Url>,
}

/// A member of a cluster being bootstrapped, with its etcd member id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapMember {
    pub name: String,
    pub peer_urls: Vec<Url>,
    pub id: u64,
}

/// The ids a new cluster is born with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapCluster {
    pub cluster_id: u64,
    pub local_member_id: u64,
    /// Sorted by name.
    pub members: Vec<BootstrapMember>,
}

/// etcd's `membership.computeMemberId`: SHA-1 over the peer URLs (sorted,
/// concatenated without separator), then the cluster token, then (only for
/// members added at runtime) the decimal Unix time; the id is the first 8
/// bytes of the digest, big-endian.
pub fn compute_member_id<S: AsRef<str>>(
    peer_urls: &[S],
    cluster_token: &str,
    now_unix_secs: Option<i64>,
) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(AsRef::as_ref).collect();
    urls.sort_unstable();
    let mut h = sha1_smol::Sha1::new();
    for u in urls {
        h.update(u.as_bytes());
    }
    h.update(cluster_token.as_bytes());
    if let Some(t) = now_unix_secs {
        h.update(t.to_string().as_bytes());
    }
    first_u64(&h.digest().bytes())
}

/// etcd's `RaftCluster.genID`: SHA-1 over the member ids, sorted ascending,
/// each as 8 big-endian bytes; the id is the first 8 bytes of the digest.
pub fn compute_cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut h = sha1_smol::Sha1::new();
    for id in ids {
        h.update(&id.to_be_bytes());
    }
    first_u64(&h.digest().bytes())
}

fn first_u64(digest: &[u8; 20]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b)
}

/// A configuration error. `Display` is the complete line to print on stderr;
/// [`ConfigError::exit_code`] is the process exit code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A command-line syntax or value error, worded exactly as Go's `flag`
    /// package words it (etcd prints it, then its usage, and exits 2).
    #[error("{0}")]
    Usage(String),
    /// An etcd flag ferrocd does not implement yet, given on the command line.
    #[error("ferrocd: flag --{0} is an etcd flag that ferrocd does not implement yet")]
    UnimplementedFlag(String),
    /// An `ETCD_*` variable for an etcd flag ferrocd does not implement yet.
    #[error(
        "ferrocd: environment variable {var} sets etcd flag --{flag}, which ferrocd does not implement yet"
    )]
    UnimplementedEnv { var: String, flag: String },
    /// A config-file key for an etcd setting ferrocd does not implement yet.
    #[error(
        "ferrocd: config file {path:?}: key {key:?} is an etcd setting that ferrocd does not implement yet"
    )]
    UnimplementedKey { path: String, key: String },
    /// `etcd gateway` / `etcd grpc-proxy`.
    #[error("ferrocd: {0:?} is an etcd command that ferrocd does not implement yet")]
    UnimplementedCommand(String),
    /// An invalid `--log-level` (etcd 3.5 panics on it, so exits 2).
    #[error("ferrocd: unrecognized level: {0:?}")]
    InvalidLogLevel(String),
    /// Any other invalid configuration; etcd logs it and exits 1. The text is
    /// etcd's where etcd has one.
    #[error("ferrocd: {0}")]
    Invalid(String),
}

impl ConfigError {
    /// The exit code etcd uses for this kind of error: 2 for command-line
    /// errors (Go's `flag` package), 1 for configuration errors.
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Usage(_)
            | ConfigError::UnimplementedFlag(_)
            | ConfigError::UnimplementedCommand(_)
            | ConfigError::InvalidLogLevel(_) => 2,
            ConfigError::UnimplementedEnv { .. }
            | ConfigError::UnimplementedKey { .. }
            | ConfigError::Invalid(_) => 1,
        }
    }

    /// Whether the short usage text ([`USAGE`]) should follow the message,
    /// as Go's `flag` package prints it after a parse error.
    pub fn wants_usage(&self) -> bool {
        matches!(self, ConfigError::Usage(_))
    }
}

// ---------------------------------------------------------------------------
// URLs

/// A parsed `http://host:port` URL as etcd's `types.NewURLs` accepts it.
/// Ordered and compared by its text (`url.URL.String()` in Go), which is what
/// etcd sorts by and hashes into member ids.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Url {
    text: String,
    host: String,
    port: u16,
}

impl Url {
    /// Parses one URL (surrounding white space is trimmed, as etcd does).
    /// Errors are etcd's `types.NewURLs` / Go `url.Parse` texts where they
    /// exist; `https` and `unix` URLs are refused as not implemented yet.
    pub fn parse(input: &str) -> Result<Url, String> {
        let input = input.trim();
        let scheme_end = go_scheme_end(input).map_err(|e| format!("parse {input:?}: {e}"))?;
        let (scheme, rest) = match scheme_end {
            Some(i) => (input[..i].to_ascii_lowercase(), &input[i + 1..]),
            None => {
                let first_segment = input.split('/').next().unwrap_or("");
                if !input.starts_with('/') && first_segment.contains(':') {
                    return Err(format!(
                        "parse {input:?}: first path segment in URL cannot contain colon"
                    ));
                }
                (String::new(), input)
            }
        };
        match scheme.as_str() {
            "http" => {}
            "https" => {
                return Err(format!(
                    "URL scheme https (TLS) is not implemented by ferrocd yet: {input}"
                ))
            }
            "unix" | "unixs" => {
                return Err(format!(
                    "URL scheme {scheme} (unix sockets) is not implemented by ferrocd yet: {input}"
                ))
            }
            _ => {
                return Err(format!(
                    "URL scheme must be http, https, unix, or unixs: {input}"
                ))
            }
        }
        let not_host_port = || format!("URL address does not have the form \"host:port\": {input}");
        let Some(after) = rest.strip_prefix("//") else {
            return Err(not_host_port());
        };
        let auth_end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (authority, tail) = after.split_at(auth_end);
        if authority.contains('@') {
            return Err(format!("URL must not contain user information: {input}"));
        }
        let (host, port_text) = if let Some(bracketed) = authority.strip_prefix('[') {
            let Some(close) = bracketed.find(']') else {
                return Err(format!("parse {input:?}: missing ']' in host"));
            };
            let host = &bracketed[..close];
            let after_host = &bracketed[close + 1..];
            if host.parse::<Ipv6Addr>().is_err() {
                return Err(format!("invalid IPv6 address in URL: {input}"));
            }
            match after_host.strip_prefix(':') {
                Some(p) => (host, p),
                None if after_host.is_empty() => return Err(not_host_port()),
                None => {
                    return Err(format!(
                        "parse {input:?}: invalid port {after_host:?} after host"
                    ))
                }
            }
        } else {
            match authority.rfind(':') {
                Some(i) => (&authority[..i], &authority[i + 1..]),
                None => return Err(not_host_port()),
            }
        };
        if !port_text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "parse {input:?}: invalid port \":{port_text}\" after host"
            ));
        }
        if let Some(c) = host
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
        {
            return Err(format!(
                "parse {input:?}: invalid character {:?} in host name",
                c.to_string()
            ));
        }
        if host.contains(':') && !authority.starts_with('[') {
            // Go's net.SplitHostPort: "too many colons in address".
            return Err(not_host_port());
        }
        if port_text.is_empty() {
            return Err(not_host_port());
        }
        let port: u16 = port_text
            .parse()
            .map_err(|_| format!("invalid port {port_text:?} in URL (must be 0-65535): {input}"))?;
        if tail.starts_with('/') {
            return Err(format!("URL must not contain a path: {input}"));
        }
        if !tail.is_empty() {
            return Err(format!("URL must not contain a query or fragment: {input}"));
        }
        Ok(Url {
            text: format!("{scheme}://{authority}"),
            host: host.to_string(),
            port,
        })
    }

    /// The URL as text, e.g. `http://127.0.0.1:2379`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Always `http` for now.
    pub fn scheme(&self) -> &str {
        "http"
    }

    /// The host without IPv6 brackets (may be empty or a DNS name).
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The IP address for an IP-literal host, or 127.0.0.1 for `localhost`.
    pub fn ip(&self) -> Option<IpAddr> {
        if self.host == "localhost" {
            return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        self.host.parse().ok()
    }

    /// `ip():port`, when the host needs no DNS.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.ip().map(|ip| SocketAddr::new(ip, self.port))
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Go's `url.getScheme`: `Ok(Some(i))` when `input[..i]` is a scheme followed
/// by `:`, `Ok(None)` when there is none.
fn go_scheme_end(input: &str) -> Result<Option<usize>, &'static str> {
    for (i, c) in input.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' => {
                if i == 0 {
                    return Ok(None);
                }
            }
            b':' => {
                if i == 0 {
                    return Err("missing protocol scheme");
                }
                return Ok(Some(i));
            }
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// etcd's `types.NewURLs` over a comma-separated list: every entry parsed,
/// the list sorted by text.
pub fn parse_url_list(s: &str) -> Result<Vec<Url>, String> {
    let mut urls = s
        .split(',')
        .map(Url::parse)
        .collect::<Result<Vec<_>, _>>()?;
    urls.sort();
    Ok(urls)
}

/// etcd's `flags.UniqueURLs.Set`: like [`parse_url_list`], de-duplicated.
fn parse_unique_url_list(s: &str) -> Result<Vec<Url>, String> {
    let mut urls = parse_url_list(s)?;
    urls.dedup();
    Ok(urls)
}

/// etcd's `types.NewURLsMap`: `name=url,name=url,...`; one name may repeat.
pub fn parse_initial_cluster(s: &str) -> Result<Vec<InitialClusterMember>, String> {
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for entry in s.split(',') {
        if entry.is_empty() {
            continue;
        }
        let (name, url) = entry.split_once('=').unwrap_or((entry, ""));
        groups.entry(name).or_default().push(url);
    }
    groups
        .into_iter()
        .map(|(name, urls)| {
            let mut peer_urls = urls
                .into_iter()
                .map(Url::parse)
                .collect::<Result<Vec<_>, _>>()?;
            peer_urls.sort();
            Ok(InitialClusterMember {
                name: name.to_string(),
                peer_urls,
            })
        })
        .collect()
}

/// `types.URLsMap.String()`: `name=url` pairs, sorted, comma-joined.
fn urls_map_string<'a>(members: impl Iterator<Item = (&'a str, &'a [Url])>) -> String {
    let mut pairs: Vec<String> = members
        .flat_map(|(name, urls)| urls.iter().map(move |u| format!("{name}={u}")))
        .collect();
    pairs.sort();
    pairs.join(",")
}

/// Go's `%q` of a `[]string`.
fn go_quote_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(" "))
}

/// etcd's `netutil.URLStringsEqual`, without DNS: when the texts differ, IP
/// literals are normalized (`localhost` is left as is, as etcd does).
fn urls_strings_equal(a: &[&str], b: &[&str]) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!(
            "len({}) != len({})",
            go_quote_list(a),
            go_quote_list(b)
        ));
    }
    let mut a: Vec<String> = a.iter().map(|s| s.to_string()).collect();
    let mut b: Vec<String> = b.iter().map(|s| s.to_string()).collect();
    a.sort();
    b.sort();
    if a == b {
        return Ok(());
    }
    let resolve = |s: &String| -> String {
        match Url::parse(s) {
            Ok(u) if u.host != "localhost" => match u.host.parse::<IpAddr>() {
                Ok(ip) => format!("{}://{}", u.scheme(), SocketAddr::new(ip, u.port)),
                Err(_) => s.clone(),
            },
            _ => s.clone(),
        }
    };
    let mut ra: Vec<String> = a.iter().map(resolve).collect();
    let mut rb: Vec<String> = b.iter().map(resolve).collect();
    ra.sort();
    rb.sort();
    for (x, y) in ra.iter().zip(&rb) {
        if x != y {
            return Err(format!("resolved urls: {x:?} != {y:?}"));
        }
    }
    Ok(())
}

/// etcd's `ServerConfig.advertiseMatchesCluster`.
fn advertise_matches_cluster(
    name: &str,
    cluster_urls: &[Url],
    advertise: &[Url],
) -> Result<(), String> {
    let mut urls: Vec<&str> = cluster_urls.iter().map(Url::as_str).collect();
    let mut apurls: Vec<&str> = advertise.iter().map(Url::as_str).collect();
    urls.sort();
    apurls.sort();
    let err = match urls_strings_equal(&apurls, &urls) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let init: BTreeSet<&str> = urls.iter().copied().collect();
    let ap: BTreeSet<&str> = apurls.iter().copied().collect();
    let missing: Vec<String> = init
        .difference(&ap)
        .map(|u| format!("{name}={u}"))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "--initial-cluster has {} but missing from --initial-advertise-peer-urls={} ({err})",
            missing.join(","),
            apurls.join(",")
        ));
    }
    let umap = urls_map_string(std::iter::once((name, advertise)));
    let missing: Vec<&str> = ap.difference(&init).copied().collect();
    if !missing.is_empty() {
        return Err(format!(
            "--initial-advertise-peer-urls has {} but missing from --initial-cluster={umap}",
            missing.join(",")
        ));
    }
    Err(format!(
        "failed to resolve {} to match --initial-cluster={umap} ({err})",
        apurls.join(",")
    ))
}

// ---------------------------------------------------------------------------
// The etcd 3.5 flag set

/// A setting ferrocd implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setting {
    ConfigFile,
    Version,
    Name,
    DataDir,
    ListenClientUrls,
    AdvertiseClientUrls,
    ListenPeerUrls,
    InitialAdvertisePeerUrls,
    InitialCluster,
    InitialClusterState,
    InitialClusterToken,
    SnapshotCount,
    HeartbeatInterval,
    ElectionTimeout,
    QuotaBackendBytes,
    MaxRequestBytes,
    MaxTxnOps,
    LogLevel,
    Logger,
    WatchProgressNotifyInterval,
    AutoCompactionMode,
    AutoCompactionRetention,
    ListenMetricsUrls,
}

/// The etcd 3.5 flags ferrocd implements (23).
const IMPLEMENTED_FLAGS: &[(&str, Setting)] = &[
    ("advertise-client-urls", Setting::AdvertiseClientUrls),
    ("auto-compaction-mode", Setting::AutoCompactionMode),
    (
        "auto-compaction-retention",
        Setting::AutoCompactionRetention,
    ),
    ("config-file", Setting::ConfigFile),
    ("data-dir", Setting::DataDir),
    ("election-timeout", Setting::ElectionTimeout),
    (
        "experimental-watch-progress-notify-interval",
        Setting::WatchProgressNotifyInterval,
    ),
    ("heartbeat-interval", Setting::HeartbeatInterval),
    (
        "initial-advertise-peer-urls",
        Setting::InitialAdvertisePeerUrls,
    ),
    ("initial-cluster", Setting::InitialCluster),
    ("initial-cluster-state", Setting::InitialClusterState),
    ("initial-cluster-token", Setting::InitialClusterToken),
    ("listen-client-urls", Setting::ListenClientUrls),
    ("listen-metrics-urls", Setting::ListenMetricsUrls),
    ("listen-peer-urls", Setting::ListenPeerUrls),
    ("log-level", Setting::LogLevel),
    ("logger", Setting::Logger),
    ("max-request-bytes", Setting::MaxRequestBytes),
    ("max-txn-ops", Setting::MaxTxnOps),
    ("name", Setting::Name),
    ("quota-backend-bytes", Setting::QuotaBackendBytes),
    ("snapshot-count", Setting::SnapshotCount),
    ("version", Setting::Version),
];

/// etcd's `ignored` flags (pre-v2 leftovers): accepted without a value,
/// warned about, and otherwise ignored, as etcd does.
const IGNORED_FLAGS: &[&str] = &[
    "cluster-active-size",
    "cluster-remove-delay",
    "cluster-sync-interval",
    "config",
    "force",
    "max-result-buffer",
    "max-retry-attempts",
    "peer-heartbeat-interval",
    "peer-election-timeout",
    "retry-interval",
    "snapshot",
    "v",
    "vv",
    "test.coverprofile",
    "test.outputdir",
];

/// Every etcd 3.5 flag ferrocd refuses because it does not implement it yet
/// (89; from `newConfig` in etcd v3.5.33's `server/etcdmain/config.go`).
pub const UNIMPLEMENTED_ETCD_FLAGS: &[&str] = &[
    "auth-token",
    "auth-token-ttl",
    "auto-tls",
    "backend-batch-interval",
    "backend-batch-limit",
    "backend-bbolt-freelist-type",
    "bcrypt-cost",
    "cert-file",
    "cipher-suites",
    "client-cert-allowed-hostname",
    "client-cert-auth",
    "client-cert-file",
    "client-crl-file",
    "client-key-file",
    "cors",
    "discovery",
    "discovery-fallback",
    "discovery-proxy",
    "discovery-srv",
    "discovery-srv-name",
    "enable-grpc-gateway",
    "enable-log-rotation",
    "enable-pprof",
    "enable-v2",
    "experimental-bootstrap-defrag-threshold-megabytes",
    "experimental-compact-hash-check-enabled",
    "experimental-compact-hash-check-time",
    "experimental-compaction-batch-limit",
    "experimental-compaction-sleep-interval",
    "experimental-corrupt-check-time",
    "experimental-distributed-tracing-address",
    "experimental-distributed-tracing-instance-id",
    "experimental-distributed-tracing-sampling-rate",
    "experimental-distributed-tracing-service-name",
    "experimental-downgrade-check-time",
    "experimental-enable-distributed-tracing",
    "experimental-enable-lease-checkpoint",
    "experimental-enable-lease-checkpoint-persist",
    "experimental-enable-v2v3",
    "experimental-initial-corrupt-check",
    "experimental-memory-mlock",
    "experimental-peer-skip-client-san-verification",
    "experimental-snapshot-catchup-entries",
    "experimental-stop-grpc-service-on-defrag",
    "experimental-txn-mode-write-with-shared-buffer",
    "experimental-warning-apply-duration",
    "force-new-cluster",
    "grpc-keepalive-interval",
    "grpc-keepalive-min-time",
    "grpc-keepalive-timeout",
    "host-whitelist",
    "initial-election-tick-advance",
    "key-file",
    "listen-client-http-urls",
    "log-outputs",
    "log-rotation-config-json",
    "max-concurrent-streams",
    "max-snapshots",
    "max-wals",
    "metrics",
    "peer-auto-tls",
    "peer-cert-allowed-cn",
    "peer-cert-allowed-hostname",
    "peer-cert-file",
    "peer-client-cert-auth",
    "peer-client-cert-file",
    "peer-client-key-file",
    "peer-crl-file",
    "peer-key-file",
    "peer-trusted-ca-file",
    "pre-vote",
    "proxy",
    "proxy-dial-timeout",
    "proxy-failure-wait",
    "proxy-read-timeout",
    "proxy-refresh-interval",
    "proxy-write-timeout",
    "raft-read-timeout",
    "raft-write-timeout",
    "self-signed-cert-validity",
    "socket-reuse-address",
    "socket-reuse-port",
    "strict-reconfig-check",
    "tls-max-version",
    "tls-min-version",
    "trusted-ca-file",
    "unsafe-no-fsync",
    "v2-deprecation",
    "wal-dir",
];

/// The etcd 3.5 config-file keys ferrocd implements (20).
const IMPLEMENTED_CONFIG_KEYS: &[(&str, Setting)] = &[
    ("advertise-client-urls", Setting::AdvertiseClientUrls),
    ("auto-compaction-mode", Setting::AutoCompactionMode),
    (
        "auto-compaction-retention",
        Setting::AutoCompactionRetention,
    ),
    ("data-dir", Setting::DataDir),
    ("election-timeout", Setting::ElectionTimeout),
    (
        "experimental-watch-progress-notify-interval",
        Setting::WatchProgressNotifyInterval,
    ),
    ("heartbeat-interval", Setting::HeartbeatInterval),
    (
        "initial-advertise-peer-urls",
        Setting::InitialAdvertisePeerUrls,
    ),
    ("initial-cluster", Setting::InitialCluster),
    ("initial-cluster-state", Setting::InitialClusterState),
    ("initial-cluster-token", Setting::InitialClusterToken),
    ("listen-client-urls", Setting::ListenClientUrls),
    ("listen-metrics-urls", Setting::ListenMetricsUrls),
    ("listen-peer-urls", Setting::ListenPeerUrls),
    ("log-level", Setting::LogLevel),
    ("logger", Setting::Logger),
    ("max-request-bytes", Setting::MaxRequestBytes),
    ("max-txn-ops", Setting::MaxTxnOps),
    ("name", Setting::Name),
    ("quota-backend-bytes", Setting::QuotaBackendBytes),
    ("snapshot-count", Setting::SnapshotCount),
];

/// Every etcd 3.5 config-file key ferrocd refuses because it does not
/// implement it yet (68; the JSON tags of etcd v3.5.33's `embed.Config`,
/// `configJSON` and etcdmain's `configProxy`). A key whose value is empty
/// (`null`, `""`, `[]`, or a mapping of only such values and `false`) is
/// accepted as "not set".
pub const UNIMPLEMENTED_ETCD_CONFIG_KEYS: &[&str] = &[
    "auth-token",
    "auth-token-ttl",
    "backend-batch-interval",
    "backend-batch-limit",
    "backend-bbolt-freelist-type",
    "bcrypt-cost",
    "cipher-suites",
    "client-transport-security",
    "cors",
    "discovery",
    "discovery-fallback",
    "discovery-proxy",
    "discovery-srv",
    "discovery-srv-name",
    "enable-grpc-gateway",
    "enable-log-rotation",
    "enable-pprof",
    "enable-v2",
    "experimental-bootstrap-defrag-threshold-megabytes",
    "experimental-compact-hash-check-enabled",
    "experimental-compact-hash-check-time",
    "experimental-compaction-batch-limit",
    "experimental-compaction-sleep-interval",
    "experimental-corrupt-check-time",
    "experimental-distributed-tracing-address",
    "experimental-distributed-tracing-instance-id",
    "experimental-distributed-tracing-sampling-rate",
    "experimental-distributed-tracing-service-name",
    "experimental-downgrade-check-time",
    "experimental-enable-distributed-tracing",
    "experimental-enable-lease-checkpoint",
    "experimental-enable-lease-checkpoint-persist",
    "experimental-enable-v2v3",
    "experimental-initial-corrupt-check",
    "experimental-memory-mlock",
    "experimental-snapshot-catch-up-entries",
    "experimental-stop-grpc-service-on-defrag",
    "experimental-txn-mode-write-with-shared-buffer",
    "experimental-warning-apply-duration",
    "force-new-cluster",
    "grpc-keepalive-interval",
    "grpc-keepalive-min-time",
    "grpc-keepalive-timeout",
    "host-whitelist",
    "initial-election-tick-advance",
    "listen-client-http-urls",
    "log-outputs",
    "log-rotation-config-json",
    "max-concurrent-streams",
    "max-snapshots",
    "max-wals",
    "metrics",
    "peer-transport-security",
    "pre-vote",
    "proxy",
    "proxy-dial-timeout",
    "proxy-failure-wait",
    "proxy-read-timeout",
    "proxy-refresh-interval",
    "proxy-write-timeout",
    "self-signed-cert-validity",
    "socket-options",
    "strict-reconfig-check",
    "tls-max-version",
    "tls-min-version",
    "unsafe-no-fsync",
    "v2-deprecation",
    "wal-dir",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    Implemented(Setting),
    Ignored,
    Unimplemented,
}

fn etcd_flag(name: &str) -> Option<FlagKind> {
    if let Some((_, s)) = IMPLEMENTED_FLAGS.iter().find(|(n, _)| *n == name) {
        return Some(FlagKind::Implemented(*s));
    }
    if IGNORED_FLAGS.contains(&name) {
        return Some(FlagKind::Ignored);
    }
    if UNIMPLEMENTED_ETCD_FLAGS.contains(&name) {
        return Some(FlagKind::Unimplemented);
    }
    None
}

/// Every etcd 3.5 flag name, sorted like Go's `FlagSet.VisitAll`.
fn all_etcd_flags_sorted() -> Vec<&'static str> {
    let mut all: Vec<&'static str> = IMPLEMENTED_FLAGS
        .iter()
        .map(|(n, _)| *n)
        .chain(IGNORED_FLAGS.iter().copied())
        .chain(UNIMPLEMENTED_ETCD_FLAGS.iter().copied())
        .collect();
    all.sort_unstable();
    all
}

/// etcd's `flags.FlagToEnv("ETCD", name)`.
fn flag_to_env(name: &str) -> String {
    format!("ETCD_{}", name.replace('-', "_").to_uppercase())
}

// ---------------------------------------------------------------------------
// Go number parsing (strconv with base 0, as Go's flag package uses)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumError {
    Syntax,
    Range,
}

impl NumError {
    /// The text Go's `flag` package prints for it.
    fn go_text(self) -> &'static str {
        match self {
            NumError::Syntax => "parse error",
            NumError::Range => "value out of range",
        }
    }
}

fn go_lower(c: u8) -> u8 {
    c | (b'x' - b'X')
}

/// Go's `strconv.underscoreOK`.
fn go_underscore_ok(s: &str) -> bool {
    let mut s = s.as_bytes();
    let mut saw = b'^';
    let mut i = 0;
    if !s.is_empty() && (s[0] == b'-' || s[0] == b'+') {
        s = &s[1..];
    }
    let mut hex = false;
    if s.len() >= 2 && s[0] == b'0' && matches!(go_lower(s[1]), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = go_lower(s[1]) == b'x';
    }
    while i < s.len() {
        let c = s[i];
        if c.is_ascii_digit() || (hex && (b'a'..=b'f').contains(&go_lower(c))) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
        i += 1;
    }
    saw != b'_'
}

/// Go's `strconv.ParseUint(s, 0, 64)`.
fn go_parse_u64(s0: &str) -> Result<u64, NumError> {
    let bytes = s0.as_bytes();
    if bytes.is_empty() {
        return Err(NumError::Syntax);
    }
    let (base, digits): (u64, &[u8]) = if bytes[0] == b'0' {
        match bytes.get(1).map(|&c| go_lower(c)) {
            Some(b'b') if bytes.len() >= 3 => (2, &bytes[2..]),
            Some(b'o') if bytes.len() >= 3 => (8, &bytes[2..]),
            Some(b'x') if bytes.len() >= 3 => (16, &bytes[2..]),
            _ => (8, &bytes[1..]),
        }
    } else {
        (10, bytes)
    };
    let cutoff = u64::MAX / base + 1;
    let mut n: u64 = 0;
    let mut underscores = false;
    for &c in digits {
        let d = if c == b'_' {
            underscores = true;
            continue;
        } else if c.is_ascii_digit() {
            c - b'0'
        } else if go_lower(c).is_ascii_lowercase() {
            go_lower(c) - b'a' + 10
        } else {
            return Err(NumError::Syntax);
        };
        if u64::from(d) >= base {
            return Err(NumError::Syntax);
        }
        if n >= cutoff {
            return Err(NumError::Range);
        }
        n *= base;
        n = n.checked_add(u64::from(d)).ok_or(NumError::Range)?;
    }
    if underscores && !go_underscore_ok(s0) {
        return Err(NumError::Syntax);
    }
    Ok(n)
}

/// Go's `strconv.ParseInt(s, 0, 64)`.
fn go_parse_i64(s0: &str) -> Result<i64, NumError> {
    if s0.is_empty() {
        return Err(NumError::Syntax);
    }
    let (neg, s) = match s0.as_bytes()[0] {
        b'+' => (false, &s0[1..]),
        b'-' => (true, &s0[1..]),
        _ => (false, s0),
    };
    let un = match go_parse_u64(s) {
        Ok(v) => v,
        Err(NumError::Range) => u64::MAX,
        Err(e) => return Err(e),
    };
    let cutoff = 1u64 << 63;
    if !neg && un >= cutoff {
        return Err(NumError::Range);
    }
    if neg && un > cutoff {
        return Err(NumError::Range);
    }
    Ok(if neg {
        (un as i64).wrapping_neg()
    } else {
        un as i64
    })
}

/// Go's `strconv.ParseBool`.
fn go_parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Parsing

/// The settings as etcd's flag values / `embed.Config` hold them before
/// validation.
#[derive(Debug, Clone)]
struct Values {
    name: String,
    data_dir: String,
    listen_client_urls: Vec<Url>,
    listen_metrics_urls: Vec<Url>,
    advertise_client_urls: Vec<Url>,
    listen_peer_urls: Vec<Url>,
    initial_advertise_peer_urls: Vec<Url>,
    initial_cluster: String,
    initial_cluster_state: String,
    initial_cluster_token: String,
    snapshot_count: u64,
    heartbeat_interval_ms: u64,
    election_timeout_ms: u64,
    quota_backend_bytes: i64,
    max_request_bytes: u64,
    max_txn_ops: u64,
    log_level: String,
    logger: String,
    watch_progress_notify_interval_ns: u64,
    auto_compaction_mode: String,
    auto_compaction_retention: String,
}

impl Default for Values {
    fn default() -> Self {
        let urls = |s: &str| parse_unique_url_list(s).expect("default URLs parse");
        Values {
            name: DEFAULT_NAME.to_string(),
            data_dir: String::new(),
            listen_client_urls: urls(DEFAULT_LISTEN_CLIENT_URLS),
            listen_metrics_urls: Vec::new(),
            advertise_client_urls: urls(DEFAULT_ADVERTISE_CLIENT_URLS),
            listen_peer_urls: urls(DEFAULT_LISTEN_PEER_URLS),
            initial_advertise_peer_urls: urls(DEFAULT_INITIAL_ADVERTISE_PEER_URLS),
            initial_cluster: DEFAULT_INITIAL_CLUSTER.to_string(),
            initial_cluster_state: "new".to_string(),
            initial_cluster_token: DEFAULT_INITIAL_CLUSTER_TOKEN.to_string(),
            snapshot_count: DEFAULT_SNAPSHOT_COUNT,
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            election_timeout_ms: DEFAULT_ELECTION_TIMEOUT_MS,
            quota_backend_bytes: 0,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
            log_level: "info".to_string(),
            logger: "zap".to_string(),
            watch_progress_notify_interval_ns: DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL_NS,
            auto_compaction_mode: "periodic".to_string(),
            auto_compaction_retention: "0".to_string(),
        }
    }
}

impl Values {
    /// The flag value's `Set(val)`; the error is the text Go appends after
    /// `invalid value "..." for flag -x: `.
    fn set(&mut self, setting: Setting, val: &str) -> Result<(), String> {
        let uint = |v: &str| go_parse_u64(v).map_err(|e| e.go_text().to_string());
        // etcd's UniqueURLs flag values accept "" as an exception that keeps
        // the current URLs.
        let urls = |target: &mut Vec<Url>, v: &str| -> Result<(), String> {
            if !v.is_empty() {
                *target = parse_unique_url_list(v)?;
            }
            Ok(())
        };
        match setting {
            Setting::Name => self.name = val.to_string(),
            Setting::DataDir => self.data_dir = val.to_string(),
            Setting::ListenClientUrls => urls(&mut self.listen_client_urls, val)?,
            Setting::ListenMetricsUrls => urls(&mut self.listen_metrics_urls, val)?,
            Setting::AdvertiseClientUrls => urls(&mut self.advertise_client_urls, val)?,
            Setting::ListenPeerUrls => urls(&mut self.listen_peer_urls, val)?,
            Setting::InitialAdvertisePeerUrls => urls(&mut self.initial_advertise_peer_urls, val)?,
            Setting::InitialCluster => self.initial_cluster = val.to_string(),
            Setting::InitialClusterState => match val {
                "new" | "existing" => self.initial_cluster_state = val.to_string(),
                _ => return Err("invalid value".to_string()),
            },
            Setting::InitialClusterToken => self.initial_cluster_token = val.to_string(),
            Setting::SnapshotCount => self.snapshot_count = uint(val)?,
            Setting::HeartbeatInterval => self.heartbeat_interval_ms = uint(val)?,
            Setting::ElectionTimeout => self.election_timeout_ms = uint(val)?,
            Setting::QuotaBackendBytes => {
                self.quota_backend_bytes = go_parse_i64(val).map_err(|e| e.go_text().to_string())?
            }
            Setting::MaxRequestBytes => self.max_request_bytes = uint(val)?,
            Setting::MaxTxnOps => self.max_txn_ops = uint(val)?,
            Setting::LogLevel => self.log_level = val.to_string(),
            Setting::Logger => self.logger = val.to_string(),
            Setting::AutoCompactionMode => self.auto_compaction_mode = val.to_string(),
            Setting::AutoCompactionRetention => self.auto_compaction_retention = val.to_string(),
            Setting::WatchProgressNotifyInterval => {
                let ns = go_parse_duration_ns(val).ok_or_else(|| "parse error".to_string())?;
                // A negative interval is refused by etcd's config validation.
                self.watch_progress_notify_interval_ns =
                    u64::try_from(ns).map_err(|_| "parse error".to_string())?;
            }
            Setting::ConfigFile | Setting::Version => {
                unreachable!("handled by the command-line parser")
            }
        }
        Ok(())
    }
}

/// What the command line said, after Go-style parsing.
#[derive(Default)]
struct CommandLine {
    values: Values,
    /// Names of the etcd flags given (Go's `FlagSet.Visit`).
    set: BTreeSet<&'static str>,
    config_file: Option<String>,
    version: bool,
    cores: Option<usize>,
    warnings: Vec<String>,
}

enum Parsed {
    Flags(Box<CommandLine>),
    Help,
}

fn parse_command_line(args: &[String]) -> Result<Parsed, ConfigError> {
    let mut cl = CommandLine::default();
    let mut i = 0;
    while i < args.len() {
        let s = args[i].as_str();
        if s.len() < 2 || !s.starts_with('-') {
            break;
        }
        let minuses = if s.as_bytes()[1] == b'-' {
            if s.len() == 2 {
                i += 1; // "--" terminates the flags
                break;
            }
            2
        } else {
            1
        };
        let body = &s[minuses..];
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(ConfigError::Usage(format!("bad flag syntax: {s}")));
        }
        i += 1;
        let (name, inline_value) = match body.find('=') {
            Some(p) => (&body[..p], Some(&body[p + 1..])),
            None => (body, None),
        };
        // A flag that needs a value takes the next argument when it has none.
        let take_value = |i: &mut usize| -> Result<String, ConfigError> {
            if let Some(v) = inline_value {
                return Ok(v.to_string());
            }
            match args.get(*i) {
                Some(v) => {
                    *i += 1;
                    Ok(v.clone())
                }
                None => Err(ConfigError::Usage(format!(
                    "flag needs an argument: -{name}"
                ))),
            }
        };
        if name == "cores" {
            let v = take_value(&mut i)?;
            let n = parse_cores(&v).map_err(|e| {
                ConfigError::Usage(format!("invalid value {v:?} for flag -cores: {e}"))
            })?;
            cl.cores = Some(n);
            continue;
        }
        let Some(kind) = etcd_flag(name) else {
            if name == "help" || name == "h" {
                return Ok(Parsed::Help);
            }
            return Err(ConfigError::Usage(format!(
                "flag provided but not defined: -{name}"
            )));
        };
        let static_name = static_flag_name(name);
        match kind {
            FlagKind::Unimplemented => {
                return Err(ConfigError::UnimplementedFlag(name.to_string()))
            }
            FlagKind::Ignored => {
                cl.warnings
                    .push(format!("flag --{name} is no longer supported - ignoring"));
            }
            FlagKind::Implemented(Setting::Version) => {
                let v = inline_value.unwrap_or("true");
                cl.version = go_parse_bool(v).ok_or_else(|| {
                    ConfigError::Usage(format!(
                        "invalid boolean value {v:?} for -{name}: parse error"
                    ))
                })?;
            }
            FlagKind::Implemented(Setting::ConfigFile) => {
                cl.config_file = Some(take_value(&mut i)?);
            }
            FlagKind::Implemented(setting) => {
                let v = take_value(&mut i)?;
                cl.values.set(setting, &v).map_err(|e| {
                    ConfigError::Usage(format!("invalid value {v:?} for flag -{name}: {e}"))
                })?;
            }
        }
        cl.set.insert(static_name);
    }
    if let Some(first) = args.get(i) {
        // etcd 3.5: `'%s' is not a valid flag` (logged, exit 1).
        return Err(ConfigError::Invalid(format!(
            "'{first}' is not a valid flag"
        )));
    }
    Ok(Parsed::Flags(Box::new(cl)))
}

fn static_flag_name(name: &str) -> &'static str {
    all_etcd_flags_sorted()
        .into_iter()
        .find(|n| *n == name)
        .expect("known etcd flag")
}

fn parse_cores(v: &str) -> Result<usize, &'static str> {
    let n = go_parse_u64(v).map_err(NumError::go_text)?;
    if n == 0 {
        return Err("must be at least 1");
    }
    usize::try_from(n).map_err(|_| "value out of range")
}

/// Parses ferrocd's command line (the arguments *after* the program name),
/// given the process environment, into what to do. Pure apart from reading
/// the config file when one is named, and the machine's available
/// parallelism (the `--cores` default).
pub fn parse(args: &[String], env: &[(String, String)]) -> Result<Invocation, ConfigError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    parse_with_default_cores(args, env, cores)
}

fn parse_with_default_cores(
    args: &[String],
    env: &[(String, String)],
    default_cores: usize,
) -> Result<Invocation, ConfigError> {
    if let Some(cmd @ ("gateway" | "grpc-proxy")) = args.first().map(String::as_str) {
        return Err(ConfigError::UnimplementedCommand(cmd.to_string()));
    }
    let mut cl = match parse_command_line(args)? {
        Parsed::Help => return Ok(Invocation::Help),
        Parsed::Flags(cl) => *cl,
    };
    if cl.version {
        return Ok(Invocation::Version);
    }
    let env_map: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let getenv = |k: &str| env_map.get(k).copied().unwrap_or("");

    let mut warnings = std::mem::take(&mut cl.warnings);
    let config_file = match cl.config_file.as_deref() {
        Some(f) if !f.is_empty() => f.to_string(),
        _ => getenv("ETCD_CONFIG_FILE").to_string(),
    };
    let values = if !config_file.is_empty() {
        let values = load_config_file(&config_file, &mut warnings)?;
        warnings.push(format!(
            "loaded server configuration from {config_file:?}; other configuration command line flags and environment variables are ignored"
        ));
        values
    } else {
        apply_env(&mut cl, env, &env_map, &mut warnings)?;
        let mut values = cl.values;
        // etcd: disable the default advertise-client-urls if
        // listen-client-urls is set (on the command line or from ETCD_*).
        if cl.set.contains("listen-client-urls") && !cl.set.contains("advertise-client-urls") {
            values.advertise_client_urls.clear();
        }
        values
    };

    let cores = match cl.cores {
        Some(n) => n,
        None => match getenv(CORES_ENV) {
            "" => default_cores,
            v => parse_cores(v).map_err(|e| {
                ConfigError::Invalid(format!("invalid value {v:?} for {CORES_ENV}: {e}"))
            })?,
        },
    };

    let config_file = (!config_file.is_empty()).then(|| PathBuf::from(config_file));
    finish(values, cores, config_file, warnings).map(Invocation::Run)
}

/// etcd's `flags.SetFlagsFromEnv` + `verifyEnv`.
fn apply_env(
    cl: &mut CommandLine,
    env: &[(String, String)],
    env_map: &HashMap<&str, &str>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let mut ignored_env: BTreeSet<&str> = BTreeSet::new();
    if let Some(v) = env_map.get("ETCD_VERSION").filter(|v| !v.is_empty()) {
        warnings.push(format!(
            "cannot set special environment variable ETCD_VERSION={v:?}; ignoring it"
        ));
        ignored_env.insert("ETCD_VERSION");
    }
    let already_set: BTreeSet<String> = cl.set.iter().map(|n| flag_to_env(n)).collect();
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut err = None;
    for name in all_etcd_flags_sorted() {
        let key = flag_to_env(name);
        if already_set.contains(&key) || ignored_env.contains(key.as_str()) {
            continue;
        }
        let val = env_map.get(key.as_str()).copied().unwrap_or("");
        if val.is_empty() {
            continue;
        }
        used.insert(key.clone());
        match etcd_flag(name).expect("known etcd flag") {
            FlagKind::Unimplemented => {
                err = Some(ConfigError::UnimplementedEnv {
                    var: key,
                    flag: name.to_string(),
                })
            }
            FlagKind::Ignored => {
                warnings.push(format!("flag --{name} is no longer supported - ignoring"));
                cl.set.insert(name);
            }
            FlagKind::Implemented(Setting::Version | Setting::ConfigFile) => {}
            FlagKind::Implemented(setting) => match cl.values.set(setting, val) {
                Ok(()) => {
                    cl.set.insert(name);
                }
                Err(e) => {
                    err = Some(ConfigError::Invalid(format!(
                        "invalid value {val:?} for {key}: {e}"
                    )))
                }
            },
        }
    }
    for (k, v) in env {
        if used.contains(k) || ignored_env.contains(k.as_str()) {
            continue;
        }
        if already_set.contains(k) {
            return Err(ConfigError::Invalid(format!(
                "conflicting environment variable {k:?} is shadowed by corresponding command-line flag (either unset environment variable or disable flag)"
            )));
        }
        if k.starts_with("ETCD_") {
            warnings.push(format!("unrecognized environment variable {k}={v}"));
        }
    }
    err.map_or(Ok(()), Err)
}

fn yaml_kind(v: &serde_yaml::Value) -> String {
    use serde_yaml::Value;
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Sequence(_) => "a sequence".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(t) => yaml_kind(&t.value),
    }
}

fn untag(v: &serde_yaml::Value) -> &serde_yaml::Value {
    match v {
        serde_yaml::Value::Tagged(t) => untag(&t.value),
        other => other,
    }
}

/// Whether an unimplemented key's value leaves etcd at its defaults:
/// null, "", [], or a mapping of only such values and `false`.
fn yaml_is_unset(v: &serde_yaml::Value, in_mapping: bool) -> bool {
    use serde_yaml::Value;
    match untag(v) {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Sequence(s) => s.is_empty(),
        Value::Bool(b) => in_mapping && !*b,
        Value::Mapping(m) => m.values().all(|v| yaml_is_unset(v, true)),
        Value::Number(_) | Value::Tagged(_) => false,
    }
}

/// etcd's `embed.ConfigFromFile` for the keys ferrocd implements.
fn load_config_file(path: &str, warnings: &mut Vec<String>) -> Result<Values, ConfigError> {
    use serde_yaml::Value;
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Invalid(format!("cannot read config file {path:?}: {e}")))?;
    let doc: Value = serde_yaml::from_str(&text).map_err(|e| {
        ConfigError::Invalid(format!("config file {path:?} is not valid YAML: {e}"))
    })?;
    let mut values = Values::default();
    let map = match untag(&doc) {
        Value::Null => return Ok(values),
        Value::Mapping(m) => m,
        other => {
            return Err(ConfigError::Invalid(format!(
                "config file {path:?}: expected a mapping of etcd settings, found {}",
                yaml_kind(other)
            )))
        }
    };
    let type_error = |key: &str, want: &str, v: &Value| {
        ConfigError::Invalid(format!(
            "config file {path:?}: {key}: expected {want}, found {}",
            yaml_kind(v)
        ))
    };
    for (k, v) in map {
        let Value::String(key) = untag(k) else {
            warnings.push(format!(
                "unrecognized key {} in config file {path:?} (ignored, as etcd does)",
                yaml_kind(k)
            ));
            continue;
        };
        // Go's encoding/json matches keys case-insensitively.
        let lower = key.to_ascii_lowercase();
        let Some(&(name, setting)) = IMPLEMENTED_CONFIG_KEYS.iter().find(|(n, _)| *n == lower)
        else {
            if UNIMPLEMENTED_ETCD_CONFIG_KEYS.contains(&lower.as_str()) {
                if !yaml_is_unset(v, false) {
                    return Err(ConfigError::UnimplementedKey {
                        path: path.to_string(),
                        key: key.clone(),
                    });
                }
            } else {
                warnings.push(format!(
                    "unrecognized key {key:?} in config file {path:?} (ignored, as etcd does)"
                ));
            }
            continue;
        };
        let v = untag(v);
        if v.is_null() {
            continue; // JSON null leaves etcd's default in place
        }
        match setting {
            Setting::SnapshotCount
            | Setting::HeartbeatInterval
            | Setting::ElectionTimeout
            | Setting::MaxRequestBytes
            | Setting::MaxTxnOps => {
                let n = v
                    .as_u64()
                    .ok_or_else(|| type_error(name, "an unsigned integer", v))?;
                match setting {
                    Setting::SnapshotCount => values.snapshot_count = n,
                    Setting::HeartbeatInterval => values.heartbeat_interval_ms = n,
                    Setting::ElectionTimeout => values.election_timeout_ms = n,
                    Setting::MaxRequestBytes => values.max_request_bytes = n,
                    _ => values.max_txn_ops = n,
                }
            }
            Setting::QuotaBackendBytes => {
                values.quota_backend_bytes = v
                    .as_i64()
                    .ok_or_else(|| type_error(name, "an integer", v))?;
            }
            Setting::WatchProgressNotifyInterval => {
                // A Go time.Duration in JSON/YAML: integer nanoseconds.
                values.watch_progress_notify_interval_ns = v
                    .as_u64()
                    .ok_or_else(|| type_error(name, "a duration in nanoseconds", v))?;
            }
            _ => {
                // String settings; like sigs.k8s.io/yaml, scalars become strings.
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => n.to_string(),
                    other => return Err(type_error(name, "a string", other)),
                };
                match setting {
                    Setting::ListenClientUrls
                    | Setting::ListenMetricsUrls
                    | Setting::AdvertiseClientUrls
                    | Setting::ListenPeerUrls
                    | Setting::InitialAdvertisePeerUrls => {
                        if s.is_empty() {
                            continue;
                        }
                        let urls = parse_unique_url_list(&s).map_err(|e| {
                            ConfigError::Invalid(format!("unexpected error setting up {name}: {e}"))
                        })?;
                        match setting {
                            Setting::ListenClientUrls => values.listen_client_urls = urls,
                            Setting::ListenMetricsUrls => values.listen_metrics_urls = urls,
                            Setting::AdvertiseClientUrls => values.advertise_client_urls = urls,
                            Setting::ListenPeerUrls => values.listen_peer_urls = urls,
                            _ => values.initial_advertise_peer_urls = urls,
                        }
                    }
                    Setting::Name => values.name = s,
                    Setting::DataDir => values.data_dir = s,
                    Setting::InitialCluster => values.initial_cluster = s,
                    Setting::InitialClusterState => values.initial_cluster_state = s,
                    Setting::InitialClusterToken => values.initial_cluster_token = s,
                    Setting::LogLevel => values.log_level = s,
                    Setting::Logger => values.logger = s,
                    Setting::AutoCompactionMode => values.auto_compaction_mode = s,
                    Setting::AutoCompactionRetention => values.auto_compaction_retention = s,
                    _ => unreachable!("numeric settings handled above"),
                }
            }
        }
    }
    if values.initial_cluster_state.is_empty() {
        values.initial_cluster_state = "new".to_string();
    }
    Ok(values)
}

/// etcd's `embed.Config.Validate` (the parts for implemented settings, in
/// etcd's order), then the defaults etcd fills in after parsing.
fn finish(
    v: Values,
    cores: usize,
    config_file: Option<PathBuf>,
    mut warnings: Vec<String>,
) -> Result<Config, ConfigError> {
    let invalid = |s: String| Err(ConfigError::Invalid(s));
    match v.logger.as_str() {
        "zap" => {}
        "capnslog" => return invalid("--logger=capnslog is removed in v3.5".to_string()),
        other => return invalid(format!("unknown logger option {other:?}")),
    }
    let Some(log_level) = LogLevel::parse(&v.log_level) else {
        return Err(ConfigError::InvalidLogLevel(v.log_level));
    };
    for u in v
        .listen_peer_urls
        .iter()
        .chain(&v.listen_client_urls)
        .chain(&v.listen_metrics_urls)
    {
        if u.host != "localhost" && u.host.parse::<IpAddr>().is_err() {
            return invalid(format!("expected IP in URL for binding ({u})"));
        }
    }
    for (flag, urls) in [
        (
            "--initial-advertise-peer-urls",
            &v.initial_advertise_peer_urls,
        ),
        ("--advertise-client-urls", &v.advertise_client_urls),
    ] {
        if let Some(u) = urls.iter().find(|u| u.host.is_empty()) {
            let joined: Vec<&str> = urls.iter().map(Url::as_str).collect();
            return invalid(format!(
                "{flag} {:?} must be \"host:port\" (unexpected empty host ({u}))",
                joined.join(",")
            ));
        }
    }
    let initial_cluster_state = match v.initial_cluster_state.as_str() {
        "new" => ClusterState::New,
        "existing" => ClusterState::Existing,
        other => return invalid(format!("unexpected clusterState {other:?}")),
    };
    let (tick, election) = (v.heartbeat_interval_ms, v.election_timeout_ms);
    if tick == 0 {
        return invalid(format!("--heartbeat-interval must be >0 (set to {tick}ms)"));
    }
    if election == 0 {
        return invalid(format!(
            "--election-timeout must be >0 (set to {election}ms)"
        ));
    }
    if tick.checked_mul(5).is_none_or(|t5| t5 > election) {
        return invalid(format!(
            "--election-timeout[{election}ms] should be at least as 5 times as --heartbeat-interval[{tick}ms]"
        ));
    }
    if election > MAX_ELECTION_TIMEOUT_MS {
        return invalid(format!(
            "--election-timeout[{election}ms] is too long, and should be set less than {MAX_ELECTION_TIMEOUT_MS}ms"
        ));
    }
    if v.advertise_client_urls.is_empty() {
        return invalid(
            "--advertise-client-urls is required when --listen-client-urls is set explicitly"
                .to_string(),
        );
    }

    // etcdmain: UpdateDefaultClusterFromName (without the default-host
    // substitution for 0.0.0.0 listeners), then the data-dir default.
    let mut initial_cluster = v.initial_cluster;
    if v.name != DEFAULT_NAME && initial_cluster == DEFAULT_INITIAL_CLUSTER {
        initial_cluster = initial_cluster_from_name(&v.name, &v.initial_advertise_peer_urls);
    }
    let data_dir = if v.data_dir.is_empty() {
        let d = format!("{}.etcd", v.name);
        warnings.push(format!("'data-dir' was empty; using default {d:?}"));
        d
    } else {
        v.data_dir
    };
    if let Ok(q) = u64::try_from(v.quota_backend_bytes) {
        if q > MAX_QUOTA_BACKEND_BYTES {
            warnings.push(format!(
                "quota exceeds the maximum value: --quota-backend-bytes {q} is above the suggested maximum {MAX_QUOTA_BACKEND_BYTES} (8 GiB)"
            ));
        }
    }
    let auto_compaction =
        parse_auto_compaction(&v.auto_compaction_mode, &v.auto_compaction_retention)?;
    if v.max_request_bytes > RECOMMENDED_MAX_REQUEST_BYTES {
        warnings.push(format!(
            "exceeded recommended request limit: --max-request-bytes {} is above the recommended {RECOMMENDED_MAX_REQUEST_BYTES} (10 MiB)",
            v.max_request_bytes
        ));
    }
    Ok(Config {
        name: v.name,
        data_dir: PathBuf::from(data_dir),
        listen_client_urls: v.listen_client_urls,
        listen_metrics_urls: v.listen_metrics_urls,
        advertise_client_urls: v.advertise_client_urls,
        listen_peer_urls: v.listen_peer_urls,
        initial_advertise_peer_urls: v.initial_advertise_peer_urls,
        initial_cluster,
        initial_cluster_state,
        initial_cluster_token: v.initial_cluster_token,
        snapshot_count: v.snapshot_count,
        heartbeat_interval_ms: tick,
        election_timeout_ms: election,
        quota_backend_bytes: v.quota_backend_bytes,
        max_request_bytes: v.max_request_bytes,
        max_txn_ops: v.max_txn_ops,
        watch_progress_notify_interval_ms: v.watch_progress_notify_interval_ns / 1_000_000,
        auto_compaction,
        log_level,
        logger: v.logger,
        cores,
        config_file,
        warnings,
    })
}

/// etcd's `Validate` check of `--auto-compaction-mode` and its
/// `parseCompactionRetention`: a bare integer is hours (periodic) or
/// revisions (revision); anything else is a Go duration. 0 turns automatic
/// compaction off (`None`).
fn parse_auto_compaction(
    mode: &str,
    retention: &str,
) -> Result<Option<AutoCompaction>, ConfigError> {
    let invalid = |s: String| Err(ConfigError::Invalid(s));
    if !matches!(mode, "" | "periodic" | "revision") {
        return invalid(format!("unknown auto-compaction-mode {mode:?}"));
    }
    let parsed = match retention.parse::<i64>() {
        Ok(h) if h >= 0 => match mode {
            "revision" => AutoCompaction::Revision(h),
            "periodic" => AutoCompaction::Periodic(Duration::from_secs(
                u64::try_from(h).unwrap_or(0).saturating_mul(3600),
            )),
            _ => return invalid("--auto-compaction-mode is undefined".to_string()),
        },
        _ => {
            let Some(ns) = go_parse_duration_ns(retention) else {
                return invalid(format!(
                    "error parsing CompactionRetention: time: invalid duration {retention:?}"
                ));
            };
            let Ok(ns) = u64::try_from(ns) else {
                return invalid(format!(
                    "error parsing CompactionRetention: {retention:?} is negative"
                ));
            };
            match mode {
                "revision" => AutoCompaction::Revision(i64::try_from(ns).unwrap_or(i64::MAX)),
                _ => AutoCompaction::Periodic(Duration::from_nanos(ns)),
            }
        }
    };
    Ok(match parsed {
        AutoCompaction::Revision(0) => None,
        AutoCompaction::Periodic(d) if d.is_zero() => None,
        AutoCompaction::Periodic(d) if d < Duration::from_millis(10) => {
            return invalid(format!(
                "auto-compaction-retention {retention:?} is too short for periodic compaction (at least 10ms)"
            ))
        }
        other => Some(other),
    })
}

/// etcd's `Config.InitialClusterFromName`.
fn initial_cluster_from_name(name: &str, advertise_peer_urls: &[Url]) -> String {
    let n = if name.is_empty() { DEFAULT_NAME } else { name };
    advertise_peer_urls
        .iter()
        .map(|u| format!("{n}={u}"))
        .collect::<Vec<_>>()
        .join(",")
}

// ---------------------------------------------------------------------------
// Help

/// The short usage etcd prints after a command-line error.
pub const USAGE: &str = "Usage:

  ferrocd [flags]
    Start a ferrocd server (an etcd v3.5 drop-in replacement).

  ferrocd --version
    Show the version of ferrocd.

  ferrocd -h | --help
    Show the help information about ferrocd.

  ferrocd --config-file
    Path to the server configuration file. Note that if a configuration file is provided, other command line flags and environment variables will be ignored.
";

const FLAGS_HELP: &str = "
Member:
  --name 'default'
    Human-readable name for this member.
  --data-dir '${name}.etcd'
    Path to the data directory.
  --snapshot-count '100000'
    Number of committed transactions to trigger a snapshot to disk.
  --heartbeat-interval '100'
    Time (in milliseconds) of a heartbeat interval.
  --election-timeout '1000'
    Time (in milliseconds) for an election to timeout. Must be at least 5 times --heartbeat-interval and at most 50000.
  --listen-peer-urls 'http://localhost:2380'
    List of URLs to listen on for peer traffic.
  --listen-client-urls 'http://localhost:2379'
    List of URLs to listen on for client traffic.
  --quota-backend-bytes '0'
    Sets the maximum size (in bytes) that the backend database may consume. Exceeding this triggers an alarm and puts the server in read-only mode. Set to 0 to use the default 2GiB limit.
  --max-txn-ops '128'
    Maximum number of operations permitted in a transaction.
  --max-request-bytes '1572864'
    Maximum client request size in bytes the server will accept.
  --listen-metrics-urls ''
    List of URLs to listen on for the metrics and health endpoints.

Clustering:
  --initial-advertise-peer-urls 'http://localhost:2380'
    List of this member's peer URLs to advertise to the rest of the cluster.
  --initial-cluster 'default=http://localhost:2380'
    Initial cluster configuration for bootstrapping.
  --initial-cluster-state 'new'
    Initial cluster state ('new' when bootstrapping a new cluster or 'existing' when adding new members to an existing cluster).
    After successful initialization (bootstrapping or adding), flag is ignored on restarts.
  --initial-cluster-token 'etcd-cluster'
    Initial cluster token for the etcd cluster during bootstrap.
    Specifying this can protect you from unintended cross-cluster interaction when running multiple clusters.
  --advertise-client-urls 'http://localhost:2379'
    List of this member's client URLs to advertise to the public.
    The client URLs advertised should be accessible to machines that talk to the cluster. Client libraries parse these URLs to connect to the cluster.

  --auto-compaction-retention '0'
    Auto compaction retention for mvcc key value store. 0 means disable auto compaction.
  --auto-compaction-mode 'periodic'
    Interpret 'auto-compaction-retention' one of: periodic|revision. 'periodic' for duration based retention, defaulting to hours if no time unit is provided (e.g. '5m'). 'revision' for revision number based retention.

Experimental feature:
  --experimental-watch-progress-notify-interval '10m'
    Duration of periodical watch progress notification.

Logging:
  --logger 'zap'
    Currently only supports 'zap' for structured logging.
  --log-level 'info'
    Configures log level. Only supports debug, info, warn, error, panic, or fatal.

ferrocd:
  --cores '<available parallelism>'
    Number of thread-per-core executors. Also read from FERROCD_CORES.

Every etcd flag above can also be set from an environment variable named ETCD_<FLAG>
(upper case, dashes as underscores, e.g. ETCD_DATA_DIR), unless the flag is also given.
URLs are http://host:port; https:// and unix:// URLs are not implemented yet.
Other etcd v3.5 flags, environment variables and config-file keys are refused until
ferrocd implements them.
";

/// The full `--help` text: usage and every supported flag with its default.
pub fn help_text() -> String {
    format!("{USAGE}{FLAGS_HELP}")
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn env(e: &[(&str, &str)]) -> Vec<(String, String)> {
        e.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run_env(a: &[&str], e: &[(&str, &str)]) -> Result<Config, ConfigError> {
        match parse_with_default_cores(&args(a), &env(e), 4)? {
            Invocation::Run(c) => Ok(c),
            other => panic!("expected Run, got {other:?}"),
        }
    }

    fn run(a: &[&str]) -> Result<Config, ConfigError> {
        run_env(a, &[])
    }

    fn err(a: &[&str]) -> ConfigError {
        run(a).expect_err("expected an error")
    }

    #[test]
    fn auto_compaction_from_flags_env_and_config_file_as_etcd_parses_it() {
        let ac = |a: &[&str]| run(a).unwrap().auto_compaction;
        let hours = |h: u64| Some(AutoCompaction::Periodic(Duration::from_secs(h * 3600)));
        assert_eq!(ac(&[]), None, "retention 0 (the default) is off");
        assert_eq!(
            ac(&["--auto-compaction-retention=1"]),
            hours(1),
            "bare number: hours"
        );
        assert_eq!(
            ac(&["--auto-compaction-retention=5m"]),
            Some(AutoCompaction::Periodic(Duration::from_secs(300)))
        );
        assert_eq!(
            ac(&[
                "--auto-compaction-mode=revision",
                "--auto-compaction-retention=1000"
            ]),
            Some(AutoCompaction::Revision(1000))
        );
        assert_eq!(ac(&["--auto-compaction-mode=revision"]), None);
        assert_eq!(
            run_env(&[], &[("ETCD_AUTO_COMPACTION_RETENTION", "10h")])
                .unwrap()
                .auto_compaction,
            hours(10)
        );
        let f = yaml_file("auto-compaction-mode: revision\nauto-compaction-retention: 500\n");
        assert_eq!(
            run(&["--config-file", &path_of(&f)])
                .unwrap()
                .auto_compaction,
            Some(AutoCompaction::Revision(500))
        );
        let f = yaml_file("auto-compaction-retention: '2h'\n");
        assert_eq!(
            run(&["--config-file", &path_of(&f)])
                .unwrap()
                .auto_compaction,
            hours(2)
        );
        for (a, want) in [
            (
                &[
                    "--auto-compaction-mode=hourly",
                    "--auto-compaction-retention=1",
                ][..],
                "unknown auto-compaction-mode \"hourly\"",
            ),
            (
                &["--auto-compaction-retention=soon"][..],
                "error parsing CompactionRetention: time: invalid duration \"soon\"",
            ),
            (
                &["--auto-compaction-mode=", "--auto-compaction-retention=3"][..],
                "--auto-compaction-mode is undefined",
            ),
            (&["--auto-compaction-retention=-1h"][..], "is negative"),
            (&["--auto-compaction-retention=1ms"][..], "too short"),
        ] {
            let e = err(a).to_string();
            assert!(e.contains(want), "{a:?}: {e}");
        }
    }

    fn strs(urls: &[Url]) -> Vec<&str> {
        urls.iter().map(Url::as_str).collect()
    }

    fn yaml_file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f.flush().unwrap();
        f
    }

    fn path_of(f: &tempfile::NamedTempFile) -> String {
        f.path().to_str().unwrap().to_string()
    }

    #[test]
    fn defaults_match_etcd_3_5() {
        let c = run(&[]).unwrap();
        assert_eq!(c.name, "default");
        assert_eq!(c.data_dir, PathBuf::from("default.etcd"));
        assert_eq!(strs(&c.listen_client_urls), ["http://localhost:2379"]);
        assert_eq!(strs(&c.advertise_client_urls), ["http://localhost:2379"]);
        assert_eq!(strs(&c.listen_peer_urls), ["http://localhost:2380"]);
        assert_eq!(
            strs(&c.initial_advertise_peer_urls),
            ["http://localhost:2380"]
        );
        assert_eq!(c.initial_cluster, "default=http://localhost:2380");
        assert_eq!(c.initial_cluster_state, ClusterState::New);
        assert_eq!(c.initial_cluster_token, "etcd-cluster");
        assert_eq!(c.snapshot_count, 100_000);
        assert_eq!(c.heartbeat_interval_ms, 100);
        assert_eq!(c.election_timeout_ms, 1000);
        assert_eq!(c.election_ticks(), 10);
        assert_eq!(c.quota_backend_bytes, 0);
        assert_eq!(c.backend_quota_bytes(), Some(2 * 1024 * 1024 * 1024));
        assert_eq!(c.max_request_bytes, 1_572_864);
        assert_eq!(c.max_txn_ops, 128);
        assert_eq!(c.log_level, LogLevel::Info);
        assert_eq!(c.logger, "zap");
        assert_eq!(c.cores, 4);
        assert_eq!(c.config_file, None);
        assert_eq!(
            c.listen_client_addrs(),
            ["127.0.0.1:2379".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            c.listen_peer_addrs(),
            ["127.0.0.1:2380".parse::<SocketAddr>().unwrap()]
        );
        assert!(c
            .warnings
            .iter()
            .any(|w| w.contains("'data-dir' was empty")));
        // The real entry point uses the machine's parallelism.
        match parse(&[], &[]).unwrap() {
            Invocation::Run(c) => assert!(c.cores >= 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_go_flag_syntax_form() {
        for form in [
            &["--name", "n1"][..],
            &["--name=n1"],
            &["-name", "n1"],
            &["-name=n1"],
        ] {
            assert_eq!(run(form).unwrap().name, "n1", "{form:?}");
        }
        // A value may start with '-' and may contain '='.
        assert_eq!(run(&["--name", "-x"]).unwrap().name, "-x");
        assert_eq!(run(&["--name=a=b"]).unwrap().name, "a=b");
        assert_eq!(run(&["--name="]).unwrap().name, "");
        // The last occurrence wins.
        assert_eq!(run(&["--name=a", "--name", "b"]).unwrap().name, "b");
        // Booleans: bare, =true/false and Go's other spellings.
        let v = |a: &[&str]| parse_with_default_cores(&args(a), &[], 1).unwrap();
        for a in [
            &["--version"][..],
            &["-version"],
            &["--version=true"],
            &["-version=T"],
            &["--version=1"],
        ] {
            assert_eq!(v(a), Invocation::Version, "{a:?}");
        }
        assert!(matches!(v(&["--version=false"]), Invocation::Run(_)));
        assert!(matches!(v(&["-version=0"]), Invocation::Run(_)));
        assert_eq!(
            err(&["--version=maybe"]),
            ConfigError::Usage("invalid boolean value \"maybe\" for -version: parse error".into())
        );
        // A boolean never takes the next argument: it becomes a positional.
        assert_eq!(
            err(&["--version", "false"]),
            ConfigError::Invalid("'false' is not a valid flag".into())
        );
        // Parsing stops at "--"; what follows is positional.
        assert!(run(&["--name=x", "--"]).is_ok());
        assert_eq!(
            err(&["--", "--name=x"]).to_string(),
            "ferrocd: '--name=x' is not a valid flag"
        );
        assert_eq!(err(&["-"]).exit_code(), 1);
    }

    #[test]
    fn help_and_version() {
        let p = |a: &[&str]| parse_with_default_cores(&args(a), &[], 1);
        for a in [
            &["-h"][..],
            &["--help"],
            &["-help"],
            &["--name=x", "-h", "--bogus"],
            &["--help=1"],
        ] {
            assert_eq!(p(a).unwrap(), Invocation::Help, "{a:?}");
        }
        // Errors before the help flag win, as in Go.
        assert!(p(&["--bogus", "-h"]).is_err());
        assert_eq!(p(&["--version", "--name=x"]).unwrap(), Invocation::Version);
        // ETCD_VERSION does not print the version; it is warned about.
        let c = run_env(&[], &[("ETCD_VERSION", "1")]).unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("ETCD_VERSION")));
        let h = help_text();
        for flag in IMPLEMENTED_FLAGS
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| *n != "version" && *n != "config-file")
        {
            assert!(h.contains(&format!("--{flag} '")), "help lacks --{flag}");
        }
        assert!(h.contains("--cores"));
    }

    #[test]
    fn numbers_parse_like_go() {
        assert_eq!(run(&["--snapshot-count=0x10"]).unwrap().snapshot_count, 16);
        assert_eq!(run(&["--snapshot-count=010"]).unwrap().snapshot_count, 8);
        assert_eq!(run(&["--snapshot-count=0b101"]).unwrap().snapshot_count, 5);
        assert_eq!(
            run(&["--snapshot-count=1_000"]).unwrap().snapshot_count,
            1000
        );
        assert_eq!(
            run(&["--snapshot-count=0"])
                .unwrap()
                .effective_snapshot_count(),
            100_000
        );
        assert_eq!(
            run(&["--snapshot-count=18446744073709551615"])
                .unwrap()
                .snapshot_count,
            u64::MAX
        );
        assert_eq!(
            err(&["--snapshot-count=18446744073709551616"]),
            ConfigError::Usage(
                "invalid value \"18446744073709551616\" for flag -snapshot-count: value out of range".into()
            )
        );
        for bad in ["abc", "", "-1", "+1", "1_", "_1", "0x", "1.5", "08"] {
            let e = err(&["--snapshot-count", bad]);
            assert_eq!(
                e,
                ConfigError::Usage(format!(
                    "invalid value {bad:?} for flag -snapshot-count: parse error"
                )),
                "{bad}"
            );
            assert_eq!(e.exit_code(), 2);
        }
        let c = run(&["--quota-backend-bytes=-1"]).unwrap();
        assert_eq!((c.quota_backend_bytes, c.backend_quota_bytes()), (-1, None));
        assert_eq!(
            run(&["--quota-backend-bytes=-0x10"])
                .unwrap()
                .quota_backend_bytes,
            -16
        );
        assert_eq!(
            run(&["--quota-backend-bytes=-9223372036854775808"])
                .unwrap()
                .quota_backend_bytes,
            i64::MIN
        );
        assert!(
            matches!(err(&["--quota-backend-bytes=9223372036854775808"]), ConfigError::Usage(m) if m.ends_with("value out of range"))
        );
        let c = run(&[
            "--quota-backend-bytes=4096",
            "--max-txn-ops=7",
            "--max-request-bytes=1024",
        ])
        .unwrap();
        assert_eq!(
            (c.backend_quota_bytes(), c.max_txn_ops, c.max_request_bytes),
            (Some(4096), 7, 1024)
        );
        let c = run(&[
            "--quota-backend-bytes=9000000000",
            "--max-request-bytes=20000000",
        ])
        .unwrap();
        assert!(c
            .warnings
            .iter()
            .any(|w| w.starts_with("quota exceeds the maximum value")));
        assert!(c
            .warnings
            .iter()
            .any(|w| w.starts_with("exceeded recommended request limit")));
    }

    #[test]
    fn unknown_and_malformed_flags_are_go_usage_errors() {
        let e = err(&["--foo"]);
        assert_eq!(e.to_string(), "flag provided but not defined: -foo");
        assert_eq!(e.exit_code(), 2);
        assert!(e.wants_usage());
        assert_eq!(
            err(&["-foo=1"]).to_string(),
            "flag provided but not defined: -foo"
        );
        assert_eq!(
            err(&["--Name=x"]).to_string(),
            "flag provided but not defined: -Name"
        );
        assert_eq!(
            err(&["---name=x"]).to_string(),
            "bad flag syntax: ---name=x"
        );
        assert_eq!(err(&["--=x"]).to_string(), "bad flag syntax: --=x");
        let e = err(&["--name"]);
        assert_eq!(e.to_string(), "flag needs an argument: -name");
        assert_eq!(e.exit_code(), 2);
        assert_eq!(
            err(&["--initial-cluster-state=old"]).to_string(),
            "invalid value \"old\" for flag -initial-cluster-state: invalid value"
        );
        let e = err(&["--name=x", "extra"]);
        assert_eq!(e.to_string(), "ferrocd: 'extra' is not a valid flag");
        assert_eq!(e.exit_code(), 1);
        let e = err(&["gateway", "start"]);
        assert_eq!(e, ConfigError::UnimplementedCommand("gateway".into()));
        assert_eq!(e.exit_code(), 2);
        assert!(matches!(
            err(&["grpc-proxy"]),
            ConfigError::UnimplementedCommand(_)
        ));
    }

    #[test]
    fn ignored_legacy_flags_warn_like_etcd() {
        let c = run(&["-v", "--force=anything", "--name=x"]).unwrap();
        assert_eq!(c.name, "x");
        assert_eq!(
            c.warnings
                .iter()
                .filter(|w| w.contains("is no longer supported - ignoring"))
                .count(),
            2
        );
        // Ignored flags are boolean-like: they never take the next argument.
        assert!(
            matches!(err(&["--config", "etcd.conf"]), ConfigError::Invalid(m) if m.contains("'etcd.conf' is not a valid flag"))
        );
    }

    #[test]
    fn unimplemented_etcd_flags_are_refused_by_name() {
        assert_eq!(UNIMPLEMENTED_ETCD_FLAGS.len(), 89);
        assert_eq!(
            IMPLEMENTED_FLAGS.len() + IGNORED_FLAGS.len() + UNIMPLEMENTED_ETCD_FLAGS.len(),
            127
        );
        let all = all_etcd_flags_sorted();
        let unique: BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "a flag is listed twice");
        let e = err(&["--cors", "*"]);
        assert_eq!(
            e.to_string(),
            "ferrocd: flag --cors is an etcd flag that ferrocd does not implement yet"
        );
        assert_eq!(e.exit_code(), 2);
        for flag in UNIMPLEMENTED_ETCD_FLAGS {
            for form in [format!("--{flag}"), format!("-{flag}=1")] {
                assert_eq!(
                    err(&[form.as_str()]),
                    ConfigError::UnimplementedFlag(flag.to_string()),
                    "{form}"
                );
            }
        }
        // Still refused alongside a config file.
        let f = yaml_file("name: x\n");
        assert!(matches!(
            err(&["--config-file", &path_of(&f), "--wal-dir=/w"]),
            ConfigError::UnimplementedFlag(f) if f == "wal-dir"
        ));
    }

    #[test]
    fn environment_variables() {
        let c = run_env(
            &[],
            &[
                ("ETCD_NAME", "envname"),
                ("ETCD_SNAPSHOT_COUNT", "5"),
                ("ETCD_INITIAL_CLUSTER_STATE", "existing"),
                ("ETCD_LISTEN_PEER_URLS", "http://127.0.0.1:12380"),
                ("ETCD_LOG_LEVEL", "DEBUG"),
                ("ETCD_HEARTBEAT_INTERVAL", "50"),
                ("PATH", "/bin"),
            ],
        )
        .unwrap();
        assert_eq!(c.name, "envname");
        assert_eq!(c.data_dir, PathBuf::from("envname.etcd"));
        assert_eq!(c.snapshot_count, 5);
        assert_eq!(c.initial_cluster_state, ClusterState::Existing);
        assert_eq!(strs(&c.listen_peer_urls), ["http://127.0.0.1:12380"]);
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.heartbeat_interval_ms, 50);
        // Empty variables are ignored.
        assert_eq!(run_env(&[], &[("ETCD_NAME", "")]).unwrap().name, "default");
        // A flag on the command line and its variable together are fatal in etcd 3.5.
        let e = run_env(&["--name=flag"], &[("ETCD_NAME", "env")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ferrocd: conflicting environment variable \"ETCD_NAME\" is shadowed by corresponding command-line flag (either unset environment variable or disable flag)"
        );
        assert_eq!(e.exit_code(), 1);
        // Different settings from flag and env combine.
        let c = run_env(&["--name=flag"], &[("ETCD_MAX_TXN_OPS", "9")]).unwrap();
        assert_eq!((c.name.as_str(), c.max_txn_ops), ("flag", 9));
        // Bad values name the variable.
        let e = run_env(&[], &[("ETCD_SNAPSHOT_COUNT", "abc")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ferrocd: invalid value \"abc\" for ETCD_SNAPSHOT_COUNT: parse error"
        );
        assert_eq!(e.exit_code(), 1);
        let e = run_env(&[], &[("ETCD_INITIAL_CLUSTER_STATE", "old")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ferrocd: invalid value \"old\" for ETCD_INITIAL_CLUSTER_STATE: invalid value"
        );
        // Unknown ETCD_* variables are warnings.
        let c = run_env(&[], &[("ETCD_FOO", "1"), ("ETCDCTL_API", "3")]).unwrap();
        assert!(c
            .warnings
            .iter()
            .any(|w| w == "unrecognized environment variable ETCD_FOO=1"));
        assert!(!c.warnings.iter().any(|w| w.contains("ETCDCTL_API")));
        // Unimplemented etcd settings are refused by variable and flag name.
        let e = run_env(&[], &[("ETCD_CORS", "*")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ferrocd: environment variable ETCD_CORS sets etcd flag --cors, which ferrocd does not implement yet"
        );
        assert_eq!(e.exit_code(), 1);
        for flag in UNIMPLEMENTED_ETCD_FLAGS {
            let key = flag_to_env(flag);
            assert!(matches!(
                run_env(&[], &[(key.as_str(), "x")]),
                Err(ConfigError::UnimplementedEnv { var, flag: f }) if var == key && f == *flag
            ));
        }
        // Legacy ignored flags from env: a warning.
        let c = run_env(&[], &[("ETCD_FORCE", "1")]).unwrap();
        assert!(c
            .warnings
            .iter()
            .any(|w| w.contains("--force is no longer supported")));
    }

    #[test]
    fn cores_flag_and_env() {
        assert_eq!(run(&["--cores=3"]).unwrap().cores, 3);
        assert_eq!(run(&["-cores", "2"]).unwrap().cores, 2);
        assert_eq!(run_env(&[], &[(CORES_ENV, "6")]).unwrap().cores, 6);
        assert_eq!(
            run_env(&["--cores=1"], &[(CORES_ENV, "6")]).unwrap().cores,
            1
        );
        assert_eq!(
            err(&["--cores=0"]).to_string(),
            "invalid value \"0\" for flag -cores: must be at least 1"
        );
        assert_eq!(err(&["--cores=x"]).exit_code(), 2);
        let e = run_env(&[], &[(CORES_ENV, "zero")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ferrocd: invalid value \"zero\" for FERROCD_CORES: parse error"
        );
        // --cores is ferrocd's own, so it still applies with a config file.
        let f = yaml_file("name: y\n");
        assert_eq!(
            run(&["--config-file", &path_of(&f), "--cores=5"])
                .unwrap()
                .cores,
            5
        );
    }

    #[test]
    fn config_file_sets_everything() {
        let f = yaml_file(
            "# etcd-style config\n\
             name: 'infra1'\n\
             data-dir: /var/lib/etcd\n\
             listen-client-urls: http://127.0.0.1:2379,http://10.0.0.1:2379\n\
             advertise-client-urls: http://etcd-1.example:2379\n\
             listen-peer-urls: http://10.0.0.1:2380\n\
             initial-advertise-peer-urls: http://10.0.0.1:2380\n\
             initial-cluster: infra1=http://10.0.0.1:2380,infra2=http://10.0.0.2:2380\n\
             initial-cluster-state: existing\n\
             initial-cluster-token: tok\n\
             snapshot-count: 10000\n\
             heartbeat-interval: 200\n\
             election-timeout: 2000\n\
             quota-backend-bytes: 8589934592\n\
             max-request-bytes: 2097152\n\
             max-txn-ops: 256\n\
             log-level: warn\n\
             logger: zap\n\
             wal-dir:\n\
             client-transport-security:\n  cert-file:\n  client-cert-auth: false\n  allowed-cn: []\n\
             some-unknown-key: 1\n",
        );
        let c = run(&["--config-file", &path_of(&f)]).unwrap();
        assert_eq!(c.name, "infra1");
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/etcd"));
        assert_eq!(
            strs(&c.listen_client_urls),
            ["http://10.0.0.1:2379", "http://127.0.0.1:2379"]
        );
        assert_eq!(
            strs(&c.advertise_client_urls),
            ["http://etcd-1.example:2379"]
        );
        assert_eq!(c.advertise_client_urls[0].socket_addr(), None);
        assert_eq!(strs(&c.listen_peer_urls), ["http://10.0.0.1:2380"]);
        assert_eq!(
            c.initial_cluster,
            "infra1=http://10.0.0.1:2380,infra2=http://10.0.0.2:2380"
        );
        assert_eq!(c.initial_cluster_state, ClusterState::Existing);
        assert_eq!(c.initial_cluster_token, "tok");
        assert_eq!(c.snapshot_count, 10000);
        assert_eq!(
            (c.heartbeat_interval_ms, c.election_timeout_ms),
            (200, 2000)
        );
        assert_eq!(c.quota_backend_bytes, 8 * 1024 * 1024 * 1024);
        assert_eq!((c.max_request_bytes, c.max_txn_ops), (2_097_152, 256));
        assert_eq!(c.log_level, LogLevel::Warn);
        assert_eq!(c.config_file, Some(PathBuf::from(path_of(&f))));
        assert!(c
            .warnings
            .iter()
            .any(|w| w.contains("\"some-unknown-key\"")));
        assert!(c.warnings.iter().any(|w| w.contains(
            "other configuration command line flags and environment variables are ignored"
        )));
    }

    #[test]
    fn config_file_overrides_flags_and_env() {
        let f = yaml_file("name: fromfile\nNAME-ignored: 1\n");
        let p = path_of(&f);
        // Other flags and ETCD_* variables are ignored (no conflict check either).
        let c = run_env(
            &["--config-file", &p, "--name=flag", "--snapshot-count=7"],
            &[
                ("ETCD_NAME", "env"),
                ("ETCD_AUTO_COMPACTION_RETENTION", "1"),
            ],
        )
        .unwrap();
        assert_eq!((c.name.as_str(), c.snapshot_count), ("fromfile", 100_000));
        // ...but still syntax- and type-checked, as Go's parser runs first.
        assert!(matches!(
            err(&["--config-file", &p, "--snapshot-count=x"]),
            ConfigError::Usage(_)
        ));
        // ETCD_CONFIG_FILE works; the flag wins over it.
        let c = run_env(&[], &[("ETCD_CONFIG_FILE", p.as_str())]).unwrap();
        assert_eq!(c.name, "fromfile");
        let g = yaml_file("name: other\n");
        let c = run_env(
            &["--config-file", &path_of(&g)],
            &[("ETCD_CONFIG_FILE", p.as_str())],
        )
        .unwrap();
        assert_eq!(c.name, "other");
        // Keys match case-insensitively (Go's encoding/json); null keeps the default.
        let h = yaml_file("Name: Upper\nsnapshot-count: ~\n");
        let c = run(&["--config-file", &path_of(&h)]).unwrap();
        assert_eq!((c.name.as_str(), c.snapshot_count), ("Upper", 100_000));
        // Empty file: all defaults.
        let e = yaml_file("");
        assert_eq!(
            run(&["--config-file", &path_of(&e)]).unwrap().name,
            "default"
        );
        // In a config file, listen-client-urls alone keeps the default advertise URL.
        let l = yaml_file("listen-client-urls: http://127.0.0.1:3379\n");
        let c = run(&["--config-file", &path_of(&l)]).unwrap();
        assert_eq!(strs(&c.advertise_client_urls), ["http://localhost:2379"]);
        // Numbers become strings for string keys, as sigs.k8s.io/yaml does.
        let n = yaml_file("name: 123\n");
        assert_eq!(run(&["--config-file", &path_of(&n)]).unwrap().name, "123");
    }

    #[test]
    fn config_file_type_errors_name_the_key() {
        let cases = [
            (
                "snapshot-count: abc\n",
                "snapshot-count: expected an unsigned integer, found string \"abc\"",
            ),
            (
                "snapshot-count: '100'\n",
                "snapshot-count: expected an unsigned integer, found string \"100\"",
            ),
            (
                "heartbeat-interval: -1\n",
                "heartbeat-interval: expected an unsigned integer, found number -1",
            ),
            (
                "election-timeout: 1.5\n",
                "election-timeout: expected an unsigned integer, found number 1.5",
            ),
            (
                "max-txn-ops: true\n",
                "max-txn-ops: expected an unsigned integer, found boolean true",
            ),
            (
                "quota-backend-bytes: [1]\n",
                "quota-backend-bytes: expected an integer, found a sequence",
            ),
            (
                "name: [a, b]\n",
                "name: expected a string, found a sequence",
            ),
            (
                "initial-cluster: {a: b}\n",
                "initial-cluster: expected a string, found a mapping",
            ),
        ];
        for (text, want) in cases {
            let f = yaml_file(text);
            let e = err(&["--config-file", &path_of(&f)]);
            assert!(
                matches!(&e, ConfigError::Invalid(m) if m.ends_with(want)),
                "{text}: {e}"
            );
            assert_eq!(e.exit_code(), 1);
        }
        let f = yaml_file("listen-client-urls: localhost:2379\n");
        assert_eq!(
            err(&["--config-file", &path_of(&f)]).to_string(),
            "ferrocd: unexpected error setting up listen-client-urls: URL scheme must be http, https, unix, or unixs: localhost:2379"
        );
        let f = yaml_file("initial-cluster-state: old\n");
        assert_eq!(
            err(&["--config-file", &path_of(&f)]).to_string(),
            "ferrocd: unexpected clusterState \"old\""
        );
        let f = yaml_file("- a\n- b\n");
        assert!(err(&["--config-file", &path_of(&f)])
            .to_string()
            .contains("expected a mapping"));
        let f = yaml_file("name: [\n");
        assert!(err(&["--config-file", &path_of(&f)])
            .to_string()
            .contains("is not valid YAML"));
        let e = err(&["--config-file", "/nonexistent/ferrocd.yml"]);
        assert!(
            e.to_string()
                .starts_with("ferrocd: cannot read config file \"/nonexistent/ferrocd.yml\""),
            "{e}"
        );
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn config_file_unimplemented_keys_are_refused() {
        assert_eq!(UNIMPLEMENTED_ETCD_CONFIG_KEYS.len(), 68);
        let f = yaml_file("name: x\ncors: \"*\"\n");
        let p = path_of(&f);
        let e = err(&["--config-file", &p]);
        assert_eq!(
            e.to_string(),
            format!("ferrocd: config file {p:?}: key \"cors\" is an etcd setting that ferrocd does not implement yet")
        );
        assert_eq!(e.exit_code(), 1);
        for key in UNIMPLEMENTED_ETCD_CONFIG_KEYS {
            let f = yaml_file(&format!("{key}: 1\n"));
            assert!(
                matches!(err(&["--config-file", &path_of(&f)]), ConfigError::UnimplementedKey { key: k, .. } if k == *key),
                "{key}"
            );
        }
        // A TLS section that turns anything on is refused.
        let f = yaml_file("peer-transport-security:\n  auto-tls: true\n");
        assert!(matches!(
            err(&["--config-file", &path_of(&f)]),
            ConfigError::UnimplementedKey { .. }
        ));
        // Empty values are "not set".
        let f = yaml_file(
            "wal-dir: ''\ncors:\nlog-outputs: []\nsocket-options:\n  reuse-port: false\n",
        );
        assert!(run(&["--config-file", &path_of(&f)]).is_ok());
    }

    #[test]
    fn urls() {
        let u = Url::parse(" http://127.0.0.1:2379 ").unwrap();
        assert_eq!(
            (u.as_str(), u.host(), u.port()),
            ("http://127.0.0.1:2379", "127.0.0.1", 2379)
        );
        assert_eq!(u.to_string(), "http://127.0.0.1:2379");
        let u = Url::parse("HTTP://[::1]:2379").unwrap();
        assert_eq!((u.as_str(), u.host()), ("http://[::1]:2379", "::1"));
        assert_eq!(u.socket_addr(), Some("[::1]:2379".parse().unwrap()));
        assert_eq!(
            Url::parse("http://localhost:1").unwrap().socket_addr(),
            Some("127.0.0.1:1".parse().unwrap())
        );
        let cases = [
            ("http://localhost", "URL address does not have the form \"host:port\": http://localhost"),
            ("http://localhost:", "URL address does not have the form \"host:port\": http://localhost:"),
            ("http://::1:2379", "URL address does not have the form \"host:port\": http://::1:2379"),
            ("http:localhost:2379", "URL address does not have the form \"host:port\": http:localhost:2379"),
            ("http://localhost:2379/", "URL must not contain a path: http://localhost:2379/"),
            ("http://localhost:2379/v3", "URL must not contain a path: http://localhost:2379/v3"),
            ("http://localhost:abc", "parse \"http://localhost:abc\": invalid port \":abc\" after host"),
            ("http://localhost:70000", "invalid port \"70000\" in URL (must be 0-65535): http://localhost:70000"),
            ("localhost:2379", "URL scheme must be http, https, unix, or unixs: localhost:2379"),
            ("127.0.0.1:2379", "parse \"127.0.0.1:2379\": first path segment in URL cannot contain colon"),
            ("ftp://h:1", "URL scheme must be http, https, unix, or unixs: ftp://h:1"),
            ("", "URL scheme must be http, https, unix, or unixs: "),
            ("://h:1", "parse \"://h:1\": missing protocol scheme"),
            ("http://[::1:2379", "parse \"http://[::1:2379\": missing ']' in host"),
            ("http://u@h:1", "URL must not contain user information: http://u@h:1"),
            ("http://h:1?x=1", "URL must not contain a query or fragment: http://h:1?x=1"),
            ("https://127.0.0.1:2379", "URL scheme https (TLS) is not implemented by ferrocd yet: https://127.0.0.1:2379"),
            ("unix://localhost:1", "URL scheme unix (unix sockets) is not implemented by ferrocd yet: unix://localhost:1"),
        ];
        for (input, want) in cases {
            assert_eq!(Url::parse(input).unwrap_err(), want, "{input}");
        }
        // Lists: sorted and de-duplicated, entries trimmed.
        let c = run(&[
            "--listen-client-urls",
            "http://127.0.0.2:1, http://127.0.0.1:1,http://127.0.0.2:1",
            "--advertise-client-urls=http://a:1",
        ])
        .unwrap();
        assert_eq!(
            strs(&c.listen_client_urls),
            ["http://127.0.0.1:1", "http://127.0.0.2:1"]
        );
        // Flag errors wrap the URL error the Go way.
        let e = err(&["--listen-peer-urls", "https://127.0.0.1:2380"]);
        assert_eq!(
            e.to_string(),
            "invalid value \"https://127.0.0.1:2380\" for flag -listen-peer-urls: URL scheme https (TLS) is not implemented by ferrocd yet: https://127.0.0.1:2380"
        );
        assert_eq!(e.exit_code(), 2);
        let e = run_env(&[], &[("ETCD_LISTEN_PEER_URLS", "unix://x:1")]).unwrap_err();
        assert!(e.to_string().starts_with(
            "ferrocd: invalid value \"unix://x:1\" for ETCD_LISTEN_PEER_URLS: URL scheme unix"
        ));
        // Listeners must be IPs or localhost; advertised URLs may be host names.
        assert_eq!(
            err(&["--listen-peer-urls=http://etcd-0:2380"]).to_string(),
            "ferrocd: expected IP in URL for binding (http://etcd-0:2380)"
        );
        assert_eq!(
            err(&[
                "--listen-client-urls=http://:2379",
                "--advertise-client-urls=http://h:2379"
            ])
            .to_string(),
            "ferrocd: expected IP in URL for binding (http://:2379)"
        );
        assert_eq!(
            err(&["--initial-advertise-peer-urls=http://:2380,http://10.0.0.1:2380"]).to_string(),
            "ferrocd: --initial-advertise-peer-urls \"http://10.0.0.1:2380,http://:2380\" must be \"host:port\" (unexpected empty host (http://:2380))"
        );
        let c = run(&[
            "--listen-peer-urls=http://0.0.0.0:2380",
            "--initial-advertise-peer-urls=http://etcd-0.etcd:2380",
        ])
        .unwrap();
        assert_eq!(
            c.listen_peer_addrs(),
            ["0.0.0.0:2380".parse::<SocketAddr>().unwrap()]
        );
        // An empty URL flag keeps the current URLs (etcd's "" exception).
        assert_eq!(
            strs(&run(&["--listen-peer-urls="]).unwrap().listen_peer_urls),
            ["http://localhost:2380"]
        );
    }

    #[test]
    fn listen_client_urls_require_advertise_client_urls() {
        let want = "ferrocd: --advertise-client-urls is required when --listen-client-urls is set explicitly";
        assert_eq!(
            err(&["--listen-client-urls=http://127.0.0.1:2379"]).to_string(),
            want
        );
        let e = run_env(&[], &[("ETCD_LISTEN_CLIENT_URLS", "http://127.0.0.1:2379")]).unwrap_err();
        assert_eq!((e.to_string().as_str(), e.exit_code()), (want, 1));
        let c = run_env(
            &["--listen-client-urls=http://0.0.0.0:2379"],
            &[("ETCD_ADVERTISE_CLIENT_URLS", "http://10.0.0.1:2379")],
        )
        .unwrap();
        assert_eq!(strs(&c.advertise_client_urls), ["http://10.0.0.1:2379"]);
        assert_eq!(
            c.listen_client_addrs(),
            ["0.0.0.0:2379".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn election_and_heartbeat_validation() {
        let msg = |a: &[&str]| err(a).to_string();
        assert_eq!(
            msg(&["--heartbeat-interval=0"]),
            "ferrocd: --heartbeat-interval must be >0 (set to 0ms)"
        );
        assert_eq!(
            msg(&["--election-timeout=0"]),
            "ferrocd: --election-timeout must be >0 (set to 0ms)"
        );
        assert_eq!(
            msg(&["--heartbeat-interval=300"]),
            "ferrocd: --election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]"
        );
        assert_eq!(
            msg(&["--election-timeout=499"]),
            "ferrocd: --election-timeout[499ms] should be at least as 5 times as --heartbeat-interval[100ms]"
        );
        assert_eq!(
            msg(&["--heartbeat-interval=18446744073709551615"]),
            "ferrocd: --election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[18446744073709551615ms]"
        );
        assert_eq!(
            msg(&["--election-timeout=50001", "--heartbeat-interval=1000"]),
            "ferrocd: --election-timeout[50001ms] is too long, and should be set less than 50000ms"
        );
        assert_eq!(err(&["--election-timeout=499"]).exit_code(), 1);
        let c = run(&["--heartbeat-interval=200", "--election-timeout=1000"]).unwrap();
        assert_eq!(c.election_ticks(), 5);
        assert!(run(&["--election-timeout=50000", "--heartbeat-interval=10000"]).is_ok());
    }

    #[test]
    fn logger_and_log_level() {
        assert_eq!(
            run(&["--log-level=ERROR"]).unwrap().log_level,
            LogLevel::Error
        );
        assert_eq!(
            run(&["--log-level=Warn"]).unwrap().log_level,
            LogLevel::Warn
        );
        assert_eq!(run(&["--log-level="]).unwrap().log_level, LogLevel::Info);
        assert_eq!(
            run(&["--log-level=fatal"]).unwrap().log_level,
            LogLevel::Fatal
        );
        let e = err(&["--log-level=verbose"]);
        assert_eq!(
            (e.to_string().as_str(), e.exit_code()),
            ("ferrocd: unrecognized level: \"verbose\"", 2)
        );
        assert_eq!(
            err(&["--logger=capnslog"]).to_string(),
            "ferrocd: --logger=capnslog is removed in v3.5"
        );
        assert_eq!(
            err(&["--logger=json"]).to_string(),
            "ferrocd: unknown logger option \"json\""
        );
    }

    #[test]
    fn data_dir_follows_name() {
        assert_eq!(
            run(&["--name=infra0"]).unwrap().data_dir,
            PathBuf::from("infra0.etcd")
        );
        let c = run(&["--name=infra0", "--data-dir=/data"]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/data"));
        assert!(!c.warnings.iter().any(|w| w.contains("data-dir")));
        let f = yaml_file("name: filename\n");
        assert_eq!(
            run(&["--config-file", &path_of(&f)]).unwrap().data_dir,
            PathBuf::from("filename.etcd")
        );
    }

    #[test]
    fn initial_cluster_follows_name_and_peer_urls() {
        assert_eq!(
            run(&["--name=n1"]).unwrap().initial_cluster,
            "n1=http://localhost:2380"
        );
        let c = run(&[
            "--name=n1",
            "--initial-advertise-peer-urls=http://10.0.0.2:2380,http://10.0.0.1:2380",
        ])
        .unwrap();
        assert_eq!(
            c.initial_cluster,
            "n1=http://10.0.0.1:2380,n1=http://10.0.0.2:2380"
        );
        c.verify_bootstrap().unwrap();
        // An explicit --initial-cluster is kept.
        let c = run(&[
            "--name=n1",
            "--initial-cluster=n1=http://localhost:2380,n2=http://h2:2380",
        ])
        .unwrap();
        assert_eq!(
            c.initial_cluster,
            "n1=http://localhost:2380,n2=http://h2:2380"
        );
        // etcd quirk: with the default name the default cluster is not rewritten,
        // so changed peer URLs then fail bootstrap verification, as in etcd.
        let c = run(&["--initial-advertise-peer-urls=http://10.0.0.1:2380"]).unwrap();
        assert_eq!(c.initial_cluster, "default=http://localhost:2380");
        assert_eq!(
            c.verify_bootstrap().unwrap_err().to_string(),
            "ferrocd: --initial-cluster has default=http://localhost:2380 but missing from --initial-advertise-peer-urls=http://10.0.0.1:2380 (resolved urls: \"http://10.0.0.1:2380\" != \"http://localhost:2380\")"
        );
    }

    #[test]
    fn bootstrap_verification_messages() {
        let c = run(&["--name=n3", "--initial-cluster=n1=http://127.0.0.1:1"]).unwrap();
        assert_eq!(
            c.verify_bootstrap().unwrap_err().to_string(),
            "ferrocd: couldn't find local name \"n3\" in the initial cluster configuration"
        );
        let c = run(&[
            "--name=n1",
            "--initial-advertise-peer-urls=http://127.0.0.1:1,http://127.0.0.1:2",
            "--initial-cluster=n1=http://127.0.0.1:1",
        ])
        .unwrap();
        assert_eq!(
            c.verify_bootstrap().unwrap_err().to_string(),
            "ferrocd: --initial-advertise-peer-urls has http://127.0.0.1:2 but missing from --initial-cluster=n1=http://127.0.0.1:1,n1=http://127.0.0.1:2"
        );
        let c = run(&[
            "--name=n1",
            "--initial-advertise-peer-urls=http://127.0.0.1:1",
            "--initial-cluster=n1=http://127.0.0.1:1,n2=http://127.0.0.1:1",
        ])
        .unwrap();
        assert_eq!(
            c.verify_bootstrap().unwrap_err().to_string(),
            "ferrocd: initial cluster n1=http://127.0.0.1:1,n2=http://127.0.0.1:1 has duplicate url"
        );
        let c = run(&["--name=n1", "--initial-cluster=n1=https://127.0.0.1:1"]).unwrap();
        assert!(c
            .initial_cluster_members()
            .unwrap_err()
            .to_string()
            .starts_with("ferrocd: error setting up initial cluster: URL scheme https"));
        // IP literals compare as addresses, like etcd's resolution step.
        let c = run(&[
            "--name=n1",
            "--initial-advertise-peer-urls=http://[::1]:1",
            "--initial-cluster=n1=http://[0:0::1]:1",
        ])
        .unwrap();
        c.verify_bootstrap().unwrap();
        let members = parse_initial_cluster("b=http://h:2,a=http://h:1,b=http://h:0,,").unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(
            (members[0].name.as_str(), strs(&members[0].peer_urls)),
            ("a", vec!["http://h:1"])
        );
        assert_eq!(strs(&members[1].peer_urls), ["http://h:0", "http://h:2"]);
    }

    #[test]
    fn member_and_cluster_ids_match_etcd() {
        // A default etcd 3.4/3.5 member: "added member 8e9e05c52164694d
        // [http://localhost:2380] to cluster cdf818194e3a8c32".
        let m = compute_member_id(&["http://localhost:2380"], "etcd-cluster", None);
        assert_eq!(format!("{m:x}"), "8e9e05c52164694d");
        assert_eq!(
            format!("{:x}", compute_cluster_id(&[m])),
            "cdf818194e3a8c32"
        );
        let b = run(&[]).unwrap().bootstrap_cluster().unwrap();
        assert_eq!(b.local_member_id, 0x8e9e05c52164694d);
        assert_eq!(b.cluster_id, 0xcdf818194e3a8c32);
        // etcd's membership TestMemberTime vectors (names do not matter; URL order does not matter).
        let t = 472_662_245; // 1984-12-23T15:04:05Z
        assert_eq!(
            compute_member_id(&["http://10.0.0.8:2379"], "", None),
            14544069596553697298
        );
        assert_eq!(
            compute_member_id(&["http://10.0.0.8:2379"], "", Some(t)),
            2448790162483548276
        );
        assert_eq!(
            compute_member_id(&["http://10.0.0.8:2379"], "etcd", Some(t)),
            6973882743191604649
        );
        assert_eq!(
            compute_member_id(&["http://10.0.0.1:2379"], "", Some(t)),
            1466075294948436910
        );
        assert_eq!(
            compute_member_id(&["http://10.0.0.1:2379", "http://10.0.0.2:2379"], "", None),
            16552244735972308939
        );
        assert_eq!(
            compute_member_id(&["http://10.0.0.2:2379", "http://10.0.0.1:2379"], "", None),
            16552244735972308939
        );
        // The cluster id ignores member order.
        assert_eq!(
            compute_cluster_id(&[1, 2, 3]),
            compute_cluster_id(&[3, 1, 2])
        );
        assert_ne!(compute_cluster_id(&[1, 2]), compute_cluster_id(&[1, 2, 3]));
        // A three-member bootstrap: every member computes the same cluster id.
        let cluster = "n1=http://10.0.0.1:2380,n2=http://10.0.0.2:2380,n3=http://10.0.0.3:2380";
        let ids: Vec<BootstrapCluster> = (1..=3)
            .map(|i| {
                let name = format!("--name=n{i}");
                let peer = format!("--initial-advertise-peer-urls=http://10.0.0.{i}:2380");
                let cluster = format!("--initial-cluster={cluster}");
                run(&[
                    name.as_str(),
                    peer.as_str(),
                    cluster.as_str(),
                    "--initial-cluster-token=t",
                ])
                .unwrap()
                .bootstrap_cluster()
                .unwrap()
            })
            .collect();
        assert!(ids
            .iter()
            .all(|b| b.cluster_id == ids[0].cluster_id && b.members == ids[0].members));
        assert_eq!(
            ids[1].local_member_id,
            compute_member_id(&["http://10.0.0.2:2380"], "t", None)
        );
    }
}

/// Go's `time.ParseDuration`: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+` or `0`,
/// units ns, us (µs, μs), ms, s, m, h; nanoseconds, or `None` on any error
/// (including overflow).
fn go_parse_duration_ns(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, next) = after.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().ok()?
        };
        let mut v = int.checked_mul(scale)?;
        if !frac_part.is_empty() {
            let digits = frac_part.len().min(30) as u32;
            let frac: u128 = frac_part[..digits as usize].parse().ok()?;
            v = v.checked_add(frac.checked_mul(scale)? / 10u128.pow(digits))?;
        }
        total = total.checked_add(v)?;
        rest = next;
    }
    let total = i64::try_from(total).ok()?;
    Some(if neg { -total } else { total })
}

#[cfg(test)]
mod duration_tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        for (s, ns) in [
            ("0", 0),
            ("10m", 600_000_000_000),
            ("1s", 1_000_000_000),
            ("1.5s", 1_500_000_000),
            ("1h2m3s", 3_723_000_000_000),
            ("250ms", 250_000_000),
            ("3us", 3_000),
            ("-2s", -2_000_000_000),
            (".5s", 500_000_000),
        ] {
            assert_eq!(go_parse_duration_ns(s), Some(ns), "{s}");
        }
        for bad in ["", "1", "s", "1x", "1.2.3s", "-", "9999999999h"] {
            assert_eq!(go_parse_duration_ns(bad), None, "{bad}");
        }
    }

    #[test]
    fn progress_notify_interval_from_flag_env_and_default() {
        let run = |args: &[&str], env: &[(&str, &str)]| {
            let args: Vec<String> = args.iter().map(|s| (*s).to_string()).collect();
            let env: Vec<(String, String)> = env
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect();
            match parse(&args, &env) {
                Ok(Invocation::Run(c)) => Ok(c.watch_progress_notify_interval_ms),
                Ok(_) => panic!("not a run"),
                Err(e) => Err(e.to_string()),
            }
        };
        assert_eq!(run(&[], &[]), Ok(600_000));
        assert_eq!(
            run(&["--experimental-watch-progress-notify-interval=1s"], &[]),
            Ok(1_000)
        );
        assert_eq!(
            run(
                &[],
                &[("ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL", "250ms")]
            ),
            Ok(250)
        );
        let e = run(&["--experimental-watch-progress-notify-interval=soon"], &[]).unwrap_err();
        assert!(e.contains("invalid value \"soon\" for flag -experimental-watch-progress-notify-interval: parse error"), "{e}");
    }
}
