//! The module's place in the Koppeltaal domain: its own identity and keys (`[module]`) and
//! token introspection by the domain's auth server (`[introspection]`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::launch::{IssuerConfig, LaunchConfig};
use super::parse::{header_safe, normal_path, parse_duration, parse_http_url, positive};
use super::{ConfigError, invalid};
use crate::jose::Alg;
use crate::jose::jwe::DecryptionKey;
use crate::jose::sign::SigningKey;

/// A key file, as a path or as `{ file = "...", kid = "..." }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawKeyFile {
    Path(PathBuf),
    Entry(RawKeyFileEntry),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyFileEntry {
    file: PathBuf,
    kid: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawModule {
    client_id: Option<String>,
    signing_key_files: Vec<RawKeyFile>,
    generate: bool,
    decryption_key_files: Vec<RawKeyFile>,
    jwks_path: Option<String>,
    jwks_max_age: String,
}

impl Default for RawModule {
    fn default() -> Self {
        Self {
            client_id: None,
            signing_key_files: Vec::new(),
            generate: false,
            decryption_key_files: Vec::new(),
            jwks_path: None,
            jwks_max_age: "5m".into(),
        }
    }
}

/// One of the module's own keys, read and parsed once, at startup, and kept parsed.
#[derive(Debug)]
pub struct ModuleKeyFile<K> {
    pub file: PathBuf,
    /// The configured kid, or the key's RFC 7638 thumbprint.
    pub kid: String,
    pub key: Arc<K>,
}

impl<K> Clone for ModuleKeyFile<K> {
    fn clone(&self) -> Self {
        ModuleKeyFile {
            file: self.file.clone(),
            kid: self.kid.clone(),
            key: self.key.clone(),
        }
    }
}

/// The module's own identity and keys (`[module]`).
#[derive(Debug, Clone)]
pub struct ModuleConfig {
    pub client_id: Option<String>,
    /// Signing keys; the first signs client assertions, the others stay published.
    pub signing_keys: Vec<ModuleKeyFile<SigningKey>>,
    /// Make a signing key at start (lives as long as the process).
    pub generate: bool,
    pub decryption_keys: Vec<ModuleKeyFile<DecryptionKey>>,
    /// Where the public listener serves the module's JWKS; not served when `None`.
    pub jwks_path: Option<String>,
    pub jwks_max_age: Duration,
}

/// What config reads of a module key file: the key, its thumbprint (the default kid) and
/// its public material.
trait ModuleKey: Sized {
    fn read(pem: &[u8]) -> Result<Self, String>;
    fn thumbprint(&self) -> String;
    /// The public half (kty and n, e or crv, x, y): two files hold the same key when these
    /// are equal, whatever their names or PEM layout.
    fn public_material(&self) -> serde_json::Value;
}

impl ModuleKey for SigningKey {
    fn read(pem: &[u8]) -> Result<Self, String> {
        SigningKey::from_pem(pem).map_err(|e| e.to_string())
    }
    fn thumbprint(&self) -> String {
        SigningKey::thumbprint(self)
    }
    fn public_material(&self) -> serde_json::Value {
        let mut jwk = self.public_jwk("", None);
        if let Some(map) = jwk.as_object_mut() {
            map.remove("kid");
            map.remove("use");
        }
        jwk
    }
}

impl ModuleKey for DecryptionKey {
    /// A file that is no key, or not an RSA one, is told in the words the signing key
    /// reader uses for it.
    fn read(pem: &[u8]) -> Result<Self, String> {
        DecryptionKey::from_pem(pem).map_err(|e| match SigningKey::from_pem(pem) {
            Err(not_a_key) => not_a_key.to_string(),
            Ok(key) if !key.fits(Alg::RS256) => {
                "JWE decryption keys must be RSA keys (RSA-OAEP)".into()
            }
            Ok(_) => e.to_string(),
        })
    }
    fn thumbprint(&self) -> String {
        DecryptionKey::thumbprint(self)
    }
    fn public_material(&self) -> serde_json::Value {
        let mut jwk = self.public_jwk("");
        if let Some(map) = jwk.as_object_mut() {
            map.remove("kid");
            map.remove("use");
            map.remove("alg");
        }
        jwk
    }
}

/// Read and parse the key files of `key`, with each key's kid (configured, or its
/// thumbprint).
fn load_key_files<K: ModuleKey>(
    key: &str,
    files: Vec<RawKeyFile>,
) -> Result<Vec<ModuleKeyFile<K>>, ConfigError> {
    let mut out: Vec<ModuleKeyFile<K>> = Vec::with_capacity(files.len());
    for (i, entry) in files.into_iter().enumerate() {
        let (file, kid) = match entry {
            RawKeyFile::Path(file) => (file, None),
            RawKeyFile::Entry(e) => (e.file, e.kid),
        };
        let at = format!("{key}[{i}]");
        let pem =
            std::fs::read(&file).map_err(|e| invalid(&at, format!("{}: {e}", file.display())))?;
        let parsed = K::read(&pem).map_err(|e| invalid(&at, format!("{}: {e}", file.display())))?;
        let kid = match kid {
            Some(kid) if kid.is_empty() => return Err(invalid(&at, "kid must not be empty")),
            Some(kid) => kid,
            None => parsed.thumbprint(),
        };
        if out.iter().any(|k| k.kid == kid) {
            return Err(invalid(&at, format!("kid {kid:?} is used twice")));
        }
        out.push(ModuleKeyFile {
            file,
            kid,
            key: Arc::new(parsed),
        });
    }
    Ok(out)
}

/// A key either signs (client assertions) or decrypts (HTI:jwe), never both: one key for two
/// purposes lets an answer of one protocol be read as the other (RFC 7517 4.2, `use`).
fn refuse_shared_keys(
    signing: &[ModuleKeyFile<SigningKey>],
    decryption: &[ModuleKeyFile<DecryptionKey>],
) -> Result<(), ConfigError> {
    let signing: Vec<serde_json::Value> = signing.iter().map(|s| s.key.public_material()).collect();
    for (i, file) in decryption.iter().enumerate() {
        let material = file.key.public_material();
        if let Some(j) = signing.iter().position(|s| *s == material) {
            return Err(invalid(
                format!("module.decryption_key_files[{i}]"),
                format!(
                    "{} is the same key as module.signing_key_files[{j}]; a key may sign or \
                     decrypt, not both: give each purpose its own key",
                    file.file.display()
                ),
            ));
        }
    }
    Ok(())
}

impl RawModule {
    pub(super) fn validate(self, launch: &LaunchConfig) -> Result<ModuleConfig, ConfigError> {
        if let Some(id) = &self.client_id {
            if id.is_empty() {
                return Err(invalid("module.client_id", "must not be empty"));
            }
            header_safe("module.client_id", id)?;
        }
        let signing_keys = load_key_files("module.signing_key_files", self.signing_key_files)?;
        if self.generate && !signing_keys.is_empty() {
            return Err(invalid(
                "module.generate",
                "cannot be combined with module.signing_key_files",
            ));
        }
        let decryption_keys =
            load_key_files("module.decryption_key_files", self.decryption_key_files)?;
        refuse_shared_keys(&signing_keys, &decryption_keys)?;
        if let Some(path) = &self.jwks_path {
            if !path.starts_with('/') || path.contains('?') || path.contains('#') {
                return Err(invalid(
                    "module.jwks_path",
                    format!("{path:?} must be a path starting with '/' without query"),
                ));
            }
            normal_path("module.jwks_path", path)?;
            if launch.paths.contains(path) {
                return Err(invalid(
                    "module.jwks_path",
                    "must differ from every launch path",
                ));
            }
        }
        Ok(ModuleConfig {
            client_id: self.client_id,
            signing_keys,
            generate: self.generate,
            decryption_keys,
            jwks_path: self.jwks_path,
            jwks_max_age: parse_duration("module.jwks_max_age", &self.jwks_max_age)?,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawIntrospection {
    endpoint: Option<String>,
    token_endpoint: Option<String>,
    fhir_base: Option<String>,
    assertion_audience: String,
    assertion_alg: String,
    all_issuers: bool,
    timeout: String,
}

impl Default for RawIntrospection {
    fn default() -> Self {
        Self {
            endpoint: None,
            token_endpoint: None,
            fhir_base: None,
            assertion_audience: "token_endpoint".into(),
            assertion_alg: "RS512".into(),
            all_issuers: false,
            timeout: "5s".into(),
        }
    }
}

/// Where the introspection endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntrospectionEndpoints {
    Configured {
        introspection: String,
        token: Option<String>,
    },
    Discovered {
        fhir_base: String,
    },
}

/// Which URL a client assertion names as its audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssertionAudience {
    TokenEndpoint,
    IntrospectionEndpoint,
}

/// Token introspection (`[introspection]`, Koppeltaal TOP-KT-021).
#[derive(Debug, Clone)]
pub struct IntrospectionConfig {
    pub endpoints: IntrospectionEndpoints,
    pub assertion_audience: AssertionAudience,
    pub assertion_alg: Alg,
    pub all_issuers: bool,
    pub timeout: Duration,
    pub client_id: String,
}

impl RawIntrospection {
    pub(super) fn validate(
        self,
        issuers: &[IssuerConfig],
        module: &ModuleConfig,
    ) -> Result<Option<IntrospectionConfig>, ConfigError> {
        let used = self.all_issuers || issuers.iter().any(IssuerConfig::introspected);
        let configured = self.endpoint.is_some() || self.fhir_base.is_some();
        if !used {
            if configured {
                return Err(invalid(
                    "introspection",
                    "is configured but no issuer has introspect = true (and all_issuers is false)",
                ));
            }
            return Ok(None);
        }
        let assertion_audience = match self.assertion_audience.as_str() {
            "token_endpoint" => AssertionAudience::TokenEndpoint,
            "introspection_endpoint" => AssertionAudience::IntrospectionEndpoint,
            other => {
                return Err(invalid(
                    "introspection.assertion_audience",
                    format!("{other:?}: use \"token_endpoint\" or \"introspection_endpoint\""),
                ));
            }
        };
        let endpoints = match (self.endpoint, self.fhir_base) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "introspection.fhir_base",
                    "set either introspection.endpoint or introspection.fhir_base (discovery), not both",
                ));
            }
            (Some(endpoint), None) => {
                let introspection = parse_http_url("introspection.endpoint", &endpoint)?;
                let token = self
                    .token_endpoint
                    .map(|t| parse_http_url("introspection.token_endpoint", &t))
                    .transpose()?;
                if token.is_none() && assertion_audience == AssertionAudience::TokenEndpoint {
                    return Err(invalid(
                        "introspection.token_endpoint",
                        "is required when the client assertion's audience is the token endpoint (introspection.assertion_audience)",
                    ));
                }
                IntrospectionEndpoints::Configured {
                    introspection,
                    token,
                }
            }
            (None, Some(fhir_base)) => {
                if self.token_endpoint.is_some() {
                    return Err(invalid(
                        "introspection.token_endpoint",
                        "is discovered from introspection.fhir_base; set it only with introspection.endpoint",
                    ));
                }
                IntrospectionEndpoints::Discovered {
                    fhir_base: parse_http_url("introspection.fhir_base", &fhir_base)?,
                }
            }
            (None, None) => {
                return Err(invalid(
                    "introspection.endpoint",
                    "is required (or introspection.fhir_base, to discover it) when an issuer has introspect = true",
                ));
            }
        };
        let client_id = module.client_id.clone().ok_or_else(|| {
            invalid(
                "module.client_id",
                "is required for introspection (the module's client_id in the domain)",
            )
        })?;
        let assertion_alg = Alg::from_name(&self.assertion_alg).ok_or_else(|| {
            invalid(
                "introspection.assertion_alg",
                format!(
                    "{:?} is not a supported signature algorithm",
                    self.assertion_alg
                ),
            )
        })?;
        match module.signing_keys.first() {
            Some(first) => {
                let key = &first.key;
                if !key.fits(assertion_alg) {
                    return Err(invalid(
                        "introspection.assertion_alg",
                        format!(
                            "{assertion_alg} does not fit the first signing key ({})",
                            key.describe()
                        ),
                    ));
                }
            }
            None if module.generate => {}
            None => {
                return Err(invalid(
                    "module.signing_key_files",
                    "a signing key is required for introspection client assertions (or module.generate = true)",
                ));
            }
        }
        Ok(Some(IntrospectionConfig {
            endpoints,
            assertion_audience,
            assertion_alg,
            all_issuers: self.all_issuers,
            timeout: positive("introspection.timeout", &self.timeout)?,
            client_id,
        }))
    }
}
