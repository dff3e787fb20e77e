//! Header hygiene in one place: every header name the guard reads or writes, the removal
//! of reserved (`x-hti-*`) and hop-by-hop headers, the forwarding headers, and the trusted
//! claim headers set on an accepted launch.

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::error::{Reason, Rejection};
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

/// Hop-by-hop headers (RFC 9110 7.6.1 and the de-facto ones), never forwarded. As text:
/// a name's `as_str` compared with these is cheaper than `HeaderName` equality.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// [`HOP_BY_HOP`] as header names, in the same order.
static HOP_BY_HOP_NAMES: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Where a (lowercase) header name is in [`HOP_BY_HOP`]: its length picks the one or two
/// candidates, so that a header that is none of them costs one comparison at most.
fn hop_index(name: &str) -> Option<usize> {
    let first = name.as_bytes().first().copied();
    let i = match name.len() {
        2 => 5,
        7 if first == Some(b't') => 6,
        7 => 8,
        10 if first == Some(b'c') => 0,
        10 => 1,
        16 => 2,
        17 => 7,
        18 => 3,
        19 => 4,
        _ => return None,
    };
    (HOP_BY_HOP[i] == name).then_some(i)
}

/// Whether a header name, lowercased (as every `HeaderName` is) and with `_` and `.` read
/// as `-`, is `name`: the forms servers and frameworks fold together (CGI, PHP, WSGI and
/// Rack turn `-` and `.` into `_`), so that no alias of a header reaches the app.
fn folds_to(name: &HeaderName, target: &str) -> bool {
    let b = name.as_str().as_bytes();
    b.len() == target.len()
        && b.iter()
            .zip(target.as_bytes())
            .all(|(&c, &t)| c == t || (t == b'-' && (c == b'_' || c == b'.')))
}

/// Whether a header name is reserved for the guard: lowercased, with `_` and `.` read as
/// `-`, it starts with `x-hti-`.
pub fn is_reserved(name: &HeaderName) -> bool {
    let b = name.as_str().as_bytes();
    let sep = |c: u8| matches!(c, b'-' | b'_' | b'.');
    b.len() >= 6 && b[0] == b'x' && sep(b[1]) && &b[2..5] == b"hti" && sep(b[5])
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

/// The protocol a request asks to switch to (`Upgrade`, with `Connection: upgrade`), when
/// it is `websocket`: the only switch passed on. Any other (`h2c` above all, which would
/// open a tunnel of raw HTTP/2 frames past the header rules) is dropped with the other
/// hop-by-hop headers, and the request goes on as plain HTTP/1.1.
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"));
    if !asks {
        return None;
    }
    let mut values = headers.get_all(header::UPGRADE).iter();
    let value = values.next()?;
    let only_websocket = values.next().is_none()
        && value
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    only_websocket.then(|| value.clone())
}

