//! Sessions after the launch (`[session]`): the sealed cookie, its secret and the paths it
//! guards.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::launch::LaunchConfig;
use super::parse::{https_url, normal_path, positive, same_origin_path};
use super::{ConfigError, invalid};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSession {
    enabled: bool,
    cookie_name: String,
    secure: bool,
    same_site: String,
    landing: String,
    protected: Vec<String>,
    public: Vec<String>,
    ttl: String,
    idle_timeout: String,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    previous_secret: Option<String>,
    previous_secret_file: Option<PathBuf>,
    logout_path: String,
    logged_out: Option<String>,
    case_insensitive_paths: bool,
}

impl Default for RawSession {
    fn default() -> Self {
        Self {
            enabled: false,
            cookie_name: "hti_guard_session".into(),
            secure: true,
            same_site: "lax".into(),
            landing: "/".into(),
            protected: vec!["/".into()],
            public: Vec::new(),
            ttl: "1h".into(),
            idle_timeout: "20m".into(),
            secret: None,
            secret_file: None,
            previous_secret: None,
            previous_secret_file: None,
            logout_path: "/hti-guard/logout".into(),
            logged_out: None,
            case_insensitive_paths: false,
        }
    }
}

/// The `SameSite` attribute of the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

/// Sessions after the launch (`[session]`).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub cookie_name: String,
    pub secure: bool,
    pub same_site: SameSite,
    pub landing: String,
    pub protected: Vec<String>,
    pub public: Vec<String>,
    pub ttl: Duration,
    pub idle_timeout: Duration,
    /// The sealing key material (decoded, at least 32 bytes); `None`: make one at start.
    pub secret: Option<Vec<u8>>,
    /// A previous key still accepted for reading, during a rotation.
    pub previous_secret: Option<Vec<u8>>,
    pub logout_path: String,
    pub logged_out: Option<String>,
    /// Match `protected`, `public` and `logout_path` without regard to ASCII case, for apps
    /// that route that way (Express, ASP.NET).
    pub case_insensitive_paths: bool,
    /// What a session is bound to: the launch audience, so that a cookie made for another
    /// deployment sharing the secret is refused.
    pub binding: String,
}

/// A base64 secret of at least 32 bytes, from the value or from a file.
fn session_secret(
    key: &str,
    file_key: &str,
    value: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<Vec<u8>>, ConfigError> {
    use base64::Engine;
    let (text, at) = match (value, file) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(invalid(
                file_key,
                format!("set {key} or {file_key}, not both"),
            ));
        }
        (Some(text), None) => (text, key),
        (None, Some(path)) => (
            std::fs::read_to_string(&path)
                .map_err(|e| invalid(file_key, format!("{}: {e}", path.display())))?,
            file_key,
        ),
    };
    let text = text.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('='))
        })
        .map_err(|_| invalid(at, "must be base64 (e.g. from `openssl rand -base64 32`)"))?;
    if bytes.len() < 32 {
        return Err(invalid(
            at,
            format!("holds {} bytes; at least 32 are required", bytes.len()),
        ));
    }
    Ok(Some(bytes))
}

fn path_prefixes(key: &str, list: &[String]) -> Result<(), ConfigError> {
    for p in list {
        normal_path(key, p)?;
    }
    Ok(())
}

impl RawSession {
    pub(super) fn validate(
        self,
        launch: &LaunchConfig,
    ) -> Result<Option<SessionConfig>, ConfigError> {
        let secret = session_secret(
            "session.secret",
            "session.secret_file",
            self.secret,
            self.secret_file,
        )?;
        let previous_secret = session_secret(
            "session.previous_secret",
            "session.previous_secret_file",
            self.previous_secret,
            self.previous_secret_file,
        )?;
        if !self.enabled {
            return Ok(None);
        }
        if self.cookie_name.is_empty()
            || !self
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(invalid(
                "session.cookie_name",
                "must be letters, digits, '_', '-' or '.'",
            ));
        }
        let same_site = match self.same_site.to_ascii_lowercase().as_str() {
            "lax" => SameSite::Lax,
            "strict" => SameSite::Strict,
            "none" => SameSite::None,
            other => {
                return Err(invalid(
                    "session.same_site",
                    format!("{other:?}: use \"lax\", \"strict\" or \"none\""),
                ));
            }
        };
        if same_site == SameSite::None && !self.secure {
            return Err(invalid(
                "session.secure",
                "must be true with session.same_site = \"none\" (browsers drop such cookies otherwise)",
            ));
        }
        same_origin_path("session.landing", &self.landing)?;
        path_prefixes("session.protected", &self.protected)?;
        path_prefixes("session.public", &self.public)?;
        normal_path("session.logout_path", &self.logout_path)?;
        if launch
            .paths
            .iter()
            .any(|p| super::path::same(p, &self.logout_path, self.case_insensitive_paths))
        {
            return Err(invalid("session.logout_path", "must not be a launch path"));
        }
        if let Some(to) = &self.logged_out {
            if to.starts_with('/') {
                same_origin_path("session.logged_out", to)?;
            } else {
                https_url("session.logged_out", to)?;
            }
        }
        let ttl = positive("session.ttl", &self.ttl)?;
        let idle_timeout = positive("session.idle_timeout", &self.idle_timeout)?;
        Ok(Some(SessionConfig {
            cookie_name: self.cookie_name,
            secure: self.secure,
            same_site,
            landing: self.landing,
            protected: self.protected,
            public: self.public,
            ttl,
            idle_timeout,
            secret,
            previous_secret,
            logout_path: self.logout_path,
            logged_out: self.logged_out,
            case_insensitive_paths: self.case_insensitive_paths,
            binding: launch.audience.join(" "),
        }))
    }
}
