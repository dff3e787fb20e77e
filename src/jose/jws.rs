//! JWS compact serialization (RFC 7515): split a token, decode its header and payload, and
//! read `alg` and `kid`, before any trust is placed in it. Format only: which issuer, key
//! and claims are acceptable is the verifier's business.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::jose::jwk::Alg;

/// The largest token accepted (well above any real HTI token).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a token is not a usable compact JWS. The Display is the log detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// Not a compact JWS, or a header or payload that is not what it must be.
    #[error("{0}")]
    Malformed(&'static str),
    /// A well-formed header naming an algorithm that is not accepted (`none`, HS*, ...).
    #[error("alg {0:?} is not accepted")]
    UnsupportedAlg(String),
}

/// A compact JWS split and decoded, before any trust is placed in it.
#[derive(Debug)]
pub struct Decoded<'t> {
    pub alg: Alg,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
    /// `header.payload`, the signed bytes.
    pub signing_input: &'t str,
    pub signature: &'t str,
}

fn malformed(detail: &'static str) -> JwsError {
    JwsError::Malformed(detail)
}

fn b64(segment: &str) -> Result<Vec<u8>, JwsError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| malformed("segment is not base64url"))
}

/// The base64url alphabet, by byte.
const BASE64URL: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        i += 1;
    }
    table
};

/// Whether `segment` is unpadded base64url (checked without decoding: the signature is
/// decoded once, by the verifier). A table and no early exit: about five times faster than
/// `all()` with comparisons on a 342-character RS256 signature.
fn is_base64url(segment: &str) -> bool {
    segment.len() % 4 != 1
        && segment
            .bytes()
            .fold(true, |ok, b| ok & BASE64URL[usize::from(b)])
}

/// The header parameters the verifier reads, parsed in one pass without building a map:
/// `alg` stays borrowed from the decoded header, every other parameter is checked as JSON
/// (as a `serde_json::Value` would be) and dropped. A repeated name keeps its last value,
/// as in a `serde_json::Map`.
#[derive(Default)]
struct Header<'a> {
    alg: Option<Text<'a>>,
    kid: Option<Text<'a>>,
    crit: bool,
}

/// The names in a header: the ones read, and the rest.
#[derive(serde::Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum HeaderName {
    Alg,
    Kid,
    Crit,
    #[serde(other)]
    Other,
}

/// A header value that ought to be a string.
enum Text<'a> {
    Str(Cow<'a, str>),
    NotStr,
}

impl<'de> serde::Deserialize<'de> for Header<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(HeaderVisitor)
    }
}

struct HeaderVisitor;

impl<'de> Visitor<'de> for HeaderVisitor {
    type Value = Header<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JOSE header object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Header<'de>, A::Error> {
        let mut header = Header::default();
        while let Some(name) = map.next_key()? {
            match name {
                HeaderName::Alg => header.alg = Some(map.next_value()?),
                HeaderName::Kid => header.kid = Some(map.next_value()?),
                HeaderName::Crit => {
                    map.next_value::<Skip>()?;
                    header.crit = true;
                }
                HeaderName::Other => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(header)
    }
}

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text::Str(Cow::Owned(v)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Text<'de>, E> {
                Ok(Text::NotStr)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Text<'de>, E> {
                Ok(Text::NotStr)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Text<'de>, E> {
                Ok(Text::NotStr)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Text<'de>, E> {
                Ok(Text::NotStr)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Text<'de>, E> {
                Ok(Text::NotStr)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Text<'de>, A::Error> {
                SkipVisitor.visit_seq(seq).map(|_| Text::NotStr)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Text<'de>, A::Error> {
                SkipVisitor.visit_map(map).map(|_| Text::NotStr)
            }
        }
        deserializer.deserialize_any(TextVisitor)
    }
}

/// Any JSON value, parsed and dropped. Unlike `IgnoredAny`, which serde_json skims, it is
/// held to what a `serde_json::Value` accepts: UTF-8 strings without a lone surrogate
/// escape, numbers in range.
struct Skip;

impl<'de> serde::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// Parse a decoded header. A header that is JSON but not an object is told apart from one
/// that is not JSON, for the log.
fn parse_header(json: &[u8]) -> Result<Header<'_>, JwsError> {
    serde_json::from_slice(json).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => malformed("header is not a JSON object"),
        _ => malformed("header is not JSON"),
    })
}