/// Whether a response's `Upgrade` switches to `websocket`.
pub fn is_websocket(upgrade: Option<&HeaderValue>) -> bool {
    upgrade
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
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

/// [`strip_hop_by_hop`] for a request, finding the websocket switch it asks for
/// ([`upgrade_protocol`], HTTP/1.1 only) in the same pass: a request without a
/// `Connection` header asks for none, and costs no lookup.
pub(crate) fn strip_request_hop_by_hop(
    headers: &mut HeaderMap,
    http11: bool,
) -> Option<HeaderValue> {
    let present = hop_by_hop_present(headers);
    let upgrade = match present {
        Some(p) if http11 && p[0] => upgrade_protocol(headers),
        _ => None,
    };
    if let Some(present) = present {
        remove_hop_by_hop(headers, present);
    }
    if let Some(protocol) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
    upgrade
}

/// Which of [`HOP_BY_HOP`] a message carries, `None` for none of them: one pass over the
/// names present, cheaper than nine lookups.
fn hop_by_hop_present(headers: &HeaderMap) -> Option<[bool; HOP_BY_HOP.len()]> {
    let mut present = [false; HOP_BY_HOP.len()];
    let mut any = false;
    for name in headers.keys() {
        if let Some(i) = hop_index(name.as_str()) {
            present[i] = true;
            any = true;
        }
    }
    any.then_some(present)
}

/// Remove the hop-by-hop headers `present` and those the `Connection` header names. Most
/// messages carry none of these, or only `Connection` (as in `Connection: keep-alive`),
/// whose tokens are then looked up as they are (no name parsed or copied unless a header
/// of that name is there). Nothing is allocated unless `Connection` names another header.
fn remove_hop_by_hop(headers: &mut HeaderMap, present: [bool; HOP_BY_HOP.len()]) {
    let mut named: Vec<HeaderName> = Vec::new();
    // `keep-alive` and `close`, the values nearly every `Connection` header has, name no
    // other header: no tokens to split and look up.
    let plain = |v: &HeaderValue| {
        let v = v.as_bytes();
        v.eq_ignore_ascii_case(b"keep-alive") || v.eq_ignore_ascii_case(b"close")
    };
    if present[0] && !headers.get_all(header::CONNECTION).iter().all(plain) {
        for token in connection_tokens(headers) {
            let hop = HOP_BY_HOP.iter().any(|h| token.eq_ignore_ascii_case(h));
            if !hop
                && headers.contains_key(token)
                && let Ok(name) = HeaderName::from_bytes(token.as_bytes())
            {
                named.push(name);
            }
        }
    }
    for (name, _) in HOP_BY_HOP_NAMES.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
    for name in named {
        headers.remove(name);
    }
}

/// Remove hop-by-hop headers and those the `Connection` header names. When `upgrade` is
/// given (a protocol switch being passed through), `Connection: upgrade` and `Upgrade`
/// are put back, as the switch needs them on the next hop.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<HeaderValue>) {
    if let Some(present) = hop_by_hop_present(headers) {
        remove_hop_by_hop(headers, present);
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
}

/// Headers that tell an app where a request came from or what it asked for, and that a
/// client must not be able to set: the guard sets the three `X-Forwarded-*` it vouches for
/// and removes the rest (and their `_`/`.` aliases), as Envoy and nginx do at the edge.
const CLIENT_FORWARDING: [&str; 14] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-forwarded-server",
    "x-real-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-original-host",
    "x-original-uri",
];

fn is_client_forwarding(name: &HeaderName) -> bool {
    let s = name.as_str();
    // All of them start with "x" or "f": one byte decides for most headers.
    matches!(s.as_bytes().first(), Some(b'x' | b'f'))
        && CLIENT_FORWARDING.iter().any(|f| folds_to(name, f))
}

/// Set the forwarding headers. From a peer that is not a trusted proxy (`trusted` false)
/// they are replaced with what the guard saw: `X-Forwarded-For` is the peer, `-Proto` the
/// listener's scheme, `-Host` the request's host; every other forwarding or path-override
/// header a client sent (`Forwarded`, `X-Real-IP`, `X-Original-URL`, ...) is removed.
/// From a trusted proxy the chain is kept and extended, as nginx's
/// `$proxy_add_x_forwarded_for` and Envoy's `xff_num_trusted_hops` do: `X-Forwarded-For`
/// is the incoming list with the peer appended, `-Proto`, `-Host` and `Forwarded` are kept
/// when present (`-Proto` and `-Host` set as above otherwise); the rest still goes.
/// `client` is the peer's address as [`client_address`] writes it, once per connection.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client: &HeaderValue,
    tls: bool,
    host: Option<HeaderValue>,
    trusted: bool,
) {
    let kept = if trusted {
        Kept {
            for_: joined(headers, &X_FORWARDED_FOR),
            proto: headers.get(&X_FORWARDED_PROTO).cloned(),
            host: headers.get(&X_FORWARDED_HOST).cloned(),
            forwarded: headers.get_all(header::FORWARDED).iter().cloned().collect(),
        }
    } else {
        Kept::default()
    };
    if headers.keys().any(is_client_forwarding) {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|n| is_client_forwarding(n))
            .cloned()
            .collect();
        for name in names {
            headers.remove(name);
        }
    }
    let value = match kept.for_ {
        Some(mut chain) => {
            chain.extend_from_slice(b", ");
            chain.extend_from_slice(client.as_bytes());
            HeaderValue::from_bytes(&chain).ok()
        }
        None => Some(client.clone()),
    };
    if let Some(value) = value {
        headers.insert(X_FORWARDED_FOR, value);
    }
    let proto = kept
        .proto
        .unwrap_or_else(|| HeaderValue::from_static(if tls { "https" } else { "http" }));
    headers.insert(X_FORWARDED_PROTO, proto);
    if let Some(host) = kept.host.or(host) {
        headers.insert(X_FORWARDED_HOST, host);
    }
    for value in kept.forwarded {
        headers.append(header::FORWARDED, value);
    }
}

