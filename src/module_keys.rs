//! The module's own keys (`[module]`): signing keys for client assertions (RFC 7523) and JWE
//! decryption keys (HTI:jwe), as config parsed them at load (or generated at start), and
//! their public JWKS, which the public listener serves at `module.jwks_path` for the
//! domain's auth server. No PEM is read here.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::HeaderValue;
use serde_json::{Value, json};

use crate::config::ModuleConfig;
use crate::error::StartupError;
use crate::jose::Alg;
use crate::jose::jwe::DecryptionKeys;
use crate::jose::sign::{SigningKey, random_jti};

/// How long a client assertion is valid (Koppeltaal allows at most 5 minutes).
const ASSERTION_LIFETIME: Duration = Duration::from_secs(60);
/// How far a client assertion's `iat` lies before now.
const ASSERTION_BACKDATE: Duration = Duration::from_secs(5);

struct Signer {
    key: Arc<SigningKey>,
    kid: String,
}

/// The module's keys, ready to sign, decrypt and be published.
pub struct ModuleKeys {
    signers: Vec<Signer>,
    pub decryption: DecryptionKeys,
    jwks: Bytes,
    jwks_path: Option<String>,
    cache_control: HeaderValue,
}

fn config_error(key: &'static str, message: impl Into<String>) -> StartupError {
    StartupError::Config {
        key,
        message: message.into(),
    }
}

impl ModuleKeys {
    /// Take the configured keys, parsed at config load (or make a signing key, with a
    /// warning). `assertion_alg` is the algorithm the first signing key signs assertions
    /// with; it is published as the key's `alg`.
    pub fn load(cfg: &ModuleConfig, assertion_alg: Alg) -> Result<ModuleKeys, StartupError> {
        let mut signers = Vec::new();
        for file in &cfg.signing_keys {
            signers.push(Signer {
                key: file.key.clone(),
                kid: file.kid.clone(),
            });
        }
        if cfg.generate {
            let key = SigningKey::generate(assertion_alg, 2048)
                .map_err(|e| config_error("module.generate", e.to_string()))?;
            let kid = key.thumbprint();
            tracing::warn!(
                kid = %kid,
                "module.generate: the module's signing key was made at start and lives only as long as this process; \
                 every restart publishes a new key, and replicas each have their own"
            );
            signers.push(Signer {
                key: Arc::new(key),
                kid,
            });
        }
        let decryption = DecryptionKeys::new(
            cfg.decryption_keys
                .iter()
                .map(|k| (k.kid.clone(), k.key.clone())),
        )
        .map_err(|e| config_error("module.decryption_key_files", e))?;

        let mut keys: Vec<Value> = Vec::new();
        for (i, signer) in signers.iter().enumerate() {
            let alg = if i == 0 && signer.key.fits(assertion_alg) {
                Some(assertion_alg)
            } else {
                signer.key.natural_alg().or(Some(Alg::RS512))
            };
            keys.push(signer.key.public_jwk(&signer.kid, alg));
        }
        keys.extend(decryption.public_jwks());
        let jwks = Bytes::from(json!({ "keys": keys }).to_string());
        let cache_control =
            HeaderValue::from_str(&format!("public, max-age={}", cfg.jwks_max_age.as_secs()))
                .map_err(|e| config_error("module.jwks_max_age", e.to_string()))?;
        Ok(ModuleKeys {
            signers,
            decryption,
            jwks,
            jwks_path: cfg.jwks_path.clone(),
            cache_control,
        })
    }

    /// The path the public listener serves the JWKS at, if any.
    pub fn jwks_path(&self) -> Option<&str> {
        self.jwks_path.as_deref()
    }

    /// The public JWKS document (signing keys `use: sig`, encryption keys `use: enc`).
    pub fn jwks(&self) -> &Bytes {
        &self.jwks
    }

    /// The `Cache-Control` of the JWKS document.
    pub fn jwks_cache_control(&self) -> &HeaderValue {
        &self.cache_control
    }

    /// A client assertion (RFC 7523): `iss` = `sub` = `client_id`, `aud` = `audience`,
    /// `iat` five seconds ago, `exp` one minute from now, a fresh `jti`, signed by the first
    /// signing key.
    pub fn client_assertion(
        &self,
        client_id: &str,
        audience: &str,
        alg: Alg,
    ) -> Result<String, String> {
        let signer = self
            .signers
            .first()
            .ok_or("the module has no signing key")?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // iat a few seconds back, so that a guard clock slightly ahead of a zero-leeway
        // auth server does not make the assertion "issued in the future" there.
        let claims = json!({
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "iat": now.saturating_sub(ASSERTION_BACKDATE.as_secs()),
            "exp": now + ASSERTION_LIFETIME.as_secs(),
            "jti": random_jti().map_err(|e| e.to_string())?,
        });
        signer
            .key
            .sign_jws(alg, &signer.kid, &claims)
            .map_err(|e| e.to_string())
    }
}
