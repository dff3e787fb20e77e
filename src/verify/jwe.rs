//! HTI:jwe: an encrypted launch token (compact JWE wrapping the signed JWS), decrypted with
//! the module's own RSA key named by the header's `kid`. josekit (OpenSSL) does the crypto;
//! this module decides what is acceptable before any key is used.

use std::collections::HashMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jwe::alg::rsaes::RsaesJweDecrypter;
use josekit::jwe::{JweContext, JweHeader, RSA_OAEP, RSA_OAEP_256};
use josekit::jwk::Jwk;
use josekit::jwk::alg::rsa::RsaKeyPair;
use serde_json::{Map, Value};

use super::MAX_TOKEN_LEN;

/// Why a JWE was not decrypted. Every variant is the reason `undecryptable`; the Display is a
/// log detail: header values are quoted and cut short, and never key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum JweError {
    #[error("encrypted token of {0} bytes is too long")]
    TooLong(usize),
    #[error("malformed JWE: {0}")]
    Malformed(&'static str),
    #[error("JWE header has no kid")]
    MissingKid,
    #[error("no decryption key has kid {0}")]
    UnknownKid(String),
    #[error("JWE alg {0} is not accepted (RSA-OAEP, RSA-OAEP-256)")]
    UnsupportedAlg(String),
    #[error("JWE enc {0} is not accepted")]
    UnsupportedEnc(String),
    #[error("compressed JWE (zip) is refused")]
    Compressed,
    #[error("JWE header has crit, which is refused")]
    Critical,
    #[error("JWE cty {0} is not JWT")]
    ContentType(String),
    /// The library refused: a wrong key, or a tampered key, IV, ciphertext, tag or header.
    #[error("decryption failed: {0}")]
    Decrypt(String),
    #[error("the decrypted content is not a compact JWS")]
    NotJws,
}

/// A header value for a log line: debug-quoted (no control characters) and cut short.
fn excerpt(value: &Value) -> String {
    let text = match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    if text.len() <= 40 {
        text
    } else {
        let mut end = 40;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &text[..end])
    }
}

/// An accepted content encryption: its IV and tag lengths (RFC 7518 5.2, 5.3), and whether
/// it is CBC (whole 16-byte blocks). Checking the segments against these keeps malformed ones
/// away from the library, which panics on an empty IV.
struct Shape {
    iv_len: usize,
    tag_len: usize,
    cbc: bool,
}

fn shape(enc: &str) -> Option<Shape> {
    let (iv_len, tag_len, cbc) = match enc {
        "A128CBC-HS256" => (16, 16, true),
        "A192CBC-HS384" => (16, 24, true),
        "A256CBC-HS512" => (16, 32, true),
        "A128GCM" | "A192GCM" | "A256GCM" => (12, 16, false),
        _ => return None,
    };
    Some(Shape {
        iv_len,
        tag_len,
        cbc,
    })
}

struct DecryptionKey {
    kid: String,
    oaep: RsaesJweDecrypter,
    oaep_256: RsaesJweDecrypter,
    public_jwk: Value,
}

/// The module's JWE decryption keys (RSA, PKCS#8 PEM), each with its kid.
pub struct DecryptionKeys {
    keys: Vec<DecryptionKey>,
    by_kid: HashMap<String, usize>,
    context: JweContext,
}

impl fmt::Debug for DecryptionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("DecryptionKeys")
            .field("kids", &kids)
            .finish()
    }
}

