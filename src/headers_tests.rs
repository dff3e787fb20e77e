//! The header rules' unit tests.

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
        "x.hti.sub",
        "x-hti.claims",
        "x.hti-iss",
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
        "x~hti-sub",
        "x-htisub",
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
fn read_takes_each_names_first_value_as_get_would() {
    let mut h = map(&[
        ("accept", "application/json"),
        ("x-request-id", "abc-1"),
        ("accept-language", "nl"),
        ("cookie", "a=b"),
    ]);
    h.append(header::ACCEPT, HeaderValue::from_static("text/html"));
    h.append(X_REQUEST_ID, HeaderValue::from_static("second"));
    let read = Read::from(&h);
    assert_eq!(read.accept.as_ref(), h.get(header::ACCEPT));
    assert_eq!(
        read.accept_language.as_ref(),
        h.get(header::ACCEPT_LANGUAGE)
    );
    assert_eq!(read.request_id(), "abc-1");
    let none = Read::from(&map(&[("host", "a")]));
    assert!(none.accept.is_none() && none.accept_language.is_none());
    let fresh = none.request_id();
    assert_eq!(fresh.len(), 36);
    let insane = Read::from(&map(&[("x-request-id", "a b")]));
    assert_ne!(insane.request_id(), "a b");
}

#[test]
fn hop_index_finds_each_hop_by_hop_name_and_nothing_else() {
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        assert_eq!(hop_index(name), Some(i), "{name}");
        assert_eq!(HOP_BY_HOP_NAMES[i].as_str(), *name);
    }
    for name in [
        "",
        "t",
        "tf",
        "upgradE",
        "trailers",
        "keep-alivf",
        "connectioN",
        "host",
        "x-connection",
        "proxy-connectiom",
        "transfer-encodinf",
        "content-length",
    ] {
        assert_eq!(hop_index(name), None, "{name}");
    }
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
fn only_websocket_upgrades_are_passed_on() {
    for (upgrade, passed) in [
        ("websocket", true),
        ("WebSocket", true),
        ("h2c", false),
        ("websocket, h2c", false),
        ("h2c, websocket", false),
        ("TLS/1.2", false),
    ] {
        let h = map(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", upgrade),
        ]);
        assert_eq!(upgrade_protocol(&h).is_some(), passed, "{upgrade}");
    }
    // Two Upgrade headers: not a plain websocket switch.
    let h = map(&[
        ("connection", "upgrade"),
        ("upgrade", "websocket"),
        ("upgrade", "h2c"),
    ]);
    assert!(upgrade_protocol(&h).is_none());
    // Without `Connection: upgrade` nothing is asked.
    assert!(upgrade_protocol(&map(&[("upgrade", "websocket")])).is_none());
    let mut h = map(&[
        ("connection", "Upgrade, HTTP2-Settings"),
        ("upgrade", "h2c"),
        ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
    ]);
    let proto = upgrade_protocol(&h);
    strip_hop_by_hop(&mut h, proto);
    assert!(h.is_empty(), "{h:?}");
}

#[test]
fn forwarded_headers_are_what_the_guard_saw() {
    let mut h = map(&[
        ("x-forwarded-for", "10.0.0.1"),
        ("x_forwarded_for", "10.0.0.2"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("forwarded", "for=10.0.0.3;proto=https"),
        ("x-real-ip", "10.0.0.4"),
        ("x.real.ip", "10.0.0.5"),
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
        ("x-forwarded-prefix", "/evil"),
        ("x-forwarded-port", "443"),
        ("accept", "*/*"),
    ]);
    set_forwarded(
        &mut h,
        &client_address("127.0.0.1".parse().unwrap()),
        false,
        Some(HeaderValue::from_static("app.example")),
        false,
    );
    let mut names: Vec<_> = h.keys().map(|k| k.as_str().to_owned()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "accept",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto"
        ]
    );
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "app.example");

    let mut h = map(&[("x-forwarded-host", "evil.example")]);
    set_forwarded(
        &mut h,
        &client_address("::1".parse().unwrap()),
        true,
        None,
        false,
    );
    assert_eq!(h["x-forwarded-for"], "::1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert!(h.get("x-forwarded-host").is_none());
    let mut h = HeaderMap::new();
    let long: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
    set_forwarded(&mut h, &client_address(long), false, None, false);
    assert_eq!(
        h["x-forwarded-for"],
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    );
}