/// A peer's address as the header value `X-Forwarded-For` gets: made once for a connection,
/// so that its requests share it instead of writing and allocating it each.
pub fn client_address(ip: IpAddr) -> HeaderValue {
    let mut buf = [0u8; 39];
    HeaderValue::from_bytes(ip_text(ip, &mut buf)).expect("an IP address is a header value")
}

/// `ip` as text in `buf` (39 bytes hold the longest IPv6 address): an IPv4 address digit
/// by digit, as `fmt` would write it at a tenth of the cost; IPv6 through `fmt`.
fn ip_text(ip: IpAddr, buf: &mut [u8; 39]) -> &[u8] {
    match ip {
        IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    buf[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    buf[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                buf[len] = b'0' + octet % 10;
                len += 1;
            }
            &buf[..len]
        }
        IpAddr::V6(_) => {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cursor, "{ip}");
            let len = usize::try_from(cursor.position()).unwrap_or(0);
            &buf[..len]
        }
    }
}

/// What a trusted proxy's forwarding headers carried, kept across the removal.
#[derive(Default)]
struct Kept {
    for_: Option<Vec<u8>>,
    proto: Option<HeaderValue>,
    host: Option<HeaderValue>,
    forwarded: Vec<HeaderValue>,
}

/// Every value of `name` joined with `, ` (a list header sent as several lines is one
/// list), or `None` when there is none or only empty ones.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for value in headers.get_all(name) {
        let v = value.as_bytes().trim_ascii();
        if v.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(v);
    }
    (!out.is_empty()).then_some(out)
}

/// What a request's error page and request id are made from, read in one pass over its
/// headers rather than looked up one by one (each lookup hashes its name): the first
/// `X-Request-Id`, `Accept` and `Accept-Language`.
#[derive(Default)]
pub(crate) struct Read {
    pub request_id: Option<HeaderValue>,
    pub accept: Option<HeaderValue>,
    pub accept_language: Option<HeaderValue>,
}

impl Read {
    pub(crate) fn from(headers: &HeaderMap) -> Read {
        let mut read = Read::default();
        // A map's values come name by name, each name's first value first.
        for (name, value) in headers {
            let slot = if *name == header::ACCEPT {
                &mut read.accept
            } else if *name == header::ACCEPT_LANGUAGE {
                &mut read.accept_language
            } else if *name == X_REQUEST_ID {
                &mut read.request_id
            } else {
                continue;
            };
            if slot.is_none() {
                *slot = Some(value.clone());
            }
        }
        read
    }

    /// [`request_id_value`] of what was read.
    pub(crate) fn request_id(&self) -> HeaderValue {
        sane_or_new(self.request_id.as_ref())
    }
}

/// The request id: the client's when it is sane (1 to 128 of `A-Za-z0-9._:-`), else new.
pub fn request_id(headers: &HeaderMap) -> String {
    let id = request_id_value(headers);
    id.to_str().unwrap_or_default().to_owned()
}

/// [`request_id`] as the header value to send on: the client's kept as it came (no copy),
/// else a [`new_request_id`]. Always visible ASCII, so `to_str` never fails on it.
pub(crate) fn request_id_value(headers: &HeaderMap) -> HeaderValue {
    sane_or_new(headers.get(&X_REQUEST_ID))
}

/// The client's request id when it is sane, else a new one.
fn sane_or_new(id: Option<&HeaderValue>) -> HeaderValue {
    match id {
        Some(id) if is_sane_request_id(id.as_bytes()) => id.clone(),
        _ => new_request_id(),
    }
}

thread_local! {
    /// This thread's request ids: 64 random bits chosen once, and a counter.
    static NEXT_ID: std::cell::Cell<IdState> = std::cell::Cell::new(IdState::new(random_u64()));
}

