//! Private signing keys, for the module's client assertions and the tools around the guard
//! (`keygen`, `mint`, `jwks`, the demo portal): key generation and PKCS#8 PEM files with
//! aws-lc-rs, the public JWK of a key and its RFC 7638 thumbprint, and compact JWS signing
//! for every algorithm the guard verifies. What an HTI launch token says is `tools`'s.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::jose::jwk::{Alg, Curve, thumbprint};

/// Why a key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("not a PKCS#8 private key in PEM (\"-----BEGIN PRIVATE KEY-----\"): {0}")]
    Pem(String),
    #[error("the key is not an RSA key or an EC key on P-256, P-384 or P-521")]
    UnknownKey,
    #[error("a {key} key cannot sign {alg}")]
    Mismatch { key: String, alg: Alg },
    #[error("RSA keys of {0} bits are not supported; use 2048, 3072 or 4096")]
    RsaSize(usize),
    #[error("the crypto library failed: {0}")]
    Crypto(String),
}

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair, Curve),
}

/// A private signing key.
pub struct SigningKey {
    pair: Pair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.describe())
    }
}

fn ec_signing(curve: Curve) -> &'static signature::EcdsaSigningAlgorithm {
    match curve {
        Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED_SIGNING,
    }
}

fn rsa_encoding(alg: Alg) -> Option<&'static dyn signature::RsaEncoding> {
    Some(match alg {
        Alg::RS256 => &signature::RSA_PKCS1_SHA256,
        Alg::RS384 => &signature::RSA_PKCS1_SHA384,
        Alg::RS512 => &signature::RSA_PKCS1_SHA512,
        Alg::PS256 => &signature::RSA_PSS_SHA256,
        Alg::PS384 => &signature::RSA_PSS_SHA384,
        Alg::PS512 => &signature::RSA_PSS_SHA512,
        Alg::ES256 | Alg::ES384 | Alg::ES512 => return None,
    })
}

fn crypto(e: impl std::fmt::Display) -> SignError {
    SignError::Crypto(e.to_string())
}

impl SigningKey {
    /// A new key for `alg`: RSA of `rsa_bits` for RS*/PS*, the algorithm's curve for ES*.
    pub fn generate(alg: Alg, rsa_bits: usize) -> Result<SigningKey, SignError> {
        let pair = match alg.curve() {
            Some(curve) => Pair::Ec(
                EcdsaKeyPair::generate(ec_signing(curve)).map_err(crypto)?,
                curve,
            ),
            None => {
                let size = match rsa_bits {
                    2048 => KeySize::Rsa2048,
                    3072 => KeySize::Rsa3072,
                    4096 => KeySize::Rsa4096,
                    other => return Err(SignError::RsaSize(other)),
                };
                Pair::Rsa(RsaKeyPair::generate(size).map_err(crypto)?)
            }
        };
        Ok(SigningKey { pair })
    }

