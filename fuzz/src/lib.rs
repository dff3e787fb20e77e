//! What the fuzz targets share: the fixed test keys (fuzz/keys/, test-only, never used
//! outside fuzzing) and the key set that publishes them.

use std::sync::LazyLock;

use hti_guard::jose::Alg;
use hti_guard::jose::jwk::{ParsedJwks, parse_jwks};
use hti_guard::jose::sign::SigningKey;
use serde_json::{Value, json};

pub const ES256_PEM: &[u8] = include_bytes!("../keys/es256.pem");
pub const ES384_PEM: &[u8] = include_bytes!("../keys/es384.pem");
pub const RSA_PEM: &[u8] = include_bytes!("../keys/rsa2048.pem");
/// The RSA key of RFC 7516 A.1, so that the RFC's JWE decrypts in the seed corpus.
pub const RFC7516_PEM: &[u8] = include_bytes!("../keys/rfc7516_a1.pem");

/// The configured issuer of the verifier targets.
pub const ISS: &str = "https://portal.example";
/// The module's audience (`launch.audience`).
pub const AUD: &str = "Device/fuzz";

/// (kid, alg, key): the portal's signing keys.
pub static SIGNERS: LazyLock<Vec<(&'static str, Alg, SigningKey)>> = LazyLock::new(|| {
    vec![
        (
            "es256",
            Alg::ES256,
            SigningKey::from_pem(ES256_PEM).unwrap(),
        ),
        (
            "es384",
            Alg::ES384,
            SigningKey::from_pem(ES384_PEM).unwrap(),
        ),
        ("rs256", Alg::RS256, SigningKey::from_pem(RSA_PEM).unwrap()),
    ]
});

/// The portal's JWKS document: every key of [`SIGNERS`].
pub fn jwks_document() -> Value {
    let keys: Vec<Value> = SIGNERS
        .iter()
        .map(|(kid, alg, key)| key.public_jwk(kid, Some(*alg)))
        .collect();
    json!({ "keys": keys })
}

/// [`jwks_document`] as the guard parses it.
pub fn parsed_jwks() -> ParsedJwks {
    parse_jwks(jwks_document().to_string().as_bytes()).unwrap()
}
