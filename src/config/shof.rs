//! The SMART HTI on FHIR login (`[shof]`): the domain's FHIR base (whose smart-configuration
//! names the auth server), the guard's own callback, and the limits of one login. It leans
//! on `[session]` (the login ends in a session) and `[module]` (the client assertion).

use std::time::Duration;

use http::Uri;
use serde::Deserialize;

use super::koppeltaal::ModuleConfig;
use super::launch::LaunchConfig;
use super::parse::{normal_path, parse_http_url, positive};
use super::session::SessionConfig;
use super::{ConfigError, invalid};
use crate::jose::Alg;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawShof {
    enabled: bool,
    fhir_base: Option<String>,
    redirect_uri: Option<String>,
    scope: String,
    timeout: String,
    login_ttl: String,
    nonce: bool,
}

impl Default for RawShof {
    fn default() -> Self {
        Self {
            enabled: false,
            fhir_base: None,
            redirect_uri: None,
            scope: "launch openid fhirUser".into(),
            timeout: "5s".into(),
            login_ttl: "10m".into(),
            nonce: false,
        }
    }
}

/// The SHOF login (`[shof]`), present when `shof.enabled`.
#[derive(Debug, Clone)]
pub struct ShofConfig {
    /// The FHIR base URL, exactly as configured: the only accepted `iss` launch parameter
    /// and the `aud` sent to the auth server, byte for byte.
    pub fhir_base: String,
    /// The guard's callback, as registered at the auth server.
    pub redirect_uri: String,
    /// The path of `redirect_uri`, which the guard serves itself.
    pub callback_path: String,
    pub scope: String,
    /// One discovery, token or JWKS request.
    pub timeout: Duration,
    /// How long a started login may take.
    pub login_ttl: Duration,
    pub nonce: bool,
    /// The module's client_id at the auth server (`module.client_id`).
    pub client_id: String,
    /// The algorithm of the client assertion (the first signing key's).
    pub assertion_alg: Alg,
}

/// The callback URL: absolute http(s), no query, no fragment, its path in normal form.
fn redirect_uri(value: &str) -> Result<String, ConfigError> {
    let key = "shof.redirect_uri";
    if value.contains('?') || value.contains('#') {
        return Err(invalid(
            key,
            format!("{value:?} must carry neither a query nor a fragment"),
        ));
    }
    parse_http_url(key, value)?;
    let uri: Uri = value
        .parse()
        .map_err(|e| invalid(key, format!("invalid URL {value:?}: {e}")))?;
    let path = uri.path();
    if path.is_empty() || path == "/" {
        return Err(invalid(
            key,
            format!("{value:?} needs a path of its own (the guard serves it)"),
        ));
    }
    normal_path(key, path)?;
    Ok(path.to_owned())
}

impl RawShof {
    pub(super) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Validated against the sections it depends on; `introspection_alg` is the client
    /// assertion algorithm `[introspection]` chose, when it is configured.
    pub(super) fn validate(
        self,
        launch: &LaunchConfig,
        module: &ModuleConfig,
        session: Option<&SessionConfig>,
        introspection_alg: Option<Alg>,
    ) -> Result<Option<ShofConfig>, ConfigError> {
        let timeout = positive("shof.timeout", &self.timeout)?;
        let login_ttl = positive("shof.login_ttl", &self.login_ttl)?;
        if !self.enabled {
            return Ok(None);
        }
        let fhir_base = self
            .fhir_base
            .ok_or_else(|| invalid("shof.fhir_base", "is required when shof.enabled = true"))?;
        parse_http_url("shof.fhir_base", &fhir_base)?;
        if fhir_base.contains('?') || fhir_base.contains('#') {
            return Err(invalid(
                "shof.fhir_base",
                "must carry neither a query nor a fragment",
            ));
        }
        let redirect = self
            .redirect_uri
            .ok_or_else(|| invalid("shof.redirect_uri", "is required when shof.enabled = true"))?;
        let callback_path = redirect_uri(&redirect)?;
        if launch.paths.contains(&callback_path) {
            return Err(invalid(
                "shof.redirect_uri",
                "its path must differ from every launch path",
            ));
        }
        if module.jwks_path.as_deref() == Some(callback_path.as_str()) {
            return Err(invalid(
                "shof.redirect_uri",
                "its path must differ from module.jwks_path",
            ));
        }
        if self.scope.trim().is_empty() {
            return Err(invalid("shof.scope", "must not be empty"));
        }
        let Some(session) = session else {
            return Err(invalid(
                "session.enabled",
                "must be true with shof.enabled = true (a login ends in a session)",
            ));
        };
        if super::path::same(
            &callback_path,
            &session.logout_path,
            session.case_insensitive_paths,
        ) {
            return Err(invalid(
                "shof.redirect_uri",
                "its path must differ from session.logout_path",
            ));
        }
        let client_id = module.client_id.clone().ok_or_else(|| {
            invalid(
                "module.client_id",
                "is required with shof.enabled = true (the module's client_id at the auth server)",
            )
        })?;
        let assertion_alg = match (module.signing_keys.first(), introspection_alg) {
            (Some(_), Some(alg)) => alg,
            // An RSA key signs RS512, as Koppeltaal's producers do; an EC key its curve's.
            (Some(first), None) => first.key.natural_alg().unwrap_or(Alg::RS512),
            (None, alg) if module.generate => alg.unwrap_or(Alg::RS512),
            (None, _) => {
                return Err(invalid(
                    "module.signing_key_files",
                    "a signing key is required with shof.enabled = true, for the client \
                     assertion at the token endpoint (or module.generate = true)",
                ));
            }
        };
        Ok(Some(ShofConfig {
            fhir_base,
            redirect_uri: redirect,
            callback_path,
            scope: self.scope,
            timeout,
            login_ttl,
            nonce: self.nonce,
            client_id,
            assertion_alg,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callback_url_has_a_path_and_nothing_after_it() {
        assert_eq!(
            redirect_uri("https://module.example/hti-guard/callback").unwrap(),
            "/hti-guard/callback"
        );
        for bad in [
            "https://module.example/cb?x=1",
            "https://module.example/cb#top",
            "https://module.example/",
            "https://module.example",
            "/cb",
            "ftp://module.example/cb",
            "https://module.example/a/../cb",
        ] {
            let e = redirect_uri(bad).unwrap_err().to_string();
            assert!(e.starts_with("shof.redirect_uri"), "{bad}: {e}");
        }
    }
}
