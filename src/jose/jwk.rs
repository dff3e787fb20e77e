//! Signature algorithms and public keys: which algorithms exist, how a JWKS entry becomes
//! a verifying key (refusing weak or ill-fitting keys at load time), and the signature check.
//! Keys are parsed into aws-lc-rs `ParsedPublicKey`s once, when the key set is loaded, so a
//! verify does no key parsing (and RSA keeps its Montgomery context between calls).

use std::fmt;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// The asymmetric JWS algorithms the guard can verify. `none` and HS* have no variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    ES512,
}

/// The elliptic curves a JWK may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    fn from_name(name: &str) -> Option<Curve> {
        match name {
            "P-256" => Some(Curve::P256),
            "P-384" => Some(Curve::P384),
            "P-521" => Some(Curve::P521),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    /// The one JWS algorithm of this curve, and its aws-lc-rs verifier (fixed-length
    /// `r || s` signatures, as JWS has them).
    fn ecdsa(self) -> (Alg, &'static signature::EcdsaVerificationAlgorithm) {
        match self {
            Curve::P256 => (Alg::ES256, &signature::ECDSA_P256_SHA256_FIXED),
            Curve::P384 => (Alg::ES384, &signature::ECDSA_P384_SHA384_FIXED),
            Curve::P521 => (Alg::ES512, &signature::ECDSA_P521_SHA512_FIXED),
        }
    }

    /// Length of one coordinate in bytes.
    fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }
}

impl Alg {
    pub const ALL: [Alg; 9] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::ES512,
    ];

    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::ES512 => "ES512",
        }
    }

    /// The curve an EC algorithm requires, `None` for RSA algorithms.
    pub fn curve(self) -> Option<Curve> {
        match self {
            Alg::ES256 => Some(Curve::P256),
            Alg::ES384 => Some(Curve::P384),
            Alg::ES512 => Some(Curve::P521),
            _ => None,
        }
    }

    /// The aws-lc-rs parameters of an RSA algorithm, `None` for EC algorithms: keys of 2048
    /// to 8192 bits, the range jsonwebtoken verified with (below 2048 is refused at load).
    fn rsa_parameters(self) -> Option<&'static RsaParameters> {
        match self {
            Alg::RS256 => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
            Alg::RS384 => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
            Alg::RS512 => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
            Alg::PS256 => Some(&signature::RSA_PSS_2048_8192_SHA256),
            Alg::PS384 => Some(&signature::RSA_PSS_2048_8192_SHA384),
            Alg::PS512 => Some(&signature::RSA_PSS_2048_8192_SHA512),
            Alg::ES256 | Alg::ES384 | Alg::ES512 => None,
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// RSA keys below this size are refused when a key set is loaded.
pub const MIN_RSA_BITS: usize = 2048;

/// What kind of key a JWK holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa { bits: usize },
    Ec(Curve),
}

/// A public key from a portal's JWKS, ready to verify signatures.
pub struct VerifyKey {
    pub kid: String,
    pub key_type: KeyType,
    /// The JWK's `alg`, when it names one.
    pub alg: Option<Alg>,
    /// The JWK's `use`, when present (then always "sig").
    pub key_use: Option<String>,
    /// One parsed key per algorithm this key fits: aws-lc-rs ties a parsed key to one
    /// algorithm, so an RSA key without `alg` has six (RS* and PS*), an EC key one.
    parsed: Vec<(Alg, ParsedPublicKey)>,
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("key_type", &self.key_type)
            .field("alg", &self.alg)
            .field("key_use", &self.key_use)
            .finish()
    }
}

impl VerifyKey {
    /// Whether this key may verify a token signed with `alg`: the key type and curve must
    /// fit, and a key that names an `alg` is used for that algorithm only.
    pub fn fits(&self, alg: Alg) -> bool {
        if self.alg.is_some_and(|a| a != alg) {
            return false;
        }
        match (self.key_type, alg.curve()) {
            (KeyType::Rsa { .. }, None) => true,
            (KeyType::Ec(curve), Some(wanted)) => curve == wanted,
            _ => false,
        }
    }