impl DecryptionKeys {
    /// `keys`: (PEM bytes, kid). An empty list is allowed (then every JWE is undecryptable).
    /// RSA keys of at least 2048 bits only; kids must be non-empty and distinct.
    pub fn from_pems(keys: &[(Vec<u8>, String)]) -> Result<DecryptionKeys, String> {
        let mut loaded = Vec::with_capacity(keys.len());
        let mut by_kid = HashMap::new();
        for (i, (pem, kid)) in keys.iter().enumerate() {
            let which = format!("decryption key {} (kid {kid:?})", i + 1);
            if kid.is_empty() {
                return Err(format!("decryption key {}: empty kid", i + 1));
            }
            if by_kid.insert(kid.clone(), i).is_some() {
                return Err(format!("{which}: the kid is used twice"));
            }
            // The library's messages about a PEM are generic; none repeats the key.
            let refused = |e: josekit::JoseError| {
                format!("{which}: not an RSA key of 2048 bits or more in PEM: {e}")
            };
            let mut oaep = RSA_OAEP.decrypter_from_pem(pem).map_err(refused)?;
            let mut oaep_256 = RSA_OAEP_256.decrypter_from_pem(pem).map_err(refused)?;
            oaep.set_key_id(kid.clone());
            oaep_256.set_key_id(kid.clone());
            let pair = RsaKeyPair::from_pem(pem).map_err(refused)?;
            let public = pair.to_jwk_public_key();
            let (Some(n), Some(e)) = (public.parameter("n"), public.parameter("e")) else {
                return Err(format!("{which}: the RSA public key has no n or e"));
            };
            let public_jwk = serde_json::json!({
                "kty": "RSA",
                "n": n,
                "e": e,
                "kid": kid,
                "use": "enc",
                "alg": "RSA-OAEP",
            });
            loaded.push(DecryptionKey {
                kid: kid.clone(),
                oaep,
                oaep_256,
                public_jwk,
            });
        }
        let mut context = JweContext::new();
        // zip is refused before the library is called; this makes sure it cannot inflate.
        context.remove_compression("DEF");
        Ok(DecryptionKeys {
            keys: loaded,
            by_kid,
            context,
        })
    }

