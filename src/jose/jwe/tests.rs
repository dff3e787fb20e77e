//! JWE unit tests: round trips, tampering, kid-less keys, mangled input (the RFC vectors are
//! in `vectors.rs`).

use std::sync::OnceLock;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPairComponents, PublicKeyComponents};
use base64::engine::general_purpose::STANDARD;

use super::*;
use crate::jose::Alg;
use crate::jose::sign::SigningKey;

pub(super) const ALGS: [&str; 2] = ["RSA-OAEP", "RSA-OAEP-256"];
pub(super) const ENCS: [&str; 6] = [
    "A128CBC-HS256",
    "A192CBC-HS384",
    "A256CBC-HS512",
    "A128GCM",
    "A192GCM",
    "A256GCM",
];
pub(super) const JWS: &str =
    "eyJhbGciOiJSUzUxMiIsImtpZCI6InAifQ.eyJpc3MiOiJwb3J0YWwifQ.c2lnbmF0dXJl";

/// An RSA key of 1024 bits, made once with `openssl genpkey` for this test only: too
/// weak to be accepted.
pub(super) const RSA_1024: &str = "-----BEGIN PRIVATE KEY-----
MIICdwIBADANBgkqhkiG9w0BAQEFAASCAmEwggJdAgEAAoGBAKyNb37RKvdLWo/W
WOEBEvTlmF84ZBhSg3LdI+onenrVN0wHIjteGXFg0ZuL7g7BgmmvKK0a9Nr/D9Yy
GWcY/lB7UilFEkTZdtHmp9STa58A+NTl/ylw1zczyRJeRlGT3h64IirHvonhvc7t
bpaPZ0Xn9tt6uV/ryWKsi9wdIH/xAgMBAAECgYB+3cqBKlb11XBzWvykCj8e0gQy
1mo5u8kr1c3HJlmWIFf0zTXtAmWgh7f1Lm/MZ5h0DbXReIVY0rmZGeK1e5nW63Fl
fD6/Au3QPqpf15zcSXjgcTAkPd21OsJEBxLbq6ShgswF6J3fPJ76GqFQS9O7JcOJ
s2v6rGrf820MWQjkVQJBANigeQFmfjEqBtpr5WDSKECCrXYrq5IqaSNZYoRPv1tb
YFRkoIhWoHIy0PBRQGMLaujyzsbne+jSNxSiE6QGTxsCQQDL6jUDZm/Bum2n5cSL
zc0l0GS0T6KKA9GCgCyBUvaOg33z+JKfZlcMRsFZkRPc3iHUcLSocQKd6Xzbdfw6
/8HjAkEAgxAcBgffw5kcylvLTNf5uIYXss5bILT+JX/4BftF2F0hnA3BvptCubUb
CrruDL6ksUnuZxM4ubUt1BL3dR7IDwJBAJUB1i9f4XZ9VrgD7LYEc06Yk543Ox0D
YUutgdgW2diWOanYELyuOhncclmS7CLPp4Tnvvv/aNwfzH9KHkC2t+UCQA31hMRW
CbkQS6bdTKdLzvAQEdFC+ZyrlSQtDMDK8rsM30l/GTPOx/GPjEm86JAl2q4k2HPv
yJ2AlfebKhrNQJI=
-----END PRIVATE KEY-----
";

/// Two RSA keys, "a" and "b", made once.
pub(super) fn pems() -> &'static [(Vec<u8>, String)] {
    static PEMS: OnceLock<Vec<(Vec<u8>, String)>> = OnceLock::new();
    PEMS.get_or_init(|| {
        ["a", "b"]
            .iter()
            .map(|kid| {
                let pem = SigningKey::generate(Alg::RS256, 2048)
                    .unwrap()
                    .to_pem()
                    .unwrap();
                (pem.into_bytes(), kid.to_string())
            })
            .collect()
    })
}

pub(super) fn keys() -> DecryptionKeys {
    DecryptionKeys::from_pems(pems()).unwrap()
}

pub(super) fn jwk(keys: &DecryptionKeys, kid: &str) -> Value {
    keys.public_jwks()
        .into_iter()
        .find(|k| k["kid"] == kid)
        .unwrap()
}

