//! Header hygiene in one place: every header name the guard reads or writes, the removal
//! of reserved (`x-hti-*`) and hop-by-hop headers, the forwarding headers, and the trusted
//! claim headers set on an accepted launch.

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::verify::VerifiedLaunch;

pub const X_HTI_ISS: HeaderName = HeaderName::from_static("x-hti-iss");
pub const X_HTI_SUB: HeaderName = HeaderName::from_static("x-hti-sub");
pub const X_HTI_RESOURCE: HeaderName = HeaderName::from_static("x-hti-resource");
pub const X_HTI_PATIENT: HeaderName = HeaderName::from_static("x-hti-patient");
pub const X_HTI_DEFINITION: HeaderName = HeaderName::from_static("x-hti-definition");
pub const X_HTI_INTENT: HeaderName = HeaderName::from_static("x-hti-intent");
pub const X_HTI_JTI: HeaderName = HeaderName::from_static("x-hti-jti");
pub const X_HTI_CLAIMS: HeaderName = HeaderName::from_static("x-hti-claims");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Hop-by-hop headers (RFC 9110 7.6.1 and the de-facto ones), never forwarded.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether a header name is reserved for the guard: lowercased, with `_` read as `-`, it
/// starts with `x-hti-`.
pub fn is_reserved(name: &HeaderName) -> bool {
    let b = name.as_str().as_bytes();
    b.len() >= 6
        && b[0] == b'x'
        && (b[1] == b'-' || b[1] == b'_')
        && &b[2..5] == b"hti"
        && (b[5] == b'-' || b[5] == b'_')
}

/// Remove every reserved header; returns how many values went.
pub fn strip_reserved(headers: &mut HeaderMap) -> usize {
    if !headers.keys().any(is_reserved) {
        return 0;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|n| is_reserved(n)).cloned().collect();
    let mut removed = 0;
    for name in names {
        if let header::Entry::Occupied(entry) = headers.entry(name) {
            removed += entry.remove_entry_mult().1.count();
        }
    }
    removed
}

/// The protocol a request asks to switch to (`Upgrade`, with `Connection: upgrade`).
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"));
    if asks {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Remove hop-by-hop headers and those the `Connection` header names. When `upgrade` is
/// given (a protocol switch being passed through), `Connection: upgrade` and `Upgrade`
/// are put back, as the switch needs them on the next hop.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<HeaderValue>) {
    // One pass over the names present is cheaper than nine lookups, and most messages
    // carry none of these (or only `Connection`, as in `Connection: keep-alive`): only the
    // names that are there are removed, and the `Connection` tokens are matched against
    // them rather than parsed into names of their own.
    if headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        let remove: Vec<HeaderName> = headers
            .keys()
            .filter(|name| {
                HOP_BY_HOP.contains(name)
                    || connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(name.as_str()))
            })
            .cloned()
            .collect();
        for name in remove {
            headers.remove(name);
        }
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
}

/// Set `X-Forwarded-For` (appended), `-Proto` and `-Host` (replaced).
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client: IpAddr,
    tls: bool,
    host: Option<HeaderValue>,
) {
    let client = client.to_string();
    let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(previous) if !previous.trim().is_empty() => format!("{}, {client}", previous.trim()),
        _ => client,
    };
    headers.remove(&X_FORWARDED_FOR);
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    match host {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST, host);
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
}

/// The request id: the client's when it is sane (1 to 128 of `A-Za-z0-9._:-`), else new.
pub fn request_id(headers: &HeaderMap) -> String {
    if let Some(id) = headers.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok())
        && is_sane_request_id(id)
    {
        return id.to_owned();
    }
    uuid::Uuid::new_v4().to_string()
}

fn is_sane_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Set the trusted claim headers of an accepted launch. The claim values were checked to be
/// visible ASCII, so none is dropped here.
pub fn set_trusted(headers: &mut HeaderMap, launch: &VerifiedLaunch) {
    let c = &launch.claims;
    let mut put = |name: HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    put(X_HTI_ISS, &c.iss);
    put(X_HTI_SUB, &c.sub);
    put(X_HTI_RESOURCE, &c.resource);
    if let Some(p) = &c.patient {
        put(X_HTI_PATIENT, p);
    }
    if let Some(d) = &c.definition {
        put(X_HTI_DEFINITION, d);
    }
    if let Some(i) = &c.intent {
        put(X_HTI_INTENT, i);
    }
    put(X_HTI_JTI, &c.jti);
    put(X_HTI_CLAIMS, &URL_SAFE_NO_PAD.encode(&launch.claims_json));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn reserved_names_and_aliases() {
        let reserved = [
            "x-hti-sub",
            "X-HTI-Claims",
            "x_hti_sub",
            "x-hti_iss",
            "X_Hti-Anything",
            "x-hti-",
        ];
        for name in reserved {
            assert!(
                is_reserved(&HeaderName::from_bytes(name.as_bytes()).unwrap()),
                "{name}"
            );
        }
        for name in [
            "x-htix",
            "x-ht-i",
            "hti-sub",
            "x-request-id",
            "xhti-sub",
            "x-hti",
        ] {
            assert!(
                !is_reserved(&HeaderName::from_bytes(name.as_bytes()).unwrap()),
                "{name}"
            );
        }
    }

    #[test]
    fn strip_reserved_counts_every_value() {
        let mut h = map(&[
            ("x-hti-sub", "a"),
            ("x-hti-sub", "b"),
            ("x_hti_iss", "c"),
            ("accept", "d"),
        ]);
        assert_eq!(strip_reserved(&mut h), 3);
        assert_eq!(h.len(), 1);
        assert_eq!(strip_reserved(&mut h), 0);
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h, None);
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            vec!["accept"]
        );
    }

    #[test]
    fn upgrades_keep_their_headers() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        let proto = upgrade_protocol(&h);
        assert_eq!(proto.as_ref().unwrap(), "websocket");
        strip_hop_by_hop(&mut h, proto);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-key"], "k");
    }

    #[test]
    fn forwarded_headers() {
        let mut h = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
        ]);
        set_forwarded(
            &mut h,
            "127.0.0.1".parse().unwrap(),
            false,
            Some(HeaderValue::from_static("app.example")),
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.example");
    }

    #[test]
    fn request_ids_are_kept_when_sane() {
        assert_eq!(request_id(&map(&[("x-request-id", "abc-123")])), "abc-123");
        let fresh = request_id(&map(&[("x-request-id", "a b<script>")]));
        assert_eq!(fresh.len(), 36);
        assert_eq!(request_id(&HeaderMap::new()).len(), 36);
    }
}
