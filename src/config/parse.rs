//! Value parsers the sections share: durations, sizes, addresses, URLs, paths. Each names
//! the key it was given in its error.

use std::net::SocketAddr;
use std::time::Duration;

use http::Uri;

use super::{ConfigError, invalid};

/// Parse a humantime duration such as "30s", "5m", "500ms".
pub fn parse_duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value.trim()).map_err(|e| {
        invalid(
            key,
            format!("invalid duration {value:?} ({e}); use e.g. \"30s\""),
        )
    })
}

/// Parse a size such as "64KiB", "1MiB", "65536".
pub fn parse_size(key: &str, value: &str) -> Result<usize, ConfigError> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| invalid(key, format!("invalid size {value:?}; use e.g. \"64KiB\"")))?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" | "KB" | "kB" => 1024,
        "MiB" | "M" | "MB" => 1024 * 1024,
        "GiB" | "G" | "GB" => 1024 * 1024 * 1024,
        _ => {
            return Err(invalid(
                key,
                format!("invalid size unit in {value:?}; use B, KiB, MiB or GiB"),
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| invalid(key, format!("size {value:?} is too large")))
}

pub(super) fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        invalid(
            key,
            format!("invalid listen address {value:?}; use host:port, e.g. \"0.0.0.0:8080\""),
        )
    })
}

pub(super) fn positive(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let d = parse_duration(key, value)?;
    if d.is_zero() {
        return Err(invalid(key, "must be longer than zero"));
    }
    Ok(d)
}

pub(super) fn non_empty_list(key: &str, list: &[String]) -> Result<(), ConfigError> {
    if list.is_empty() {
        return Err(invalid(key, "must name at least one value"));
    }
    if list.iter().any(|s| s.trim().is_empty()) {
        return Err(invalid(key, "values must not be empty"));
    }
    Ok(())
}

/// A value that will be sent as a header must be visible ASCII.
pub(super) fn header_safe(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{value:?} must be printable ASCII without spaces"),
        ))
    }
}

pub(super) fn parse_http_url(key: &str, value: &str) -> Result<String, ConfigError> {
    let uri: Uri = value
        .parse()
        .map_err(|e| invalid(key, format!("invalid URL {value:?}: {e}")))?;
    match uri.scheme_str() {
        Some("http") | Some("https") if uri.host().is_some() => Ok(value.to_string()),
        _ => Err(invalid(
            key,
            format!("{value:?} must be an http:// or https:// URL"),
        )),
    }
}

/// An absolute `https://` URL with a host.
pub(super) fn https_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let uri: Uri = value
        .parse()
        .map_err(|e| invalid(key, format!("invalid URL {value:?}: {e}")))?;
    match uri.scheme_str() {
        Some("https") if uri.host().is_some_and(|h| !h.is_empty()) => Ok(()),
        _ => Err(invalid(
            key,
            format!("{value:?} must be a path on this site or an https:// URL"),
        )),
    }
}

/// A path as requests are matched: starting with '/', in normal form (requests are
/// normalised before matching, so a path that is not would never match).
pub(super) fn normal_path(key: &str, p: &str) -> Result<(), ConfigError> {
    if !p.starts_with('/') {
        return Err(invalid(key, format!("{p:?} must start with '/'")));
    }
    match super::path::normalize(p) {
        Ok(normal) if normal == p => Ok(()),
        Ok(normal) => Err(invalid(
            key,
            format!("{p:?} is not in normal form (requests are matched as {normal:?})"),
        )),
        Err(e) => Err(invalid(key, format!("{p:?}: {}", e.detail()))),
    }
}

/// A same-origin path for a redirect: starts with one '/', and neither `//` nor `/\` (which
/// browsers read as another host), no control bytes or spaces.
pub(super) fn same_origin_path(key: &str, p: &str) -> Result<(), ConfigError> {
    let b = p.as_bytes();
    if b.first() != Some(&b'/') || matches!(b.get(1), Some(b'/' | b'\\')) {
        return Err(invalid(
            key,
            format!("{p:?} must be a path on this site: starting with one '/', not '//' or '/\\'"),
        ));
    }
    if b.iter().any(|&c| c <= b' ' || c == 0x7f || c == b'\\') {
        return Err(invalid(
            key,
            format!("{p:?} holds a space, a control byte or a backslash"),
        ));
    }
    Ok(())
}
