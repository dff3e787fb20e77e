//! Token minting with real keys: every HTI algorithm, signed with aws-lc-rs directly so the
//! tests do not share a JWT library with the guard.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// The asymmetric algorithms HTI allows (PS* as well, since the guard accepts them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

    pub fn is_rsa(self) -> bool {
        !matches!(self, Alg::ES256 | Alg::ES384 | Alg::ES512)
    }

    fn rsa_encoding(self) -> &'static dyn signature::RsaEncoding {
        match self {
            Alg::RS256 => &signature::RSA_PKCS1_SHA256,
            Alg::RS384 => &signature::RSA_PKCS1_SHA384,
            Alg::RS512 => &signature::RSA_PKCS1_SHA512,
            Alg::PS256 => &signature::RSA_PSS_SHA256,
            Alg::PS384 => &signature::RSA_PSS_SHA384,
            Alg::PS512 => &signature::RSA_PSS_SHA512,
            other => panic!("{} is not an RSA algorithm", other.name()),
        }
    }

    fn ec_signing(self) -> (&'static signature::EcdsaSigningAlgorithm, &'static str) {
        match self {
            Alg::ES256 => (&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256"),
            Alg::ES384 => (&signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384"),
            Alg::ES512 => (&signature::ECDSA_P521_SHA512_FIXED_SIGNING, "P-521"),
            other => panic!("{} is not an EC algorithm", other.name()),
        }
    }
}

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair, &'static str),
}

/// A private key for one algorithm, with the kid it is published under.
pub struct SigningKey {
    pub alg: Alg,
    pub kid: String,
    pair: Pair,
}

impl SigningKey {
    /// A fresh key (RSA-2048 or the algorithm's curve) with a random kid.
    pub fn generate(alg: Alg) -> SigningKey {
        SigningKey::with_kid(
            alg,
            &format!("{}-{}", alg.name().to_lowercase(), random_hex(6)),
        )
    }

    pub fn with_kid(alg: Alg, kid: &str) -> SigningKey {
        let pair = if alg.is_rsa() {
            Pair::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).expect("generate RSA-2048"))
        } else {
            let (signing, crv) = alg.ec_signing();
            Pair::Ec(
                EcdsaKeyPair::generate(signing).expect("generate EC key"),
                crv,
            )
        };
        SigningKey {
            alg,
            kid: kid.to_string(),
            pair,
        }
    }

    /// The public JWK as a portal publishes it: kid, kty, alg, use and the key material.
    pub fn jwk(&self) -> Value {
        let mut jwk = self.jwk_bare();
        jwk["alg"] = json!(self.alg.name());
        jwk["use"] = json!("sig");
        jwk
    }

    /// The public JWK with only kid, kty and the key material (no `alg`, no `use`).
    pub fn jwk_bare(&self) -> Value {
        match &self.pair {
            Pair::Rsa(pair) => {
                let public = pair.public_key();
                json!({
                    "kid": self.kid,
                    "kty": "RSA",
                    "n": b64(public.modulus().big_endian_without_leading_zero()),
                    "e": b64(public.exponent().big_endian_without_leading_zero()),
                })
            }
            Pair::Ec(pair, crv) => {
                let point = pair.public_key().as_ref();
                assert_eq!(point[0], 4, "uncompressed point");
                let coordinate_len = (point.len() - 1) / 2;
                json!({
                    "kid": self.kid,
                    "kty": "EC",
                    "crv": crv,
                    "x": b64(&point[1..1 + coordinate_len]),
                    "y": b64(&point[1 + coordinate_len..]),
                })
            }
        }
    }

    /// Signs `message` with this key's algorithm (with `alg` overriding the padding/hash
    /// for RSA keys, so the same key can be misused under another RSA algorithm).
    pub fn sign_as(&self, alg: Alg, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.pair {
            Pair::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(alg.rsa_encoding(), &rng, message, &mut signature)
                    .expect("RSA sign");
                signature
            }
            Pair::Ec(pair, _) => pair.sign(&rng, message).expect("EC sign").as_ref().to_vec(),
        }
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.sign_as(self.alg, message)
    }

    /// The usual header: alg, kid and typ JWT.
    pub fn header(&self) -> Value {
        json!({"alg": self.alg.name(), "kid": self.kid, "typ": "JWT"})
    }

    /// A compact JWS of `claims` with the usual header.
    pub fn token(&self, claims: &Value) -> String {
        self.token_with_header(&self.header(), claims)
    }

    /// A compact JWS with an arbitrary header, signed with this key whatever the header says.
    pub fn token_with_header(&self, header: &Value, claims: &Value) -> String {
        compact(header, claims, |input| self.sign(input))
    }
}

