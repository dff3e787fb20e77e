//! How the guard serves: `[timeouts]`, `[limits]`, `[tls]` and `[reload]`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::parse::{parse_size, positive};
use super::{ConfigError, invalid};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTimeouts {
    request_headers: String,
    idle: String,
    request_body: String,
    upstream_connect: String,
    upstream_response: String,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        Self {
            request_headers: "10s".into(),
            // nginx's keepalive_timeout and send_timeout, Envoy's idle_timeout order.
            idle: "60s".into(),
            // nginx's client_body_timeout is 60 s; a launch form is small, so half that.
            request_body: "30s".into(),
            upstream_connect: "2s".into(),
            upstream_response: "60s".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    pub request_headers: Duration,
    /// A connection with no request in progress, and a write to a client that reads
    /// nothing, end after this.
    pub idle: Duration,
    /// A request body that sends nothing for this long ends its request.
    pub request_body: Duration,
    pub upstream_connect: Duration,
    pub upstream_response: Duration,
}

impl RawTimeouts {
    pub(super) fn validate(self) -> Result<Timeouts, ConfigError> {
        Ok(Timeouts {
            request_headers: positive("timeouts.request_headers", &self.request_headers)?,
            upstream_connect: positive("timeouts.upstream_connect", &self.upstream_connect)?,
            idle: positive("timeouts.idle", &self.idle)?,
            request_body: positive("timeouts.request_body", &self.request_body)?,
            upstream_response: positive("timeouts.upstream_response", &self.upstream_response)?,
        })
    }
}

/// `[reload]`: besides SIGHUP, a poll of the configuration file's content (a Kubernetes
/// ConfigMap mount swaps a `..data` symlink, which a watch on the file itself misses).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawReload {
    watch: bool,
    watch_interval: String,
}