    /// Check `signature` (base64url, as in the token) over `message` (header.payload).
    /// The caller has checked `fits(alg)`.
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &str) -> bool {
        let Some((_, key)) = self.parsed.iter().find(|(a, _)| *a == alg) else {
            return false;
        };
        let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        key.verify_sig(message, &signature).is_ok()
    }

    /// A short description for reports: "RSA 2048" or "EC P-256".
    pub fn describe(&self) -> String {
        match self.key_type {
            KeyType::Rsa { bits } => format!("RSA {bits}"),
            KeyType::Ec(curve) => format!("EC {}", curve.name()),
        }
    }
}

/// Why a JWKS entry was not loaded, and what the entry said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProblem {
    pub kid: Option<String>,
    pub kind: KeyProblemKind,
    pub problem: String,
    /// The entry's `kty`, `alg` and `use` as written, when they are strings.
    pub kty: Option<String>,
    pub alg: Option<String>,
    pub key_use: Option<String>,
}

/// The kinds of [`KeyProblem`]; `as_str()` is stable (`hti-guard check --json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProblemKind {
    NotAnObject,
    NoKid,
    NotForSigning,
    UnsupportedAlg,
    UnsupportedKeyType,
    UnsupportedCurve,
    WeakRsaKey,
    Malformed,
    AlgMismatch,
    DuplicateKid,
}

impl KeyProblemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyProblemKind::NotAnObject => "not_an_object",
            KeyProblemKind::NoKid => "no_kid",
            KeyProblemKind::NotForSigning => "not_for_signing",
            KeyProblemKind::UnsupportedAlg => "unsupported_alg",
            KeyProblemKind::UnsupportedKeyType => "unsupported_kty",
            KeyProblemKind::UnsupportedCurve => "unsupported_curve",
            KeyProblemKind::WeakRsaKey => "weak_rsa_key",
            KeyProblemKind::Malformed => "malformed",
            KeyProblemKind::AlgMismatch => "alg_mismatch",
            KeyProblemKind::DuplicateKid => "duplicate_kid",
        }
    }
}

/// Why `parse_key` refused an entry.
type Refusal = (KeyProblemKind, String);

fn malformed(message: String) -> Refusal {
    (KeyProblemKind::Malformed, message)
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kid {
            Some(kid) => write!(f, "key {kid:?}: {}", self.problem),
            None => write!(f, "key without kid: {}", self.problem),
        }
    }
}

/// A parsed key set: the usable keys and what was wrong with the others.
#[derive(Debug, Default)]
pub struct ParsedJwks {
    pub keys: Vec<VerifyKey>,
    pub problems: Vec<KeyProblem>,
}

/// Why a whole JWKS document was refused.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("no \"keys\" array")]
    NoKeys,
}

/// Parse a JWKS document. Entries that cannot be used are skipped and reported, never
/// fatal: one odd key (an encryption key, an unknown type) must not hide the others.
pub fn parse_jwks(body: &[u8]) -> Result<ParsedJwks, JwksError> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| JwksError::NotJson(e.to_string()))?;
    let entries = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(JwksError::NoKeys)?;
    let mut parsed = ParsedJwks::default();
    for entry in entries {
        let text = |name: &str| entry.get(name).and_then(Value::as_str).map(str::to_owned);
        let problem = |(kind, problem): Refusal| KeyProblem {
            kid: text("kid"),
            kind,
            problem,
            kty: text("kty"),
            alg: text("alg"),
            key_use: text("use"),
        };
        let Some(obj) = entry.as_object() else {
            parsed.problems.push(problem((
                KeyProblemKind::NotAnObject,
                "not a JSON object".into(),
            )));
            continue;
        };
        match parse_key(obj) {
            Ok(key) => {
                if parsed
                    .keys
                    .iter()
                    .any(|k| k.kid == key.kid && k.fits_same(&key))
                {
                    parsed.problems.push(problem((
                        KeyProblemKind::DuplicateKid,
                        "duplicate kid for the same key type; the first is used".into(),
                    )));
                } else {
                    parsed.keys.push(key);
                }
            }
            Err(refusal) => parsed.problems.push(problem(refusal)),
        }
    }
    Ok(parsed)
}

impl VerifyKey {
    fn fits_same(&self, other: &VerifyKey) -> bool {
        Alg::ALL
            .into_iter()
            .any(|alg| self.fits(alg) && other.fits(alg))
    }
}