/// Split and decode a compact JWS; read `alg` and `kid` from its header. Header keys that
/// would point at other keys (`jwk`, `jku`, `x5u`, `x5c`) are ignored, never followed.
pub fn decode(token: &str) -> Result<Decoded<'_>, JwsError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(malformed("token too long"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("not a compact JWS (three segments)"));
    };
    if let Some(_more) = parts.next() {
        return Err(malformed(
            "not a compact JWS (encrypted or extra segments are not accepted)",
        ));
    }
    if header.is_empty() || payload.is_empty() {
        return Err(malformed("empty segment"));
    }
    let header_json = b64(header)?;
    let header_obj = parse_header(&header_json)?;
    let alg = match &header_obj.alg {
        Some(Text::Str(name)) => {
            Alg::from_name(name).ok_or_else(|| JwsError::UnsupportedAlg(name.to_string()))?
        }
        Some(Text::NotStr) => return Err(malformed("alg is not a string")),
        None => return Err(malformed("header has no alg")),
    };
    // Checked after alg, so that an unsigned `none` token is named for what it is.
    if signature.is_empty() {
        return Err(malformed("empty signature"));
    }
    if !is_base64url(signature) {
        return Err(malformed("signature is not base64url"));
    }
    if header_obj.crit {
        return Err(malformed("crit header extensions are not understood"));
    }
    let kid = match header_obj.kid {
        None => None,
        Some(Text::Str(kid)) => Some(kid.into_owned()),
        Some(Text::NotStr) => return Err(malformed("kid is not a string")),
    };
    let claims: Map<String, Value> = serde_json::from_slice(&b64(payload)?)
        .map_err(|_| malformed("payload is not a JSON object"))?;
    Ok(Decoded {
        alg,
        kid,
        claims,
        signing_input: &token[..header.len() + 1 + payload.len()],
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(v: &str) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    /// The kind of refusal, which the verifier maps to a reason (malformed_token,
    /// unsupported_algorithm).
    #[derive(Debug, PartialEq)]
    enum Kind {
        Malformed,
        UnsupportedAlg,
    }

    fn reason(token: &str) -> Kind {
        match decode(token).unwrap_err() {
            JwsError::Malformed(_) => Kind::Malformed,
            JwsError::UnsupportedAlg(_) => Kind::UnsupportedAlg,
        }
    }

    #[test]
    fn decode_sorts_out_bad_shapes() {
        let payload = seg(r#"{"iss":"x"}"#);
        assert_eq!(reason("abc"), Kind::Malformed);
        assert_eq!(reason("a.b.c.d.e"), Kind::Malformed);
        assert_eq!(
            reason(&format!("{}.{payload}.", seg(r#"{"alg":"RS256"}"#))),
            Kind::Malformed
        );
        assert_eq!(reason(&format!("!!.{payload}.sig")), Kind::Malformed);
        assert_eq!(
            reason(&format!("{}.{payload}.sig", seg("[1]"))),
            Kind::Malformed
        );
        assert_eq!(
            reason(&format!("{}.{}.sig", seg(r#"{"alg":"RS256"}"#), seg("[]"))),
            Kind::Malformed
        );
        assert_eq!(
            reason(&format!(
                "{}.{payload}.sig",
                seg(r#"{"alg":"RS256","crit":["x"]}"#)
            )),
            Kind::Malformed
        );
    }

    #[test]
    fn base64url_is_the_url_alphabet_without_padding() {
        assert!(is_base64url("AZaz09-_"));
        assert!(is_base64url("abc") && is_base64url("ab") && is_base64url(""));
        assert!(!is_base64url("a"));
        for bad in ["ab+c", "ab/c", "abc=", "ab c", "ab.c", "abé"] {
            assert!(!is_base64url(bad), "{bad}");
        }
        for b in 0..=255u8 {
            let expected = b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
            assert_eq!(BASE64URL[usize::from(b)], expected, "{b}");
        }
    }

    #[test]
    fn decode_refuses_none_and_hmac() {
        let payload = seg(r#"{"iss":"x"}"#);
        for alg in [
            "none", "None", "HS256", "HS384", "HS512", "EdDSA", "rs256", "",
        ] {
            let token = format!("{}.{payload}.c2ln", seg(&format!(r#"{{"alg":"{alg}"}}"#)));
            assert_eq!(reason(&token), Kind::UnsupportedAlg, "{alg}");
        }
        let unsigned = format!("{}.{payload}.", seg(r#"{"alg":"none"}"#));
        assert_eq!(reason(&unsigned), Kind::UnsupportedAlg);
    }

    /// `decode` as it was with a `serde_json::Value` header: the reference for the typed one.
    fn decode_with_value(token: &str) -> Result<Decoded<'_>, JwsError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(malformed("token too long"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("not a compact JWS (three segments)"));
        };
        if let Some(_more) = parts.next() {
            return Err(malformed(
                "not a compact JWS (encrypted or extra segments are not accepted)",
            ));
        }
        if header.is_empty() || payload.is_empty() {
            return Err(malformed("empty segment"));
        }
        let header_json: Value =
            serde_json::from_slice(&b64(header)?).map_err(|_| malformed("header is not JSON"))?;
        let Value::Object(header_obj) = header_json else {
            return Err(malformed("header is not a JSON object"));
        };
        let alg = match header_obj.get("alg") {
            Some(Value::String(name)) => {
                Alg::from_name(name).ok_or_else(|| JwsError::UnsupportedAlg(name.clone()))?
            }
            Some(_) => return Err(malformed("alg is not a string")),
            None => return Err(malformed("header has no alg")),
        };
        if signature.is_empty() {
            return Err(malformed("empty signature"));
        }
        if !is_base64url(signature) {
            return Err(malformed("signature is not base64url"));
        }
        if header_obj.contains_key("crit") {
            return Err(malformed("crit header extensions are not understood"));
        }
        let kid = match header_obj.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(malformed("kid is not a string")),
        };
        let claims = match serde_json::from_slice(&b64(payload)?) {
            Ok(Value::Object(map)) => map,
            _ => return Err(malformed("payload is not a JSON object")),
        };
        Ok(Decoded {
            alg,
            kid,
            claims,
            signing_input: &token[..header.len() + 1 + payload.len()],
            signature,
        })
    }

    #[test]
    fn typed_header_decodes_as_the_value_header_did() {
        let deep = format!(
            r#"{{"alg":"RS256","x":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let headers: Vec<Vec<u8>> = [
            r#"{"alg":"RS256"}"#,
            r#" { "alg" : "ES256" , "kid" : "k1" , "typ" : "JWT" } "#,
            r#"{"alg":"HS256","alg":"RS256"}"#,
            r#"{"alg":"RS256","alg":"HS256"}"#,
            r#"{"alg":1,"alg":"ES384","kid":2,"kid":"k"}"#,
            r#"{"alg":"PS256","kid":"k","kid":null}"#,
            r#"{"\u0061lg":"RS256","k\u0069d":"a\"b\u00e9"}"#,
            r#"{"alg":"RS\u0032\u0035\u0036"}"#,
            r#"{"alg":"RS256","kid":"ключ/🙂"}"#,
            r#"{"alg":"RS256","kid":"\ud83d\ude00"}"#,
            r#"{"alg":"RS256","kid":"\ud800"}"#,
            r#"{"alg":"RS256","typ":"\ud800"}"#,
            r#"{"alg":"RS256","x":{"\udc00":1}}"#,
            r#"{"alg":"RS256","x":1e400}"#,
            r#"{"alg":"RS256","x":[1,-2,3.5,true,null,"s",{"a":[]}]}"#,
            r#"{"alg":"RS256","x":"a\qb"}"#,
            "{\"alg\":\"RS256\",\"typ\":\"a\u{1}b\"}",
            r#"{"alg":null}"#,
            r#"{"alg":5}"#,
            r#"{"alg":1.5}"#,
            r#"{"alg":true}"#,
            r#"{"alg":["RS256"]}"#,
            r#"{"alg":{"name":"RS256"}}"#,
            r#"{"alg":"none"}"#,
            r#"{"alg":"HS512","kid":"k"}"#,
            r#"{"alg":""}"#,
            r#"{"kid":"k"}"#,
            r#"{}"#,
            r#"{"alg":"RS256","kid":null}"#,
            r#"{"alg":"RS256","kid":7}"#,
            r#"{"alg":"RS256","kid":["k"]}"#,
            r#"{"alg":"RS256","kid":{}}"#,
            r#"{"alg":"RS256","crit":null}"#,
            r#"{"alg":"RS256","crit":[]}"#,
            r#"{"alg":"RS256","crit":["exp"],"exp":1}"#,
            r#"{"alg":"none","crit":["x"],"kid":5}"#,
            r#"{"alg":"ES512","jku":"http://evil","jwk":{"kty":"EC","x":"\ud800"}}"#,
            r#"{"alg":"RS256"} x"#,
            r#"{"alg":"RS256",}"#,
            r#"{"alg":"RS256""#,
            r#"{"alg" "RS256"}"#,
            "\u{feff}{\"alg\":\"RS256\"}",
            r#"[{"alg":"RS256"}]"#,
            r#""RS256""#,
            "null",
            "1",
            "true",
            "",
            " ",
            &deep,
        ]
        .iter()
        .map(|h| h.as_bytes().to_vec())
        .chain([
            b"{\"alg\":\"RS256\",\"typ\":\"\xff\"}".to_vec(),
            b"{\"alg\":\"RS256\",\"\xc3\x28\":1}".to_vec(),
            b"{\"alg\":\"RS256\",\"kid\":\"\xed\xa0\x80\"}".to_vec(),
            b"{\"alg\":\"RS256\"}\xff".to_vec(),
        ])
        .collect();
        let payloads = [
            r#"{"iss":"x"}"#,
            r#"{"iss":"x","iss":"y","n":1e5}"#,
            r#"{}"#,
            "[]",
            "null",
            r#""x""#,
            r#"{"iss":"x""#,
        ];
        let mut compared = 0;
        for header in &headers {
            for payload in payloads {
                for signature in ["c2ln", "", "a", "ab+c"] {
                    let token = format!(
                        "{}.{}.{signature}",
                        URL_SAFE_NO_PAD.encode(header),
                        seg(payload)
                    );
                    let what = format!("{} / {payload} / {signature:?}", header.escape_ascii());
                    match (decode(&token), decode_with_value(&token)) {
                        (Ok(new), Ok(old)) => {
                            assert_eq!(new.alg, old.alg, "{what}");
                            assert_eq!(new.kid, old.kid, "{what}");
                            assert_eq!(new.claims, old.claims, "{what}");
                            assert_eq!(new.signing_input, old.signing_input, "{what}");
                            assert_eq!(new.signature, old.signature, "{what}");
                        }
                        (Err(new), Err(old)) => {
                            assert_eq!(new, old, "{what}");
                        }
                        (new, old) => panic!("{what}: {new:?} but {old:?} before"),
                    }
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, headers.len() * payloads.len() * 4);
    }

    #[test]
    fn header_names_and_repeats() {
        let payload = seg(r#"{"iss":"x"}"#);
        let token = |h: &str| format!("{}.{payload}.c2ln", seg(h));
        // The last of a repeated name counts, as it did in a JSON map.
        let repeated = token(r#"{"alg":"HS256","alg":"RS256","kid":1,"kid":"k"}"#);
        let d = decode(&repeated).unwrap();
        assert_eq!((d.alg, d.kid.as_deref()), (Alg::RS256, Some("k")));
        assert_eq!(
            reason(&token(r#"{"alg":"RS256","alg":"HS256"}"#)),
            Kind::UnsupportedAlg
        );
        // Escaped names are the names they spell.
        let escaped = token(r#"{"\u0061lg":"ES256","k\u0069d":"a\u00e9"}"#);
        let d = decode(&escaped).unwrap();
        assert_eq!((d.alg, d.kid.as_deref()), (Alg::ES256, Some("aé")));
        assert_eq!(
            reason(&token(r#"{"alg":"RS256","cr\u0069t":null}"#)),
            Kind::Malformed
        );
        assert_eq!(
            reason(&token(r#"{"alg":"RS256","kid":null}"#)),
            Kind::Malformed
        );
        // A parameter the verifier does not read is still held to JSON.
        assert_eq!(
            reason(&token(r#"{"alg":"RS256","typ":"\ud800"}"#)),
            Kind::Malformed
        );
    }

    #[test]
    fn decode_ignores_embedded_keys() {
        let header = seg(r#"{"alg":"ES512","kid":"k","jku":"http://evil","jwk":{"kty":"EC"}}"#);
        let token = format!("{header}.{}.c2ln", seg(r#"{"iss":"x"}"#));
        let d = decode(&token).unwrap();
        assert_eq!(d.alg, Alg::ES512);
        assert_eq!(d.kid.as_deref(), Some("k"));
        assert_eq!(d.signing_input.len(), token.len() - 5);
    }
}