/// `kid` "a", RSA-OAEP, A128CBC-HS256: what the producers seen send.
pub(super) fn token(keys: &DecryptionKeys) -> String {
    encrypt_for(&jwk(keys, "a"), "a", "RSA-OAEP", "A128CBC-HS256", JWS).unwrap()
}

/// A header of `alg` RSA-OAEP, `enc` and, when given, `kid`.
pub(super) fn header(enc: &str, kid: Option<&str>) -> Map<String, Value> {
    let mut header = Map::new();
    header.insert("alg".into(), Value::from("RSA-OAEP"));
    header.insert("enc".into(), Value::from(enc));
    if let Some(kid) = kid {
        header.insert("kid".into(), Value::from(kid));
    }
    header
}

/// A token encrypted to key `to` with `header` exactly as given.
pub(super) fn with_header(
    keys: &DecryptionKeys,
    to: &str,
    header: &Map<String, Value>,
    payload: &[u8],
) -> String {
    encrypt_with_header(&jwk(keys, to), header, payload).unwrap()
}

/// Replace segment `i` with `f(decoded bytes)`, re-encoded.
pub(super) fn mangle(token: &str, i: usize, f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut segments: Vec<String> = token.split('.').map(String::from).collect();
    let mut bytes = URL_SAFE_NO_PAD.decode(&segments[i]).unwrap();
    f(&mut bytes);
    segments[i] = URL_SAFE_NO_PAD.encode(bytes);
    segments.join(".")
}

/// Rewrite the protected header's JSON (which is also the AAD).
pub(super) fn rewrite_header(token: &str, f: impl FnOnce(&mut Map<String, Value>)) -> String {
    mangle(token, 0, |bytes| {
        let mut header: Map<String, Value> = serde_json::from_slice(bytes).unwrap();
        f(&mut header);
        *bytes = serde_json::to_vec(&header).unwrap();
    })
}

/// The error, checked to hold neither plaintext nor key material.
pub(super) fn refused(keys: &DecryptionKeys, token: &str) -> JweError {
    let err = keys.decrypt(token).expect_err("must be refused");
    let text = err.to_string();
    assert!(
        !text.contains(JWS) && !text.contains("c2lnbmF0dXJl"),
        "{text}"
    );
    assert!(!text.contains("PRIVATE") && !text.contains("MII"), "{text}");
    err
}

pub(super) fn is_decrypt(err: &JweError) -> bool {
    matches!(err, JweError::Decrypt)
}

pub(super) fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

pub(super) fn b64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).unwrap()
}

/// A PKCS#8 PEM private key made from a private RSA JWK (n, e, d, p, q, dp, dq, qi), as
/// the RFC examples give their keys.
pub(super) fn pem_from_jwk(jwk: &Value) -> Vec<u8> {
    let field = |name: &str| b64(jwk[name].as_str().unwrap());
    let components = KeyPairComponents {
        public_key: PublicKeyComponents {
            n: field("n"),
            e: field("e"),
        },
        d: field("d"),
        p: field("p"),
        q: field("q"),
        dP: field("dp"),
        dQ: field("dq"),
        qInv: field("qi"),
    };
    let pair = RsaKeyPair::from_components(&components).unwrap();
    let der = pair.as_der().unwrap();
    let body = STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem.into_bytes()
}

#[test]
fn round_trip_every_alg_and_enc() {
    let keys = keys();
    for kid in ["a", "b"] {
        for alg in ALGS {
            for enc in ENCS {
                let jwe = encrypt_for(&jwk(&keys, kid), kid, alg, enc, JWS).unwrap();
                assert!(is_jwe(&jwe));
                assert_eq!(keys.decrypt(&jwe).unwrap(), JWS, "{kid} {alg} {enc}");
            }
        }
    }
}