/// One key per algorithm, generated once per test binary (RSA generation is the slow part).
pub fn shared_key(alg: Alg) -> &'static SigningKey {
    static KEYS: OnceLock<Vec<SigningKey>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        Alg::ALL
            .iter()
            .map(|alg| SigningKey::generate(*alg))
            .collect()
    });
    keys.iter()
        .find(|key| key.alg == alg)
        .expect("every algorithm has a key")
}

/// `base64url(header).base64url(claims).base64url(sign(signing input))`.
pub fn compact(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64_json(header), b64_json(claims));
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

/// A token with a fixed (possibly empty) signature, e.g. for `alg: none`.
pub fn unsigned_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    compact(header, claims, |_| signature.to_vec())
}

/// An HS256 token with `secret` as the HMAC key (the classic key-confusion attempt when the
/// secret is a public key's bytes).
pub fn hs_token(alg: &str, header_kid: &str, claims: &Value, secret: &[u8]) -> String {
    let algorithm = match alg {
        "HS256" => hmac::HMAC_SHA256,
        "HS384" => hmac::HMAC_SHA384,
        "HS512" => hmac::HMAC_SHA512,
        other => panic!("not an HS algorithm: {other}"),
    };
    let key = hmac::Key::new(algorithm, secret);
    compact(
        &json!({"alg": alg, "kid": header_kid, "typ": "JWT"}),
        claims,
        |input| hmac::sign(&key, input).as_ref().to_vec(),
    )
}

/// An RSA-1024 public JWK made of random bytes: the guard must refuse it when loading the set.
pub fn weak_rsa_jwk(kid: &str) -> Value {
    let mut modulus = random_bytes(128);
    modulus[0] |= 0x80;
    modulus[127] |= 1;
    json!({"kid": kid, "kty": "RSA", "alg": "RS256", "use": "sig", "n": b64(&modulus), "e": "AQAB"})
}

/// A JWKS document for these keys.
pub fn jwks(keys: &[&SigningKey]) -> Value {
    json!({"keys": keys.iter().map(|key| key.jwk()).collect::<Vec<_>>()})
}

/// A valid HTI claims set for `iss` and `aud`: sub `Practitioner/123`, resource `Task/abc`,
/// a fresh 32-character jti, iat now, exp now + 300.
pub fn hti_claims(iss: &str, aud: &str) -> Value {
    let now = now();
    json!({
        "iss": iss,
        "aud": aud,
        "sub": "Practitioner/123",
        "resource": "Task/abc",
        "jti": random_jti(),
        "iat": now,
        "exp": now + 300,
    })
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

pub fn random_jti() -> String {
    random_hex(16)
}

pub fn random_hex(bytes: usize) -> String {
    random_bytes(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    SystemRandom::new().fill(&mut bytes).expect("random bytes");
    bytes
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64_json(value: &Value) -> String {
    b64(&serde_json::to_vec(value).expect("serialize JSON"))
}

/// Decodes the payload segment of a compact token.
pub fn payload_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("payload segment");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url payload"))
        .expect("JSON payload")
}