impl Default for RawReload {
    fn default() -> Self {
        Self {
            watch: false,
            watch_interval: "5s".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReloadConfig {
    /// Re-read the configuration when the file's content changes.
    pub watch: bool,
    /// How often the file is read for that.
    pub watch_interval: Duration,
}

impl RawReload {
    pub(super) fn validate(self) -> Result<ReloadConfig, ConfigError> {
        Ok(ReloadConfig {
            watch: self.watch,
            watch_interval: positive("reload.watch_interval", &self.watch_interval)?,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLimits {
    max_connections: Option<i64>,
    max_memory: Option<String>,
}

/// Bounds on what the guard takes on (`[limits]`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open client connections on the public listener; the accept loop waits beyond it.
    pub max_connections: usize,
    /// Above 90 % of this resident set size new requests get 503 `overloaded`; `None`: no
    /// limit.
    pub max_memory: Option<u64>,
}

/// The most `limits.max_connections` may be.
const MAX_CONNECTIONS: i64 = 1_000_000;
/// The default `limits.max_connections` when the open-files limit does not lower it.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// File descriptors kept for everything but client connections (listeners, key fetches,
/// Redis, logs).
const RESERVED_FDS: u64 = 64;
/// File descriptors each worker's runtime holds (its epoll and waker descriptors).
const FDS_PER_WORKER: u64 = 4;

/// The default `limits.max_connections`: 10 000, or fewer when the open-files limit
/// (`RLIMIT_NOFILE`) cannot hold them: each client connection may hold an upstream
/// connection too, so half of what is left after a reserve and the workers' runtimes.
pub(super) fn default_max_connections(open_files: Option<u64>, workers: usize) -> usize {
    match open_files {
        Some(n) => {
            let reserved = RESERVED_FDS + FDS_PER_WORKER * workers as u64;
            let fit = n.saturating_sub(reserved) / 2;
            (fit.clamp(1, DEFAULT_MAX_CONNECTIONS as u64)) as usize
        }
        None => DEFAULT_MAX_CONNECTIONS,
    }
}

impl RawLimits {
    /// `workers`: the worker threads, whose runtimes take descriptors too.
    pub(super) fn validate(self, workers: usize) -> Result<Limits, ConfigError> {
        let max_connections = match self.max_connections {
            None => default_max_connections(super::system::open_files_limit(), workers),
            Some(n) if (1..=MAX_CONNECTIONS).contains(&n) => n as usize,
            Some(n) => {
                return Err(invalid(
                    "limits.max_connections",
                    format!("{n} is out of range (1 to {MAX_CONNECTIONS})"),
                ));
            }
        };
        let max_memory = match self.max_memory.as_deref().map(str::trim) {
            None => super::system::cgroup_memory_max(),
            Some("off") => None,
            Some(value) => {
                let bytes = parse_size("limits.max_memory", value)?;
                if bytes == 0 {
                    return Err(invalid(
                        "limits.max_memory",
                        "must be larger than zero (or \"off\")",
                    ));
                }
                Some(bytes as u64)
            }
        };
        Ok(Limits {
            max_connections,
            max_memory,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The certificate chain and key, loaded and checked at startup (ALPN h2, http/1.1).
    pub server_config: std::sync::Arc<rustls::ServerConfig>,
}

impl RawTls {
    pub(super) fn validate(self) -> Result<Option<TlsConfig>, ConfigError> {
        let tls = match (self.cert_file, self.key_file) {
            (None, None) => None,
            (Some(cert_file), Some(key_file)) => Some(load_tls(cert_file, key_file)?),
            (Some(_), None) => {
                return Err(invalid(
                    "tls.key_file",
                    "is required when tls.cert_file is set",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "tls.cert_file",
                    "is required when tls.key_file is set",
                ));
            }
        };
        Ok(tls)
    }
}

fn load_tls(cert_file: PathBuf, key_file: PathBuf) -> Result<TlsConfig, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_file)
        .and_then(|iter| iter.collect())
        .map_err(|e| invalid("tls.cert_file", format!("{}: {e}", cert_file.display())))?;
    if certs.is_empty() {
        return Err(invalid(
            "tls.cert_file",
            format!("{}: no certificate found", cert_file.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&key_file)
        .map_err(|e| invalid("tls.key_file", format!("{}: {e}", key_file.display())))?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("tls.cert_file", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid("tls.key_file", format!("does not match tls.cert_file: {e}")))?;
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsConfig {
        cert_file,
        key_file,
        server_config: std::sync::Arc::new(server_config),
    })
}

/// One `trusted_proxies` entry: an address and a prefix length (a bare address is the one
/// host). An IPv4-mapped IPv6 peer (`::ffff:a.b.c.d`) is matched as the IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in this range.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = ip.to_canonical();
        let bits = |a: u128, b: u128, width: u32| {
            let shift = width - u32::from(self.prefix);
            shift >= width || (a >> shift) == (b >> shift)
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                bits(u32::from(net).into(), u32::from(ip).into(), 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => bits(u128::from(net), u128::from(ip), 128),
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parse `trusted_proxies`: each entry `address/prefix` or a bare address.
pub(super) fn parse_trusted_proxies(values: &[String]) -> Result<Vec<Cidr>, ConfigError> {
    values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            parse_cidr(value.trim()).ok_or_else(|| {
                invalid(
                    format!("trusted_proxies[{i}]"),
                    format!("{value:?} is not a CIDR (address/prefix)"),
                )
            })
        })
        .collect()
}

fn parse_cidr(value: &str) -> Option<Cidr> {
    let (addr, prefix) = match value.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (value, None),
    };
    let addr: std::net::IpAddr = addr.parse().ok()?;
    let addr = addr.to_canonical();
    let width = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => width,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
        Some(_) => return None,
    };
    (prefix <= width).then_some(Cidr { addr, prefix })
}

#[cfg(test)]
mod cidr_tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_match() {
        let c = parse_cidr("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let c = parse_cidr("192.168.1.7").unwrap();
        assert!(c.contains("192.168.1.7".parse().unwrap()));
        assert!(!c.contains("192.168.1.8".parse().unwrap()));
        assert!(
            parse_cidr("0.0.0.0/0")
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        let c = parse_cidr("fd00::/8").unwrap();
        assert!(c.contains("fd12::1".parse().unwrap()));
        assert!(!c.contains("fe80::1".parse().unwrap()));
        assert!(parse_cidr("::1").unwrap().contains("::1".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "x/8",
            "",
            "10.0.0/8",
        ] {
            assert!(parse_cidr(bad).is_none(), "{bad}");
        }
        let err = parse_trusted_proxies(&["10.0.0.0/8".into(), "10.0.0.0/33".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            r#"trusted_proxies[1]: "10.0.0.0/33" is not a CIDR (address/prefix)"#
        );
    }
}