/// RFC 7516 Appendix A.1: RSAES-OAEP and AES GCM, the complete compact token and the
/// private key of A.1.1, byte for byte. The header has no kid: the one key is tried.
/// A forged CBC ciphertext whose last block has bad padding, authenticated or not: both
/// are refused at the tag before any block is decrypted, as the same error.
#[test]
fn cbc_padding_is_never_reached_without_a_good_tag() {
    let enc = Enc::from_name("A128CBC-HS256").unwrap();
    let k = [7u8; 32];
    let iv = [1u8; 16];
    // Random blocks: once decrypted, their padding is almost surely invalid.
    let forged = [0x5au8; 32];
    let wrong_tag = [0u8; 16];
    assert!(is_decrypt(
        &enc.open(&k, b"aad", &iv, &forged, &wrong_tag).unwrap_err()
    ));
    // With a correct tag for the same blocks, the tag passes and only then the padding
    // is looked at (it is bad for these bytes): still the same error.
    let Enc::CbcHmac { mac, half, .. } = enc else {
        unreachable!()
    };
    let tag = cbc_hmac(mac, &k[..half], b"aad", &iv, &forged);
    let result = enc.open(&k, b"aad", &iv, &forged, &tag.as_ref()[..half]);
    assert!(is_decrypt(&result.unwrap_err()));
}

/// RFC 7516 11.5: an encrypted key that does not decrypt, or decrypts to a key of the
/// wrong length, fails exactly like a bad tag.
#[test]
fn a_bad_content_key_fails_like_a_bad_tag() {
    let keys = keys();
    let public = PublicEncryptingKey::from_der(&rsa_spki(
        &b64(jwk(&keys, "a")["n"].as_str().unwrap()),
        &b64("AQAB"),
    ))
    .unwrap();
    let public = OaepPublicEncryptingKey::new(public).unwrap();
    let good = encrypt_for(&jwk(&keys, "a"), "a", "RSA-OAEP", "A256GCM", JWS).unwrap();
    // A 16-byte CEK where A256GCM needs 32, properly RSA-OAEP encrypted.
    let mut out = vec![0u8; public.ciphertext_size()];
    let short = public
        .encrypt(&OAEP_SHA1_MGF1SHA1, &[9u8; 16], &mut out, None)
        .unwrap()
        .to_vec();
    let wrong_length = mangle(&good, 1, |b| *b = short.clone());
    // Not RSA-OAEP at all: random bytes of the modulus' size.
    let garbage = mangle(&good, 1, |b| {
        b.iter_mut().for_each(|x| *x = x.wrapping_add(1))
    });
    // A good CEK under the other OAEP hash.
    let other_hash = rewrite_header(&good, |h| {
        h.insert("alg".into(), Value::from("RSA-OAEP-256"));
    });
    let bad_tag = mangle(&good, 4, |b| b[0] ^= 1);
    for token in [wrong_length, garbage, other_hash, bad_tag] {
        let err = refused(&keys, &token);
        assert!(is_decrypt(&err), "{err}");
        assert_eq!(err.to_string(), "decryption failed with every key tried");
    }
}

#[test]
fn public_jwks_are_rsa_oaep_encryption_keys() {
    let keys = keys();
    assert!(!keys.is_empty());
    let jwks = keys.public_jwks();
    assert_eq!(jwks.len(), 2);
    for (jwk, kid) in jwks.iter().zip(["a", "b"]) {
        let mut names: Vec<&str> = jwk
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        names.sort();
        assert_eq!(names, ["alg", "e", "kid", "kty", "n", "use"]);
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["kid"], kid);
        assert_eq!(jwk["use"], "enc");
        assert_eq!(jwk["alg"], "RSA-OAEP");
        assert_eq!(jwk["e"], "AQAB");
        assert_eq!(b64(jwk["n"].as_str().unwrap()).len(), 256);
    }
    // The same material as the signing view of the key.
    let signing = SigningKey::from_pem(&pems()[0].0)
        .unwrap()
        .public_jwk("a", None);
    assert_eq!(jwks[0]["n"], signing["n"]);
    assert!(!format!("{keys:?}").contains("MII"));
}