#[test]
fn addresses_are_written_as_display_writes_them() {
    let mut buf = [0u8; 39];
    for ip in [
        "0.0.0.0",
        "127.0.0.1",
        "10.20.30.40",
        "255.255.255.255",
        "100.9.99.199",
        "::1",
        "::ffff:10.0.0.1",
        "2001:db8::8a2e:370:7334",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(ip_text(ip, &mut buf), ip.to_string().as_bytes(), "{ip}");
    }
    for n in (0..=u32::MAX).step_by(65_537) {
        let ip = IpAddr::from(std::net::Ipv4Addr::from(n));
        assert_eq!(ip_text(ip, &mut buf), ip.to_string().as_bytes(), "{ip}");
    }
}

#[test]
fn a_trusted_proxy_chain_is_kept_and_extended() {
    let mut h = map(&[
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-for", "10.0.0.1"),
        ("x_forwarded_for", "10.0.0.66"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "portal.example"),
        ("forwarded", "for=203.0.113.9;proto=https"),
        ("x-real-ip", "10.0.0.4"),
        ("x-original-url", "/admin"),
    ]);
    set_forwarded(
        &mut h,
        &client_address("10.0.0.2".parse().unwrap()),
        false,
        Some(HeaderValue::from_static("app.internal")),
        true,
    );
    let mut names: Vec<_> = h.keys().map(|k| k.as_str().to_owned()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto"
        ]
    );
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.0.0.1, 10.0.0.2");
    assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "portal.example");
    assert_eq!(h["forwarded"], "for=203.0.113.9;proto=https");

    // Nothing forwarded yet: set from what the guard saw, as for any peer.
    let mut h = HeaderMap::new();
    set_forwarded(
        &mut h,
        &client_address("::1".parse().unwrap()),
        true,
        Some(HeaderValue::from_static("app.example")),
        true,
    );
    assert_eq!(h["x-forwarded-for"], "::1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "app.example");
    assert!(h.get("forwarded").is_none());
}

#[test]
fn a_claim_that_is_no_header_value_ends_the_request() {
    use crate::verify::HtiClaims;
    let launch = |sub: &str| VerifiedLaunch {
        issuer: None,
        claims: HtiClaims {
            iss: "https://portal".into(),
            sub: sub.into(),
            resource: "Task/1".into(),
            patient: None,
            definition: None,
            intent: None,
            jti: "0123456789abcdef0123".into(),
            exp: 0,
            iat: 0,
        },
        claims_json: b"{}".to_vec(),
    };
    let mut h = HeaderMap::new();
    set_trusted(&mut h, &launch("Patient/1")).unwrap();
    assert_eq!(h["x-hti-sub"], "Patient/1");
    let mut h = HeaderMap::new();
    let refused = set_trusted(&mut h, &launch("Patient/1\r\nX-Evil: 1")).unwrap_err();
    assert_eq!(refused.reason, Reason::InvalidClaim);
}

#[test]
fn request_ids_are_kept_when_sane() {
    assert_eq!(request_id(&map(&[("x-request-id", "abc-123")])), "abc-123");
    let fresh = request_id(&map(&[("x-request-id", "a b<script>")]));
    assert_eq!(fresh.len(), 36);
    assert_eq!(request_id(&HeaderMap::new()).len(), 36);
}

#[test]
fn new_request_ids_are_version_8_uuids_that_differ() {
    let ids: Vec<String> = (0..1000)
        .map(|_| new_request_id().to_str().unwrap().to_owned())
        .collect();
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len());
    for id in &ids {
        assert!(is_sane_request_id(id.as_bytes()), "{id}");
        let uuid = uuid::Uuid::parse_str(id).unwrap();
        assert_eq!(uuid.get_version_num(), 8, "{id}");
        assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122, "{id}");
    }
    // The same text as the UUID of the same bits, formatted whole.
    let prefix = 0x0123_4567_89ab_cdef;
    let mut state = IdState::new(prefix);
    for count in [0u64, 1, 0xabc, (1 << 58) - 1] {
        state.low = id_bits(prefix, count) as u64;
        NEXT_ID.set(state);
        let whole = uuid::Uuid::from_u128(id_bits(prefix, count)).to_string();
        assert_eq!(new_request_id().to_str().unwrap(), whole);
    }
    // It wraps within the counter's bits.
    assert_eq!(
        new_request_id().to_str().unwrap(),
        uuid::Uuid::from_u128(id_bits(prefix, 0)).to_string()
    );
    // Another thread draws its own prefix.
    let other = std::thread::spawn(|| new_request_id().to_str().unwrap().to_owned())
        .join()
        .unwrap();
    assert_ne!(other[..18], ids[0][..18]);
}