/// A thread's request ids: the UUID's first 19 characters (the prefix's upper 60 bits and
/// the version), written once, and its low 64 bits (variant, the prefix's last 4 bits, the
/// counter), the only part written per id.
#[derive(Clone, Copy)]
struct IdState {
    head: [u8; 19],
    low: u64,
}

impl IdState {
    fn new(prefix: u64) -> IdState {
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        uuid::Uuid::from_u128(id_bits(prefix, 0))
            .hyphenated()
            .encode_lower(&mut text);
        let mut head = [0u8; 19];
        head.copy_from_slice(&text[..19]);
        IdState {
            head,
            low: id_bits(prefix, 0) as u64,
        }
    }
}

/// The 128 bits of the `count`th id of a thread with `prefix`.
fn id_bits(prefix: u64, count: u64) -> u128 {
    (u128::from(prefix >> 16) << 80)
        | (0x8 << 76)
        | (u128::from((prefix >> 4) & 0xfff) << 64)
        | (0b10 << 62)
        | (u128::from(prefix & 0xf) << 58)
        | u128::from(count & ((1 << 58) - 1))
}

fn random_u64() -> u64 {
    // A v4 UUID's 122 random bits (`uuid`'s generator, seeded by the OS) folded into 64:
    // the rotation puts each half's fixed version and variant bits over random bits of the
    // other, so all 64 are random.
    let (high, low) = uuid::Uuid::new_v4().as_u64_pair();
    high ^ low.rotate_left(4)
}

/// A new request id without a random number per request: a UUID of version 8 (RFC 9562's
/// custom layout) made of this thread's 64-bit random prefix and a 58-bit counter. Unique
/// across threads, processes and restarts as long as no two threads draw the same prefix
/// (one chance in 2^64 for a pair); the same 36-character form as a v4 UUID.
pub(crate) fn new_request_id() -> HeaderValue {
    let state = NEXT_ID.get();
    // The counter is the low 58 bits: it wraps within them, never into the prefix's.
    let counter = (1u64 << 58) - 1;
    let next = (state.low & !counter) | (state.low.wrapping_add(1) & counter);
    NEXT_ID.set(IdState { low: next, ..state });
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    buf[..19].copy_from_slice(&state.head);
    // The last two groups, `xxxx-xxxxxxxxxxxx`: the low 64 bits in hex.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut at = buf.len();
    for i in 0..16 {
        if i == 12 {
            at -= 1;
            buf[at] = b'-';
        }
        at -= 1;
        buf[at] = HEX[((state.low >> (4 * i)) & 0xf) as usize];
    }
    // Owned by a `Bytes` of its own: one allocation, and clones (the copy sent upstream)
    // share it rather than allocate again.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf)).expect("a UUID is a header value")
}

fn is_sane_request_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Set the trusted claim headers of an accepted launch. Only claims that passed
/// `claims::check` get here (launches, and sessions sealed from them), and it admits
/// header-safe values only, so none can be dropped here.
pub fn set_trusted(headers: &mut HeaderMap, launch: &VerifiedLaunch) -> Result<(), Rejection> {
    let c = &launch.claims;
    let mut put = |name: HeaderName, value: &str| {
        // Never skip a header: `claims::check` admits header-safe values only, so a value
        // that does not fit (a session sealed by an older build, or a bug of ours) ends the
        // request rather than letting it reach the app with part of its identity missing.
        let v = HeaderValue::from_str(value).map_err(|_| {
            Rejection::new(
                Reason::InvalidClaim,
                format!("{name}: the claim is not a header value"),
            )
        })?;
        headers.insert(name, v);
        Ok::<(), Rejection>(())
    };
    put(X_HTI_ISS, &c.iss)?;
    put(X_HTI_SUB, &c.sub)?;
    put(X_HTI_RESOURCE, &c.resource)?;
    if let Some(p) = &c.patient {
        put(X_HTI_PATIENT, p)?;
    }
    if let Some(d) = &c.definition {
        put(X_HTI_DEFINITION, d)?;
    }
    if let Some(i) = &c.intent {
        put(X_HTI_INTENT, i)?;
    }
    put(X_HTI_JTI, &c.jti)?;
    put(X_HTI_CLAIMS, &URL_SAFE_NO_PAD.encode(&launch.claims_json))
}

#[cfg(test)]
#[path = "headers_tests.rs"]
mod tests;