#[test]
fn loading_refuses_bad_keys_and_kids() {
    let empty = DecryptionKeys::from_pems(&[]).unwrap();
    assert!(empty.is_empty());
    assert!(empty.public_jwks().is_empty());
    assert!(matches!(
        empty.decrypt(&token(&keys())),
        Err(JweError::UnknownKid(_))
    ));
    let kidless = with_header(&keys(), "a", &header("A128GCM", None), JWS.as_bytes());
    assert!(matches!(empty.decrypt(&kidless), Err(JweError::Decrypt)));

    let pem = pems()[0].0.clone();
    let twice = [
        (pem.clone(), "x".to_string()),
        (pem.clone(), "x".to_string()),
    ];
    assert!(
        DecryptionKeys::from_pems(&twice)
            .unwrap_err()
            .contains("twice")
    );
    assert!(DecryptionKeys::from_pems(&[(pem, String::new())]).is_err());
    assert!(DecryptionKeys::from_pems(&[(b"not a pem".to_vec(), "x".into())]).is_err());

    let ec = SigningKey::generate(Alg::ES256, 0)
        .unwrap()
        .to_pem()
        .unwrap();
    let err = DecryptionKeys::from_pems(&[(ec.into_bytes(), "x".into())]).unwrap_err();
    assert!(!err.contains("MII"), "{err}");
    let err = DecryptionKeys::from_pems(&[(RSA_1024.as_bytes().to_vec(), "x".into())]).unwrap_err();
    assert!(err.contains("2048"), "{err}");
    assert!(!err.contains("MII"), "{err}");
}

#[test]
fn only_the_named_key_is_tried() {
    let keys = keys();
    // Encrypted to b, but naming a: a is tried and fails; b is never tried.
    let jwe = encrypt_for(&jwk(&keys, "b"), "a", "RSA-OAEP", "A128GCM", JWS).unwrap();
    assert!(is_decrypt(&refused(&keys, &jwe)));
    let jwe = encrypt_for(&jwk(&keys, "a"), "c", "RSA-OAEP", "A128GCM", JWS).unwrap();
    assert!(matches!(refused(&keys, &jwe), JweError::UnknownKid(_)));
    // A key loaded alone under another kid does not decrypt for a.
    let only_b = DecryptionKeys::from_pems(&pems()[1..]).unwrap();
    assert!(matches!(
        refused(&only_b, &token(&keys)),
        JweError::UnknownKid(_)
    ));
}

/// Without a kid (the GIDS and Koppeltaal PoC portals send none), each key is tried.
#[test]
fn without_a_kid_every_key_is_tried() {
    let keys = keys();
    for enc in ENCS {
        for to in ["a", "b"] {
            let jwe = with_header(&keys, to, &header(enc, None), JWS.as_bytes());
            assert_eq!(keys.decrypt(&jwe).unwrap(), JWS, "{enc} to {to}");
        }
    }
    // Encrypted to a key the module does not hold: every key fails, one error.
    let stranger = SigningKey::generate(Alg::RS256, 2048)
        .unwrap()
        .public_jwk("s", None);
    let jwe =
        encrypt_with_header(&stranger, &header("A128CBC-HS256", None), JWS.as_bytes()).unwrap();
    assert!(is_decrypt(&refused(&keys, &jwe)));
    // A kid-less token tampered with is refused by every key alike.
    let good = with_header(&keys, "b", &header("A256GCM", None), JWS.as_bytes());
    for i in 1..5 {
        let bad = mangle(&good, i, |b| b[0] ^= 0x10);
        assert!(is_decrypt(&refused(&keys, &bad)), "segment {i}");
    }
}

#[test]
fn odd_kids_are_refused() {
    let keys = keys();
    let jwe = rewrite_header(&token(&keys), |h| {
        h.insert("kid".into(), Value::from(1));
    });
    assert!(matches!(refused(&keys, &jwe), JweError::Malformed(_)));
    let jwe = rewrite_header(&token(&keys), |h| {
        h.insert("kid".into(), Value::Null);
    });
    assert!(matches!(refused(&keys, &jwe), JweError::Malformed(_)));
    let long = "k".repeat(500);
    let jwe = rewrite_header(&token(&keys), |h| {
        h.insert("kid".into(), Value::from(format!("{long}\n")));
    });
    let text = refused(&keys, &jwe).to_string();
    assert!(text.len() < 100 && !text.contains('\n'), "{text}");
}