    /// Public JWKs for publishing: kty RSA, n, e, kid, use "enc", alg "RSA-OAEP".
    pub fn public_jwks(&self) -> Vec<Value> {
        self.keys.iter().map(|k| k.public_jwk.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Decrypt a compact JWE and return the inner compact JWS. The header's `kid` selects
    /// the one key tried; `alg` RSA-OAEP or RSA-OAEP-256; `enc` A128CBC-HS256,
    /// A192CBC-HS384, A256CBC-HS512, A128GCM, A192GCM or A256GCM; no `zip`, no `crit`;
    /// `cty`, when present, is JWT (any case).
    pub fn decrypt(&self, compact: &str) -> Result<String, JweError> {
        if compact.len() > MAX_TOKEN_LEN {
            return Err(JweError::TooLong(compact.len()));
        }
        let segments: Vec<&str> = compact.split('.').collect();
        let [header_b64, key_b64, iv_b64, ciphertext_b64, tag_b64] = segments[..] else {
            return Err(JweError::Malformed("not five segments"));
        };
        let decode = |segment: &str, what: &'static str| {
            URL_SAFE_NO_PAD
                .decode(segment)
                .map_err(|_| JweError::Malformed(what))
        };
        let header_json = decode(header_b64, "header is not base64url")?;
        let header: Map<String, Value> = serde_json::from_slice(&header_json)
            .map_err(|_| JweError::Malformed("header is not a JSON object"))?;

        if header.contains_key("crit") {
            return Err(JweError::Critical);
        }
        if header.contains_key("zip") {
            return Err(JweError::Compressed);
        }
        let alg = header
            .get("alg")
            .ok_or(JweError::Malformed("header has no alg"))?;
        let oaep_256 = match alg.as_str() {
            Some("RSA-OAEP") => false,
            Some("RSA-OAEP-256") => true,
            _ => return Err(JweError::UnsupportedAlg(excerpt(alg))),
        };
        let enc = header
            .get("enc")
            .ok_or(JweError::Malformed("header has no enc"))?;
        let shape = enc
            .as_str()
            .and_then(shape)
            .ok_or_else(|| JweError::UnsupportedEnc(excerpt(enc)))?;
        match header.get("cty") {
            None => {}
            Some(Value::String(cty)) if cty.eq_ignore_ascii_case("JWT") => {}
            Some(other) => return Err(JweError::ContentType(excerpt(other))),
        }
        let kid = match header.get("kid") {
            None => return Err(JweError::MissingKid),
            Some(Value::String(kid)) => kid,
            Some(_) => return Err(JweError::Malformed("kid is not a string")),
        };
        let key = self
            .by_kid
            .get(kid)
            .map(|&i| &self.keys[i])
            .ok_or_else(|| JweError::UnknownKid(excerpt(&Value::String(kid.clone()))))?;

        if decode(key_b64, "encrypted key is not base64url")?.is_empty() {
            return Err(JweError::Malformed("encrypted key is empty"));
        }
        if decode(iv_b64, "IV is not base64url")?.len() != shape.iv_len {
            return Err(JweError::Malformed("IV has the wrong length for enc"));
        }
        let ciphertext_len = decode(ciphertext_b64, "ciphertext is not base64url")?.len();
        // A JWS is never empty.
        if ciphertext_len == 0 || (shape.cbc && ciphertext_len % 16 != 0) {
            return Err(JweError::Malformed(
                "ciphertext has the wrong length for enc",
            ));
        }
        if decode(tag_b64, "tag is not base64url")?.len() != shape.tag_len {
            return Err(JweError::Malformed("tag has the wrong length for enc"));
        }

        // The decrypter carries the kid and its alg: the library checks both again.
        let decrypter = if oaep_256 { &key.oaep_256 } else { &key.oaep };
        let (plaintext, _) = self
            .context
            .deserialize_compact(compact, decrypter)
            .map_err(|e| JweError::Decrypt(e.to_string()))?;
        let jws = String::from_utf8(plaintext).map_err(|_| JweError::NotJws)?;
        if jws.split('.').count() != 3 {
            return Err(JweError::NotJws);
        }
        Ok(jws)
    }
}

/// Whether a token has the five-segment JWE shape (four dots).
pub fn is_jwe(token: &str) -> bool {
    // `matches` finds the dots with memchr; a byte-by-byte count cost a quarter of a
    // microsecond on every launch token.
    token.matches('.').count() == 4
}

/// For tests and the demo: encrypt `inner_jws` to the RSA public JWK `public_jwk` (as
/// published by [`DecryptionKeys::public_jwks`]; its `alg` and `kid` are ignored) with
/// header `kid`, `alg` (RSA-OAEP or RSA-OAEP-256), `enc` and `cty: JWT`.
pub fn encrypt_for(
    public_jwk: &Value,
    kid: &str,
    alg: &str,
    enc: &str,
    inner_jws: &str,
) -> Result<String, String> {
    let mut map = public_jwk
        .as_object()
        .cloned()
        .ok_or("the JWK is not a JSON object")?;
    map.remove("alg");
    map.remove("kid");
    let jwk = Jwk::from_map(map).map_err(|e| e.to_string())?;
    let encrypter = match alg {
        "RSA-OAEP" => RSA_OAEP.encrypter_from_jwk(&jwk),
        "RSA-OAEP-256" => RSA_OAEP_256.encrypter_from_jwk(&jwk),
        other => return Err(format!("alg {other} is not RSA-OAEP or RSA-OAEP-256")),
    }
    .map_err(|e| e.to_string())?;
    let mut header = JweHeader::new();
    header.set_content_encryption(enc);
    header.set_content_type("JWT");
    header.set_key_id(kid);
    josekit::jwe::serialize_compact(inner_jws.as_bytes(), &header, &encrypter)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    // RSA1_5 is deprecated: here only to be refused.
    #[allow(deprecated)]
    use josekit::jwe::RSA1_5;
    use josekit::jwe::{A128KW, Dir, ECDH_ES, RSA_OAEP_384};
    use josekit::jwk::KeyPair;
    use josekit::jwk::alg::ec::{EcCurve, EcKeyPair};

    use super::*;
    use crate::sign::SigningKey;
    use crate::verify::Alg;

    const ALGS: [&str; 2] = ["RSA-OAEP", "RSA-OAEP-256"];
    const ENCS: [&str; 6] = [
        "A128CBC-HS256",
        "A192CBC-HS384",
        "A256CBC-HS512",
        "A128GCM",
        "A192GCM",
        "A256GCM",
    ];
    const JWS: &str = "eyJhbGciOiJSUzUxMiIsImtpZCI6InAifQ.eyJpc3MiOiJwb3J0YWwifQ.c2lnbmF0dXJl";

    /// Two RSA keys, "a" and "b", made once.
    fn pems() -> &'static [(Vec<u8>, String)] {
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

    fn keys() -> DecryptionKeys {
        DecryptionKeys::from_pems(pems()).unwrap()
    }

    fn jwk(keys: &DecryptionKeys, kid: &str) -> Value {
        keys.public_jwks()
            .into_iter()
            .find(|k| k["kid"] == kid)
            .unwrap()
    }

    /// `kid` "a", RSA-OAEP, A128CBC-HS256: what the producers seen send.
    fn token(keys: &DecryptionKeys) -> String {
        encrypt_for(&jwk(keys, "a"), "a", "RSA-OAEP", "A128CBC-HS256", JWS).unwrap()
    }

    fn encrypter(keys: &DecryptionKeys, kid: &str) -> josekit::jwe::alg::rsaes::RsaesJweEncrypter {
        let mut map = jwk(keys, kid).as_object().unwrap().clone();
        map.remove("alg");
        map.remove("kid");
        RSA_OAEP
            .encrypter_from_jwk(&Jwk::from_map(map).unwrap())
            .unwrap()
    }

    /// A token made by josekit with `header` as given (alg is set by the encrypter).
    fn with_header(keys: &DecryptionKeys, header: &JweHeader, payload: &[u8]) -> String {
        josekit::jwe::serialize_compact(payload, header, &encrypter(keys, "a")).unwrap()
    }

    fn header(enc: &str, kid: Option<&str>) -> JweHeader {
        let mut header = JweHeader::new();
        header.set_content_encryption(enc);
        if let Some(kid) = kid {
            header.set_key_id(kid);
        }
        header
    }

    /// Replace segment `i` with `f(decoded bytes)`, re-encoded.
    fn mangle(token: &str, i: usize, f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut segments: Vec<String> = token.split('.').map(String::from).collect();
        let mut bytes = URL_SAFE_NO_PAD.decode(&segments[i]).unwrap();
        f(&mut bytes);
        segments[i] = URL_SAFE_NO_PAD.encode(bytes);
        segments.join(".")
    }

    /// Rewrite the protected header's JSON (which is also the AAD).
    fn rewrite_header(token: &str, f: impl FnOnce(&mut Map<String, Value>)) -> String {
        mangle(token, 0, |bytes| {
            let mut header: Map<String, Value> = serde_json::from_slice(bytes).unwrap();
            f(&mut header);
            *bytes = serde_json::to_vec(&header).unwrap();
        })
    }

    /// The error, checked to hold neither plaintext nor key material.
    fn refused(keys: &DecryptionKeys, token: &str) -> JweError {
        let err = keys.decrypt(token).expect_err("must be refused");
        let text = err.to_string();
        assert!(
            !text.contains(JWS) && !text.contains("c2lnbmF0dXJl"),
            "{text}"
        );
        assert!(!text.contains("PRIVATE") && !text.contains("MII"), "{text}");
        err
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
            assert_eq!(
                URL_SAFE_NO_PAD
                    .decode(jwk["n"].as_str().unwrap())
                    .unwrap()
                    .len(),
                256
            );
        }
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
        let small = RsaKeyPair::generate(1024).unwrap().to_pem_private_key();
        assert!(DecryptionKeys::from_pems(&[(small, "x".into())]).is_err());
    }