fn b64_field(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let text = obj
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing \"{name}\""))?;
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| format!("\"{name}\" is not base64url"))
}

fn parse_key(obj: &Map<String, Value>) -> Result<VerifyKey, Refusal> {
    use KeyProblemKind as Kind;
    let kid = match obj.get("kid") {
        Some(Value::String(kid)) if !kid.is_empty() => kid.clone(),
        Some(_) => return Err((Kind::NoKid, "\"kid\" is not a non-empty string".into())),
        None => {
            return Err((Kind::NoKid, "no \"kid\" (HTI requires one per key)".into()));
        }
    };
    let key_use = match obj.get("use") {
        None => None,
        Some(Value::String(u)) if u == "sig" => Some(u.clone()),
        Some(other) => {
            return Err((
                Kind::NotForSigning,
                format!("\"use\" is {other}, not \"sig\""),
            ));
        }
    };
    if let Some(ops) = obj.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Err((
                Kind::NotForSigning,
                "\"key_ops\" does not allow \"verify\"".into(),
            ));
        }
    }
    let alg = match obj.get("alg") {
        None => None,
        Some(Value::String(name)) => Some(Alg::from_name(name).ok_or_else(|| {
            (
                Kind::UnsupportedAlg,
                format!("\"alg\" {name:?} is not a supported signature algorithm"),
            )
        })?),
        Some(_) => return Err((Kind::UnsupportedAlg, "\"alg\" is not a string".into())),
    };
    let kty = obj
        .get("kty")
        .and_then(Value::as_str)
        .ok_or_else(|| (Kind::UnsupportedKeyType, "missing \"kty\"".to_string()))?;
    let (key_type, parsed) = match kty {
        "RSA" => {
            let n = b64_field(obj, "n").map_err(malformed)?;
            let e = b64_field(obj, "e").map_err(malformed)?;
            let bits = rsa_bits(&n);
            if bits < MIN_RSA_BITS {
                return Err((
                    Kind::WeakRsaKey,
                    format!(
                        "RSA key of {bits} bits is too weak (at least {MIN_RSA_BITS} required)"
                    ),
                ));
            }
            if e.is_empty() || e.len() > 8 {
                return Err(malformed("RSA exponent \"e\" is out of range".into()));
            }
            // aws-lc-rs wants the integers without leading zeros, which some JWKS add.
            let components = RsaPublicKeyComponents {
                n: without_leading_zeros(&n),
                e: without_leading_zeros(&e),
            };
            let mut parsed = Vec::new();
            for rsa_alg in Alg::ALL {
                let Some(params) = rsa_alg.rsa_parameters() else {
                    continue;
                };
                if alg.is_some_and(|a| a != rsa_alg) {
                    continue;
                }
                let key = components
                    .to_parsed_public_key(params)
                    .map_err(|e| malformed(format!("invalid RSA key: {e}")))?;
                parsed.push((rsa_alg, key));
            }
            (KeyType::Rsa { bits }, parsed)
        }
        "EC" => {
            let crv_name = obj
                .get("crv")
                .and_then(Value::as_str)
                .ok_or_else(|| malformed("missing \"crv\"".into()))?;
            let curve = Curve::from_name(crv_name).ok_or_else(|| {
                (
                    Kind::UnsupportedCurve,
                    format!("unsupported curve {crv_name:?} (P-256, P-384 or P-521)"),
                )
            })?;
            let x = b64_field(obj, "x").map_err(malformed)?;
            let y = b64_field(obj, "y").map_err(malformed)?;
            let len = curve.coordinate_len();
            if x.len() != len || y.len() != len {
                return Err(malformed(format!(
                    "coordinates of a {} key must be {len} bytes",
                    curve.name()
                )));
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let (ec_alg, ecdsa) = curve.ecdsa();
            // Parsing checks that the point is on the curve.
            let key = ParsedPublicKey::new(ecdsa, &point)
                .map_err(|e| malformed(format!("invalid EC key: {e}")))?;
            (KeyType::Ec(curve), vec![(ec_alg, key)])
        }
        other => {
            return Err((
                Kind::UnsupportedKeyType,
                format!("unsupported key type {other:?} (RSA or EC)"),
            ));
        }
    };
    let key = VerifyKey {
        kid,
        key_type,
        alg,
        key_use,
        parsed,
    };
    if let Some(alg) = key.alg
        && !key.fits(alg)
    {
        return Err((
            Kind::AlgMismatch,
            format!("\"alg\" {alg} does not fit a {} key", key.describe()),
        ));
    }
    Ok(key)
}