#[test]
fn tampering_is_refused() {
    let keys = keys();
    for enc in ENCS {
        let jwe = encrypt_for(&jwk(&keys, "a"), "a", "RSA-OAEP-256", enc, JWS).unwrap();
        // Encrypted key, IV, ciphertext, tag.
        for i in 1..5 {
            for at in [0, 5] {
                let bad = mangle(&jwe, i, |b| {
                    let at = at.min(b.len() - 1);
                    b[at] ^= 0x01;
                });
                assert!(is_decrypt(&refused(&keys, &bad)), "{enc} {i}");
            }
        }
        // The protected header is the AAD.
        let bad = rewrite_header(&jwe, |h| {
            h.insert("x".into(), Value::from(1));
        });
        assert!(is_decrypt(&refused(&keys, &bad)), "{enc} aad");
        // Segments moved between two tokens for the same key.
        let other = encrypt_for(&jwk(&keys, "a"), "a", "RSA-OAEP-256", enc, JWS).unwrap();
        let (a, b): (Vec<&str>, Vec<&str>) = (jwe.split('.').collect(), other.split('.').collect());
        for i in 1..5 {
            let mut mixed = a.clone();
            mixed[i] = b[i];
            assert!(
                is_decrypt(&refused(&keys, &mixed.join("."))),
                "{enc} swap {i}"
            );
        }
        // The right kid, the wrong key's ciphertext.
        let to_b = encrypt_for(&jwk(&keys, "b"), "a", "RSA-OAEP-256", enc, JWS).unwrap();
        assert!(is_decrypt(&refused(&keys, &to_b)), "{enc} wrong key");
    }
}

#[test]
fn unsupported_algorithms_are_refused_before_any_key_is_used() {
    let keys = keys();
    for alg in [
        "RSA1_5",
        "RSA-OAEP-384",
        "RSA-OAEP-512",
        "dir",
        "A128KW",
        "ECDH-ES",
        "none",
    ] {
        let jwe = rewrite_header(&token(&keys), |h| {
            h.insert("alg".into(), Value::from(alg));
        });
        match refused(&keys, &jwe) {
            JweError::UnsupportedAlg(got) => assert_eq!(got, format!("{alg:?}")),
            other => panic!("{alg}: {other}"),
        }
    }
    for alg in [Value::from("rsa-oaep"), Value::from(1), Value::Null] {
        let jwe = rewrite_header(&token(&keys), |h| {
            h.insert("alg".into(), alg);
        });
        assert!(matches!(refused(&keys, &jwe), JweError::UnsupportedAlg(_)));
    }
    let jwe = rewrite_header(&token(&keys), |h| {
        h.remove("alg");
    });
    assert!(matches!(refused(&keys, &jwe), JweError::Malformed(_)));
    // encrypt_with_header makes none of them either, nor a token without alg or enc.
    let mut h = header("A128GCM", Some("a"));
    h.insert("alg".into(), Value::from("RSA1_5"));
    assert!(encrypt_with_header(&jwk(&keys, "a"), &h, JWS.as_bytes()).is_err());
    for missing in ["alg", "enc"] {
        let mut h = header("A128GCM", None);
        h.remove(missing);
        assert!(encrypt_with_header(&jwk(&keys, "a"), &h, JWS.as_bytes()).is_err());
    }
}