    /// Read a PKCS#8 PEM private key (RSA, or EC on P-256/P-384/P-521).
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, SignError> {
        use rustls::pki_types::PrivatePkcs8KeyDer;
        use rustls::pki_types::pem::PemObject;
        let der =
            PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|e| SignError::Pem(e.to_string()))?;
        let der = der.secret_pkcs8_der();
        if let Ok(pair) = RsaKeyPair::from_pkcs8(der) {
            return Ok(SigningKey {
                pair: Pair::Rsa(pair),
            });
        }
        for curve in [Curve::P256, Curve::P384, Curve::P521] {
            if let Ok(pair) = EcdsaKeyPair::from_pkcs8(ec_signing(curve), der) {
                return Ok(SigningKey {
                    pair: Pair::Ec(pair, curve),
                });
            }
        }
        Err(SignError::UnknownKey)
    }

    /// The private key as PKCS#8 PEM.
    pub fn to_pem(&self) -> Result<String, SignError> {
        let der: Vec<u8> = match &self.pair {
            Pair::Rsa(pair) => pair.as_der().map_err(crypto)?.as_ref().to_vec(),
            Pair::Ec(pair, _) => pair.to_pkcs8v1().map_err(crypto)?.as_ref().to_vec(),
        };
        let body = STANDARD.encode(der);
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).map_err(crypto)?);
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Ok(pem)
    }

    /// "RSA 2048" or "EC P-256".
    pub fn describe(&self) -> String {
        match &self.pair {
            Pair::Rsa(pair) => format!("RSA {}", pair.public_modulus_len() * 8),
            Pair::Ec(_, curve) => format!("EC {}", curve.name()),
        }
    }

    /// Whether this key can sign `alg`.
    pub fn fits(&self, alg: Alg) -> bool {
        match &self.pair {
            Pair::Rsa(_) => alg.curve().is_none(),
            Pair::Ec(_, curve) => alg.curve() == Some(*curve),
        }
    }

    /// The algorithm to publish with an EC key (its curve decides); `None` for RSA keys,
    /// which fit every RS*/PS* algorithm.
    pub fn natural_alg(&self) -> Option<Alg> {
        match &self.pair {
            Pair::Rsa(_) => None,
            Pair::Ec(_, Curve::P256) => Some(Alg::ES256),
            Pair::Ec(_, Curve::P384) => Some(Alg::ES384),
            Pair::Ec(_, Curve::P521) => Some(Alg::ES512),
        }
    }

    /// The public JWK: `kid`, `kty`, `use: sig`, `alg` when given, and the key material.
    pub fn public_jwk(&self, kid: &str, alg: Option<Alg>) -> Value {
        let mut jwk = match &self.pair {
            Pair::Rsa(pair) => {
                let public = pair.public_key();
                json!({
                    "kty": "RSA",
                    "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
                    "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
                })
            }
            Pair::Ec(pair, curve) => {
                let point = pair.public_key().as_ref();
                let len = (point.len() - 1) / 2;
                json!({
                    "kty": "EC",
                    "crv": curve.name(),
                    "x": URL_SAFE_NO_PAD.encode(&point[1..1 + len]),
                    "y": URL_SAFE_NO_PAD.encode(&point[1 + len..]),
                })
            }
        };
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        if let Some(alg) = alg {
            jwk["alg"] = json!(alg.name());
        }
        jwk
    }

    /// The RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order,
    /// base64url.
    pub fn thumbprint(&self) -> String {
        let jwk = self.public_jwk("", None);
        let canonical = match &self.pair {
            Pair::Rsa(_) => format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                jwk["e"].as_str().unwrap_or_default(),
                jwk["n"].as_str().unwrap_or_default()
            ),
            Pair::Ec(..) => format!(
                r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
                jwk["crv"].as_str().unwrap_or_default(),
                jwk["x"].as_str().unwrap_or_default(),
                jwk["y"].as_str().unwrap_or_default()
            ),
        };
        thumbprint(&canonical)
    }

    /// A JWKS document holding this key's public JWK.
    pub fn jwks(&self, kid: &str, alg: Option<Alg>) -> Value {
        json!({ "keys": [self.public_jwk(kid, alg)] })
    }

    /// Sign `claims` as a compact JWS with header `{alg, kid, typ: JWT}`.
    pub fn sign_jws(&self, alg: Alg, kid: &str, claims: &Value) -> Result<String, SignError> {
        let header = json!({ "alg": alg.name(), "kid": kid, "typ": "JWT" });
        self.sign_with_header(alg, &header, claims)
    }

    /// Sign `claims` under an arbitrary header (whose `alg` should be `alg`).
    pub fn sign_with_header(
        &self,
        alg: Alg,
        header: &Value,
        claims: &Value,
    ) -> Result<String, SignError> {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let signature = match (&self.pair, rsa_encoding(alg)) {
            (Pair::Rsa(pair), Some(encoding)) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(encoding, &rng, input.as_bytes(), &mut signature)
                    .map_err(crypto)?;
                signature
            }
            (Pair::Ec(pair, curve), None) if alg.curve() == Some(*curve) => pair
                .sign(&rng, input.as_bytes())
                .map_err(crypto)?
                .as_ref()
                .to_vec(),
            _ => {
                return Err(SignError::Mismatch {
                    key: self.describe(),
                    alg,
                });
            }
        };
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// 128 random bits as 32 hex characters.
pub fn random_jti() -> Result<String, SignError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).map_err(crypto)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jose::jwk::parse_jwks;

    fn roundtrip(alg: Alg) {
        let key = SigningKey::generate(alg, 2048).unwrap();
        let pem = key.to_pem().unwrap();
        let key = SigningKey::from_pem(pem.as_bytes()).unwrap();
        assert!(key.fits(alg));
        let claims = json!({"iss": "x"});
        let token = key.sign_jws(alg, "k1", &claims).unwrap();
        let parsed = parse_jwks(key.jwks("k1", Some(alg)).to_string().as_bytes()).unwrap();
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        let decoded = crate::jose::jws::decode(&token).unwrap();
        assert!(parsed.keys[0].verify(alg, decoded.signing_input.as_bytes(), decoded.signature));
    }

    #[test]
    fn every_algorithm_signs_what_the_guard_verifies() {
        for alg in Alg::ALL {
            roundtrip(alg);
        }
    }

    #[test]
    fn keys_refuse_algorithms_they_do_not_fit() {
        let ec = SigningKey::generate(Alg::ES256, 0).unwrap();
        assert!(ec.sign_jws(Alg::ES384, "k", &json!({})).is_err());
        assert!(ec.sign_jws(Alg::RS256, "k", &json!({})).is_err());
        assert!(SigningKey::generate(Alg::RS256, 1024).is_err());
        assert!(SigningKey::from_pem(b"not a key").is_err());
    }

    #[test]
    fn thumbprint_follows_rfc_7638() {
        // RFC 7638 section 3.1's example key and thumbprint.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let canonical = format!(r#"{{"e":"AQAB","kty":"RSA","n":"{n}"}}"#);
        let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        assert_eq!(
            URL_SAFE_NO_PAD.encode(hash.as_ref()),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        let key = SigningKey::generate(Alg::ES256, 0).unwrap();
        assert_eq!(key.thumbprint().len(), 43);
        assert_eq!(key.thumbprint(), key.thumbprint());
    }
}