fn without_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// The bit length of a big-endian modulus.
fn rsa_bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|&b| b != 0) {
        Some(first) => &n[first..],
        None => return 0,
    };
    n.len() * 8 - n[0].leading_zeros() as usize
}

/// An RFC 7638 thumbprint: SHA-256 over `canonical` (the required members of a public JWK,
/// in lexicographic order, without whitespace), base64url.
pub fn thumbprint(canonical: &str) -> String {
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    URL_SAFE_NO_PAD.encode(hash.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rsa_jwk(bytes: usize) -> Value {
        let mut n = vec![0xc5u8; bytes];
        n[0] = 0xff;
        json!({"kty": "RSA", "kid": "r", "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB"})
    }

    fn load(key: Value) -> ParsedJwks {
        parse_jwks(json!({ "keys": [key] }).to_string().as_bytes()).unwrap()
    }

    #[test]
    fn rsa_bits_counts_from_the_top_bit() {
        assert_eq!(rsa_bits(&[0, 0x80, 0]), 16);
        assert_eq!(rsa_bits(&[0x01, 0]), 9);
        assert_eq!(rsa_bits(&[]), 0);
    }

    #[test]
    fn weak_rsa_is_refused_at_load() {
        let parsed = load(rsa_jwk(128));
        assert!(parsed.keys.is_empty());
        assert!(parsed.problems[0].problem.contains("1024 bits"));
        assert_eq!(load(rsa_jwk(256)).keys.len(), 1);
    }

    #[test]
    fn keys_not_for_signing_are_refused() {
        let mut k = rsa_jwk(256);
        k["use"] = json!("enc");
        assert!(load(k).keys.is_empty());
        let mut k = rsa_jwk(256);
        k["key_ops"] = json!(["encrypt"]);
        assert!(load(k).keys.is_empty());
        let mut k = rsa_jwk(256);
        k["alg"] = json!("RSA-OAEP");
        assert!(load(k).keys.is_empty());
        let mut k = rsa_jwk(256);
        k["alg"] = json!("ES256");
        assert!(load(k).keys.is_empty());
        let mut k = rsa_jwk(256);
        k.as_object_mut().unwrap().remove("kid");
        assert!(load(k).keys.is_empty());
    }

    #[test]
    fn key_fits_only_its_algorithms() {
        let mut k = rsa_jwk(256);
        k["alg"] = json!("RS512");
        let key = load(k).keys.pop().unwrap();
        assert!(key.fits(Alg::RS512));
        assert!(!key.fits(Alg::RS256));
        assert!(!key.fits(Alg::ES256));
        let key = load(rsa_jwk(256)).keys.pop().unwrap();
        assert!(key.fits(Alg::PS256) && key.fits(Alg::RS384));
        assert!(!key.fits(Alg::ES512));
    }

    /// The coordinates of a fresh P-256 public key, base64url.
    fn p256_coordinates() -> (String, String) {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let point = pair.public_key().as_ref();
        (
            URL_SAFE_NO_PAD.encode(&point[1..33]),
            URL_SAFE_NO_PAD.encode(&point[33..65]),
        )
    }

    #[test]
    fn ec_curves_must_match() {
        let (x, y) = p256_coordinates();
        let k = json!({"kty": "EC", "kid": "e", "crv": "P-256", "x": x, "y": y});
        let key = load(k).keys.pop().unwrap();
        assert!(key.fits(Alg::ES256));
        assert!(!key.fits(Alg::ES384) && !key.fits(Alg::RS256));
        let bad = json!({"kty": "EC", "kid": "e", "crv": "P-384", "x": x, "y": y});
        assert!(load(bad).keys.is_empty());
        let c = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let odd = json!({"kty": "EC", "kid": "e", "crv": "secp256k1", "x": c, "y": c});
        assert!(load(odd).problems[0].problem.contains("unsupported curve"));
    }

    #[test]
    fn keys_that_do_not_parse_are_malformed() {
        // Not a point on P-256: refused when loading, not at every verify.
        let c = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let off_curve = json!({"kty": "EC", "kid": "e", "crv": "P-256", "x": c, "y": c});
        let parsed = load(off_curve);
        assert!(parsed.keys.is_empty());
        assert_eq!(parsed.problems[0].kind, KeyProblemKind::Malformed);
        let mut zero_e = rsa_jwk(256);
        zero_e["e"] = json!("AA");
        assert_eq!(load(zero_e).problems[0].kind, KeyProblemKind::Malformed);
    }

    #[test]
    fn rsa_keys_without_alg_verify_every_rsa_algorithm() {
        let key = load(rsa_jwk(256)).keys.pop().unwrap();
        let algs: Vec<Alg> = key.parsed.iter().map(|(alg, _)| *alg).collect();
        assert_eq!(
            algs,
            [
                Alg::RS256,
                Alg::RS384,
                Alg::RS512,
                Alg::PS256,
                Alg::PS384,
                Alg::PS512
            ]
        );
        let mut k = rsa_jwk(256);
        k["alg"] = json!("PS384");
        let key = load(k).keys.pop().unwrap();
        assert_eq!(key.parsed.len(), 1);
        assert_eq!(key.parsed[0].0, Alg::PS384);
    }

    #[test]
    fn a_leading_zero_in_the_modulus_is_tolerated() {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::rsa::KeySize;
        use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let mut n = vec![0u8];
        n.extend_from_slice(
            pair.public_key()
                .modulus()
                .big_endian_without_leading_zero(),
        );
        let k = json!({"kty": "RSA", "kid": "r", "n": URL_SAFE_NO_PAD.encode(n), "e": "AAEAAQ"});
        let key = load(k).keys.pop().unwrap();
        assert_eq!(key.key_type, KeyType::Rsa { bits: 2048 });
        let mut signature = vec![0; pair.public_modulus_len()];
        pair.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            b"h.p",
            &mut signature,
        )
        .unwrap();
        let signature = URL_SAFE_NO_PAD.encode(signature);
        assert!(key.verify(Alg::RS256, b"h.p", &signature));
        assert!(!key.verify(Alg::RS256, b"h.q", &signature));
        assert!(!key.verify(Alg::PS256, b"h.p", &signature));
        assert!(!key.verify(Alg::RS256, b"h.p", &format!("{signature}=")));
    }

    #[test]
    fn problems_name_their_kind_and_what_the_entry_said() {
        let c = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let mut enc = rsa_jwk(256);
        enc["use"] = json!("enc");
        let mut mismatch = rsa_jwk(256);
        mismatch["alg"] = json!("ES256");
        let mut no_kid = rsa_jwk(256);
        no_kid.as_object_mut().unwrap().remove("kid");
        let doc = json!({"keys": [
            rsa_jwk(128),
            enc,
            mismatch,
            no_kid,
            {"kty": "EC", "kid": "e", "crv": "secp256k1", "x": c, "y": c},
            {"kty": "oct", "kid": "o", "k": "c2VjcmV0"},
            rsa_jwk(256),
            rsa_jwk(256),
            7,
        ]});
        let parsed = parse_jwks(doc.to_string().as_bytes()).unwrap();
        let kinds: Vec<&str> = parsed.problems.iter().map(|p| p.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "weak_rsa_key",
                "not_for_signing",
                "alg_mismatch",
                "no_kid",
                "unsupported_curve",
                "unsupported_kty",
                "duplicate_kid",
                "not_an_object"
            ]
        );
        assert_eq!(parsed.problems[1].key_use.as_deref(), Some("enc"));
        assert_eq!(parsed.problems[2].alg.as_deref(), Some("ES256"));
        assert_eq!(parsed.problems[5].kty.as_deref(), Some("oct"));
        assert_eq!(parsed.keys.len(), 1);
        assert_eq!(parsed.keys[0].key_use, None);
    }

    #[test]
    fn a_bad_document_is_an_error() {
        assert!(parse_jwks(b"<html>").is_err());
        assert!(parse_jwks(b"{\"nokeys\": []}").is_err());
    }
}