#[test]
fn unsupported_enc_zip_crit_and_cty_are_refused() {
    let keys = keys();
    for enc in [
        Value::from("A128CBC+HS256"),
        Value::from("XC20P"),
        Value::from("a128gcm"),
        Value::from(true),
    ] {
        let jwe = rewrite_header(&token(&keys), |h| {
            h.insert("enc".into(), enc);
        });
        assert!(matches!(refused(&keys, &jwe), JweError::UnsupportedEnc(_)));
    }
    let jwe = rewrite_header(&token(&keys), |h| {
        h.remove("enc");
    });
    assert!(matches!(refused(&keys, &jwe), JweError::Malformed(_)));

    // A real DEF-compressed token would decrypt to deflated bytes: refused before that.
    let mut zipped = header("A128GCM", Some("a"));
    zipped.insert("zip".into(), Value::from("DEF"));
    let jwe = with_header(&keys, "a", &zipped, JWS.as_bytes());
    assert!(matches!(refused(&keys, &jwe), JweError::Compressed));

    let jwe = rewrite_header(&token(&keys), |h| {
        h.insert("crit".into(), serde_json::json!(["exp"]));
    });
    assert!(matches!(refused(&keys, &jwe), JweError::Critical));

    for (cty, ok) in [
        ("JWT", true),
        ("jwt", true),
        ("Jwt", true),
        ("JSON", false),
        ("application/jwt", false),
    ] {
        let mut h = header("A256GCM", Some("a"));
        h.insert("cty".into(), Value::from(cty));
        let jwe = with_header(&keys, "a", &h, JWS.as_bytes());
        match keys.decrypt(&jwe) {
            Ok(jws) => assert!(ok && jws == JWS, "{cty}"),
            Err(e) => assert!(!ok && matches!(e, JweError::ContentType(_)), "{cty}: {e}"),
        }
    }
    let jwe = with_header(&keys, "a", &header("A256GCM", Some("a")), JWS.as_bytes());
    assert_eq!(keys.decrypt(&jwe).unwrap(), JWS, "cty may be absent");
}

#[test]
fn content_must_be_a_compact_jws() {
    let keys = keys();
    let h = header("A128CBC-HS256", Some("a"));
    for payload in [
        &b"secret plaintext"[..],
        b"a.b",
        b"a.b.c.d",
        b"\xff.\xfe.\xfd",
    ] {
        let jwe = with_header(&keys, "a", &h, payload);
        let err = refused(&keys, &jwe);
        assert!(matches!(err, JweError::NotJws), "{err}");
        assert!(!err.to_string().contains("secret"));
    }
    // An empty content is one padding block for CBC: it decrypts, and is no JWS.
    let jwe = with_header(&keys, "a", &h, b"");
    assert!(matches!(refused(&keys, &jwe), JweError::NotJws));
    // A JWE inside a JWE is not unwrapped twice.
    let inner = token(&keys);
    let jwe = with_header(&keys, "a", &h, inner.as_bytes());
    assert!(matches!(refused(&keys, &jwe), JweError::NotJws));
}

#[test]
fn segment_shapes_are_checked_before_any_key() {
    let keys = keys();
    for enc in ENCS {
        let jwe = encrypt_for(&jwk(&keys, "a"), "a", "RSA-OAEP", enc, JWS).unwrap();
        let segments: Vec<&str> = jwe.split('.').collect();
        for i in 1..5 {
            let mut s = segments.clone();
            s[i] = "";
            let err = refused(&keys, &s.join("."));
            assert!(
                matches!(err, JweError::Malformed(_)),
                "{enc} empty {i}: {err}"
            );
        }
        for (i, len) in [(2, 8), (2, 32), (4, 8), (4, 64)] {
            let bad = mangle(&jwe, i, |b| b.resize(len, 0));
            assert!(
                matches!(refused(&keys, &bad), JweError::Malformed(_)),
                "{enc} {i} {len}"
            );
        }
        if enc.contains("CBC") {
            let bad = mangle(&jwe, 3, |b| b.truncate(b.len() - 1));
            assert!(
                matches!(refused(&keys, &bad), JweError::Malformed(_)),
                "{enc} block"
            );
        }
        for i in 0..5 {
            let mut s = segments.clone();
            let padded = format!("{}=", s[i]);
            s[i] = &padded;
            assert!(matches!(
                refused(&keys, &s.join(".")),
                JweError::Malformed(_)
            ));
        }
    }
    for shape in [
        "",
        ".",
        "....",
        "a.b.c.d",
        "a.b.c.d.e.f",
        "e30.e30.e30.e30.e30",
    ] {
        assert!(
            matches!(refused(&keys, shape), JweError::Malformed(_)),
            "{shape:?}"
        );
    }
    let huge = format!("{}....", "A".repeat(MAX_TOKEN_LEN));
    assert!(matches!(refused(&keys, &huge), JweError::TooLong(_)));
}