    #[test]
    fn only_the_named_key_is_tried() {
        let keys = keys();
        // Encrypted to b, but naming a: a is tried and fails; b is never tried.
        let jwe = encrypt_for(&jwk(&keys, "b"), "a", "RSA-OAEP", "A128GCM", JWS).unwrap();
        assert!(matches!(refused(&keys, &jwe), JweError::Decrypt(_)));
        let jwe = encrypt_for(&jwk(&keys, "a"), "c", "RSA-OAEP", "A128GCM", JWS).unwrap();
        assert!(matches!(refused(&keys, &jwe), JweError::UnknownKid(_)));
        // A key loaded alone under another kid does not decrypt for a.
        let only_b = DecryptionKeys::from_pems(&pems()[1..]).unwrap();
        assert!(matches!(
            refused(&only_b, &token(&keys)),
            JweError::UnknownKid(_)
        ));
    }

    #[test]
    fn missing_or_odd_kid_is_refused() {
        let keys = keys();
        let jwe = with_header(&keys, &header("A128CBC-HS256", None), JWS.as_bytes());
        assert!(matches!(refused(&keys, &jwe), JweError::MissingKid));
        let jwe = rewrite_header(&token(&keys), |h| {
            h.insert("kid".into(), Value::from(1));
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
        for enc in ["A128CBC-HS256", "A256CBC-HS512", "A128GCM", "A256GCM"] {
            let jwe = encrypt_for(&jwk(&keys, "a"), "a", "RSA-OAEP-256", enc, JWS).unwrap();
            for i in 1..5 {
                for at in [0, 5] {
                    let bad = mangle(&jwe, i, |b| {
                        let at = at.min(b.len() - 1);
                        b[at] ^= 0x01;
                    });
                    assert!(
                        matches!(refused(&keys, &bad), JweError::Decrypt(_)),
                        "{enc} {i}"
                    );
                }
            }
            // The protected header is the AAD.
            let bad = rewrite_header(&jwe, |h| {
                h.insert("x".into(), Value::from(1));
            });
            assert!(
                matches!(refused(&keys, &bad), JweError::Decrypt(_)),
                "{enc} aad"
            );
            // Segments moved between two tokens for the same key.
            let other = encrypt_for(&jwk(&keys, "a"), "a", "RSA-OAEP-256", enc, JWS).unwrap();
            let (a, b): (Vec<&str>, Vec<&str>) =
                (jwe.split('.').collect(), other.split('.').collect());
            for i in 1..5 {
                let mut mixed = a.clone();
                mixed[i] = b[i];
                assert!(keys.decrypt(&mixed.join(".")).is_err(), "{enc} swap {i}");
            }
        }
    }

    #[test]
    #[allow(deprecated)]
    fn unsupported_algorithms_are_refused_before_any_key_is_used() {
        let keys = keys();
        let public = jwk(&keys, "a");
        let mut map = public.as_object().unwrap().clone();
        map.remove("alg");
        let rsa = Jwk::from_map(map).unwrap();
        let header = header("A128CBC-HS256", Some("a"));
        let ec = EcKeyPair::generate(EcCurve::P256)
            .unwrap()
            .to_jwk_public_key();
        let tokens = [
            josekit::jwe::serialize_compact(
                JWS.as_bytes(),
                &header,
                &RSA1_5.encrypter_from_jwk(&rsa).unwrap(),
            ),
            josekit::jwe::serialize_compact(
                JWS.as_bytes(),
                &header,
                &RSA_OAEP_384.encrypter_from_jwk(&rsa).unwrap(),
            ),
            josekit::jwe::serialize_compact(
                JWS.as_bytes(),
                &header,
                &Dir.encrypter_from_bytes([7u8; 32]).unwrap(),
            ),
            josekit::jwe::serialize_compact(
                JWS.as_bytes(),
                &header,
                &A128KW.encrypter_from_bytes([7u8; 16]).unwrap(),
            ),
            josekit::jwe::serialize_compact(
                JWS.as_bytes(),
                &header,
                &ECDH_ES.encrypter_from_jwk(&ec).unwrap(),
            ),
        ];
        for (jwe, alg) in tokens
            .iter()
            .zip(["RSA1_5", "RSA-OAEP-384", "dir", "A128KW", "ECDH-ES"])
        {
            match refused(&keys, jwe.as_ref().unwrap()) {
                JweError::UnsupportedAlg(got) => assert_eq!(got, format!("{alg:?}")),
                other => panic!("{alg}: {other}"),
            }
        }
        for alg in [
            Value::from("none"),
            Value::from("rsa-oaep"),
            Value::from(1),
            Value::Null,
        ] {
            let jwe = rewrite_header(&token(&keys), |h| {
                h.insert("alg".into(), alg);
            });
            assert!(matches!(refused(&keys, &jwe), JweError::UnsupportedAlg(_)));
        }
        let jwe = rewrite_header(&token(&keys), |h| {
            h.remove("alg");
        });
        assert!(matches!(refused(&keys, &jwe), JweError::Malformed(_)));
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

        let mut zipped = header("A128GCM", Some("a"));
        zipped.set_compression("DEF");
        let jwe = with_header(&keys, &zipped, JWS.as_bytes());
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
            h.set_content_type(cty);
            let jwe = with_header(&keys, &h, JWS.as_bytes());
            match keys.decrypt(&jwe) {
                Ok(jws) => assert!(ok && jws == JWS, "{cty}"),
                Err(e) => assert!(!ok && matches!(e, JweError::ContentType(_)), "{cty}: {e}"),
            }
        }
        let jwe = with_header(&keys, &header("A256GCM", Some("a")), JWS.as_bytes());
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
            b"",
            b"\xff.\xfe.\xfd",
        ] {
            let jwe = with_header(&keys, &h, payload);
            let err = refused(&keys, &jwe);
            assert!(matches!(err, JweError::NotJws), "{err}");
            assert!(!err.to_string().contains("secret"));
        }
        // A JWE inside a JWE is not unwrapped twice.
        let inner = token(&keys);
        let jwe = with_header(&keys, &h, inner.as_bytes());
        assert!(matches!(refused(&keys, &jwe), JweError::NotJws));
    }

    #[test]
    fn segment_shapes_are_checked_before_the_library() {
        let keys = keys();
        for enc in ["A128CBC-HS256", "A256GCM"] {
            let jwe = encrypt_for(&jwk(&keys, "a"), "a", "RSA-OAEP", enc, JWS).unwrap();
            let segments: Vec<&str> = jwe.split('.').collect();
            // The library panics on an empty IV: it must never get one.
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
        let tokens: Vec<String> = ENCS
            .iter()
            .map(|enc| encrypt_for(&jwk(&keys, "a"), "a", "RSA-OAEP", enc, JWS).unwrap())
            .collect();
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
}