#[test]
fn jwe_shape() {
    assert!(is_jwe("a.b.c.d.e"));
    assert!(is_jwe("...."));
    assert!(!is_jwe("a.b.c"));
    assert!(!is_jwe("a.b.c.d"));
    assert!(!is_jwe("a.b.c.d.e.f"));
    assert!(!is_jwe(""));
}

/// The SubjectPublicKeyInfo built from n and e is the one the library itself writes.
#[test]
fn spki_from_n_and_e_matches_the_library() {
    use aws_lc_rs::encoding::AsDer;
    for (pem, kid) in pems() {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem).unwrap();
        let private = PrivateDecryptingKey::from_pkcs8(der.secret_pkcs8_der()).unwrap();
        let expected = private.public_key().as_der().unwrap();
        let keys = DecryptionKeys::from_pems(&[(pem.clone(), kid.clone())]).unwrap();
        let jwk = &keys.public_jwks()[0];
        let built = rsa_spki(
            &b64(jwk["n"].as_str().unwrap()),
            &b64(jwk["e"].as_str().unwrap()),
        );
        assert_eq!(built, expected.as_ref());
    }
}

/// xorshift64*: reproducible noise without a dependency.
struct Noise(u64);
impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn text(&mut self, len: usize, alphabet: &[u8]) -> String {
        (0..len)
            .map(|_| alphabet[self.below(alphabet.len())] as char)
            .collect()
    }
}

#[test]
fn mangled_and_random_input_never_panics_or_decrypts() {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let keys = keys();
    let mut noise = Noise(0x5eed_1234_abcd_0001);
    let mut tokens: Vec<String> = ENCS
        .iter()
        .map(|enc| encrypt_for(&jwk(&keys, "a"), "a", "RSA-OAEP", enc, JWS).unwrap())
        .collect();
    // Kid-less ones too, which every key tries.
    tokens.extend(
        ["A128CBC-HS256", "A256GCM"]
            .iter()
            .map(|enc| with_header(&keys, "b", &header(enc, None), JWS.as_bytes())),
    );
    for round in 0..3000 {
        let base = &tokens[round % tokens.len()];
        let candidate = match noise.below(6) {
            // Random text over base64url, dots and a few others.
            0 => {
                let len = noise.below(400);
                noise.text(len, b"ABCxyz019-_.=+/ \"{}\\\x00\xc3")
            }
            // One segment replaced by random base64url of random length.
            1 => {
                let mut s: Vec<String> = base.split('.').map(String::from).collect();
                let i = noise.below(5);
                let len = noise.below(600);
                s[i] = noise.text(len, B64);
                s.join(".")
            }
            // A few characters changed anywhere.
            2 => {
                let mut bytes = base.clone().into_bytes();
                for _ in 0..=noise.below(4) {
                    let at = noise.below(bytes.len());
                    bytes[at] = B64[noise.below(B64.len())];
                }
                String::from_utf8(bytes).unwrap()
            }
            // Cut anywhere, or a segment duplicated.
            3 => base[..noise.below(base.len())].to_string(),
            4 => {
                let mut s: Vec<&str> = base.split('.').collect();
                let i = noise.below(5);
                s.insert(i, s[i]);
                s.truncate(5);
                s.join(".")
            }
            // A random decoded segment of any length, including the header as JSON.
            _ => {
                let i = noise.below(5);
                let len = noise.below(300);
                mangle(base, i, |b| {
                    b.clear();
                    b.extend((0..len).map(|_| noise.next() as u8));
                })
            }
        };
        if candidate == *base {
            continue;
        }
        if let Ok(jws) = keys.decrypt(&candidate) {
            // Only the unchanged ciphertext can decrypt (e.g. a changed character in
            // the unused bits of a final base64 character is refused as non-canonical).
            panic!("mangled token decrypted: {candidate} -> {jws}");
        }
    }
}
