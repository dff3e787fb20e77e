//! The verifier: token -> `VerifiedLaunch`. The order of the checks lives here: decode,
//! algorithm, issuer, key, signature, claims, and the single-use check last, so that a token
//! failing any other check never burns its `jti`. An introspected token has its claims
//! checked before the auth server is asked (so it never burns its jti there either), and the
//! answer's after.

pub mod claims;
pub mod introspect;
pub mod keys;
pub mod smart;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

pub use claims::{ClaimRules, HtiClaims};
pub use keys::KeyCache;

use crate::config::Config;
use crate::error::{Reason, Rejection};
use crate::jose::jws::{self, Decoded, JwsError, MAX_TOKEN_LEN};
use crate::jose::{Alg, jwe};
use crate::metrics::{Metrics, ReplayOutcome};
use crate::module_keys::ModuleKeys;
use crate::replay::{Freshness, ReplayError, ReplayStore};
use crate::verify::introspect::Introspector;

/// A launch whose token passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedLaunch {
    /// The configured issuer it came from; `None` for a portal the auth server vouched for
    /// under `introspection.all_issuers` (the metrics' `unknown`).
    pub issuer: Option<String>,
    pub claims: HtiClaims,
    /// The verified claims set as JSON, written from the parsed claims, so that it cannot
    /// disagree with the headers (a signed payload with duplicate keys reads one way here).
    pub claims_json: Vec<u8>,
}

fn malformed(detail: &'static str) -> Rejection {
    Rejection::new(Reason::MalformedToken, detail)
}

/// A token that is not a usable compact JWS, as the reason table names it.
fn rejected(e: JwsError) -> Rejection {
    match e {
        JwsError::Malformed(detail) => malformed(detail),
        JwsError::UnsupportedAlg(_) => Rejection::new(Reason::UnsupportedAlgorithm, e.to_string()),
    }
}

/// Split and decode a compact JWS (`jose::jws::decode`), refused with the verifier's reasons.
fn decode(token: &str) -> Result<Decoded<'_>, Rejection> {
    jws::decode(token).map_err(rejected)
}

/// What the verifier knows of one configured issuer.
struct Issuer {
    algorithms: Vec<Alg>,
    introspect: bool,
}

/// Verifies launch tokens against the configured issuers, their keys and the replay store.
pub struct Verifier {
    issuers: HashMap<String, Issuer>,
    keys: Arc<KeyCache>,
    rules: ClaimRules,
    clock_skew_secs: u64,
    replay: Arc<dyn ReplayStore>,
    metrics: Arc<Metrics>,
    introspector: Option<Arc<Introspector>>,
    module: Option<Arc<ModuleKeys>>,
}

impl Verifier {
    pub fn new(
        config: &Config,
        keys: Arc<KeyCache>,
        replay: Arc<dyn ReplayStore>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Verifier {
            issuers: config
                .issuers
                .iter()
                .map(|i| {
                    (
                        i.iss.clone(),
                        Issuer {
                            algorithms: i.algorithms.clone(),
                            introspect: i.introspected(),
                        },
                    )
                })
                .collect(),
            keys,
            rules: ClaimRules {
                audience: config.launch.audience.clone(),
                max_lifetime: config.launch.max_lifetime,
                clock_skew: config.launch.clock_skew,
                hti_versions: config.launch.hti_versions.clone(),
            },
            clock_skew_secs: config.launch.clock_skew.as_secs(),
            replay,
            metrics,
            introspector: None,
            module: None,
        }
    }

    /// Verify introspected issuers (and, with `all_issuers`, unknown ones) through `introspector`.
    pub fn with_introspector(mut self, introspector: Arc<Introspector>) -> Self {
        self.introspector = Some(introspector);
        self
    }

    /// Decrypt HTI:jwe tokens with the module's decryption keys.
    pub fn with_module(mut self, module: Arc<ModuleKeys>) -> Self {
        self.module = Some(module);
        self
    }

    /// A JWE is decrypted first; its inner JWS is what the rest verifies.
    fn unwrap_jwe<'t>(&self, token: &'t str) -> Result<Cow<'t, str>, Rejection> {
        if !jwe::is_jwe(token) {
            return Ok(Cow::Borrowed(token));
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(malformed("token too long"));
        }
        let module = self
            .module
            .as_ref()
            .filter(|m| !m.decryption.is_empty())
            .ok_or_else(|| {
                Rejection::new(
                    Reason::Undecryptable,
                    "encrypted token, but no decryption key is configured",
                )
            })?;
        module
            .decryption
            .decrypt(token)
            .map(Cow::Owned)
            .map_err(|e| Rejection::new(Reason::Undecryptable, e.to_string()))
    }

    async fn introspect(
        &self,
        token: &str,
        decoded: &Decoded<'_>,
    ) -> Result<Map<String, Value>, Rejection> {
        let introspector = self.introspector.as_ref().ok_or_else(|| {
            Rejection::new(
                Reason::IntrospectionUnavailable,
                "introspection is not configured",
            )
        })?;
        introspector.introspect(token, &decoded.claims).await
    }

    /// The claim rules on a token's unverified payload, before an auth server is asked.
    fn precheck(&self, decoded: &Decoded<'_>, now: i64) -> Result<HtiClaims, Rejection> {
        claims::check(&decoded.claims, now, &self.rules)
            .map_err(|f| Rejection::new(f.reason, format!("{} (before introspection)", f.detail)))
    }

    /// The signature check against the issuer's cached JWKS.
    async fn check_signature(&self, iss: &str, decoded: &Decoded<'_>) -> Result<(), Rejection> {
        let Some(kid) = decoded.kid.as_deref() else {
            return Err(malformed("header has no kid"));
        };
        let keys = self.keys.issuer(iss).ok_or_else(|| {
            Rejection::internal(Reason::KeysUnavailable, "no key cache for issuer")
        })?;
        let key = keys.key_for(kid, decoded.alg).await?;
        if key.verify(
            decoded.alg,
            decoded.signing_input.as_bytes(),
            decoded.signature,
        ) {
            Ok(())
        } else {
            Err(Rejection::new(
                Reason::BadSignature,
                "signature does not verify",
            ))
        }
    }

    pub fn replay_store(&self) -> &Arc<dyn ReplayStore> {
        &self.replay
    }

    /// Run every check on `token` at time `now`.
    pub async fn verify(&self, token: &str, now: SystemTime) -> Result<VerifiedLaunch, Rejection> {
        let token = self.unwrap_jwe(token)?;
        let token = token.as_ref();
        let decoded = decode(token)?;
        let iss = match decoded.claims.get("iss") {
            None | Some(Value::Null) => {
                return Err(Rejection::new(Reason::MissingClaim, "iss is missing"));
            }
            Some(Value::String(iss)) => iss.as_str(),
            Some(_) => return Err(Rejection::new(Reason::InvalidClaim, "iss is not a string")),
        };
        let now_secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0) as i64;
        let configured = self.issuers.get(iss);
        let label = configured.map(|_| iss.to_owned());
        let tag = |r: Rejection| match &label {
            Some(l) => r.with_issuer(l),
            None => r,
        };
        // The token's own claims, when an auth server vouches for it: judged before it is
        // asked (a token refused anyway must not burn its jti there, nor leave an audit
        // event), and the replay key after, whatever the answer says.
        let mut asked: Option<HtiClaims> = None;
        let claims_set: Cow<'_, Map<String, Value>> = match configured {
            Some(issuer) => {
                if !issuer.algorithms.contains(&decoded.alg) {
                    return Err(tag(Rejection::new(
                        Reason::UnsupportedAlgorithm,
                        format!("alg {} is not accepted for this issuer", decoded.alg),
                    )));
                }
                if issuer.introspect {
                    asked = Some(self.precheck(&decoded, now_secs).map_err(tag)?);
                    Cow::Owned(self.introspect(token, &decoded).await.map_err(tag)?)
                } else {
                    self.check_signature(iss, &decoded).await.map_err(tag)?;
                    Cow::Borrowed(&decoded.claims)
                }
            }
            None => match &self.introspector {
                Some(introspector) if introspector.all_issuers() => {
                    asked = Some(self.precheck(&decoded, now_secs)?);
                    Cow::Owned(introspector.introspect(token, &decoded.claims).await?)
                }
                _ => {
                    return Err(Rejection::new(
                        Reason::UnknownIssuer,
                        "iss is not configured",
                    ));
                }
            },
        };
        let claims = claims::check(&claims_set, now_secs, &self.rules)
            .map_err(|f| tag(Rejection::new(f.reason, f.detail)))?;
        // Single use is keyed on what the portal signed, never on what an answer says.
        let (replay_iss, replay_jti) = match &asked {
            Some(token_claims) => (token_claims.iss.as_str(), token_claims.jti.as_str()),
            None => (claims.iss.as_str(), claims.jti.as_str()),
        };
        let now_secs = now_secs as u64;
        // Kept until the later of the two exps: an answer cannot shorten the memory of a jti.
        let exp = asked.as_ref().map_or(claims.exp, |t| t.exp.max(claims.exp));
        let keep_until = u64::try_from(exp)
            .unwrap_or(0)
            .saturating_add(self.clock_skew_secs);
        single_use(
            &*self.replay,
            &self.metrics,
            (replay_iss, replay_jti),
            (now_secs, keep_until),
            "jti seen before",
        )
        .await
        .map_err(tag)?;
        Ok(VerifiedLaunch {
            issuer: label,
            claims_json: serde_json::to_vec(&*claims_set).unwrap_or_default(),
            claims,
        })
    }
}

/// Record (`iss`, `jti`) in the replay store until `keep_until`, counted in the metrics:
/// `Ok` when it was fresh, else `replayed` (with `replayed_detail`) or
/// `replay_store_unavailable`. Used by HTI launches and by SHOF logins alike.
pub(crate) async fn single_use(
    replay: &dyn ReplayStore,
    metrics: &Metrics,
    (iss, jti): (&str, &str),
    (now, keep_until): (u64, u64),
    replayed_detail: &'static str,
) -> Result<(), Rejection> {
    let started = std::time::Instant::now();
    let checked = replay.check_and_insert(iss, jti, now, keep_until).await;
    let result = match &checked {
        Ok(Freshness::Fresh) => ReplayOutcome::Fresh,
        Ok(Freshness::Replayed) => ReplayOutcome::Replayed,
        Err(_) => ReplayOutcome::Error,
    };
    metrics.replay_check(replay.name(), result, started.elapsed().as_secs_f64());
    match checked {
        Ok(Freshness::Fresh) => Ok(()),
        Ok(Freshness::Replayed) => Err(Rejection::new(Reason::Replayed, replayed_detail)),
        Err(ReplayError::Full) => Err(Rejection::new(
            Reason::ReplayStoreUnavailable,
            "replay store is full",
        )),
        Err(ReplayError::Unavailable(e)) => Err(Rejection::new(
            Reason::ReplayStoreUnavailable,
            format!("replay store: {e}"),
        )),
    }
}

/// The HTTP client for the guard's own requests (key sets, discovery, introspection, the
/// token exchange): rustls, bounded by `timeout` (connect included), no redirects.
pub(crate) fn http_client(timeout: std::time::Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("hti-guard/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jws_errors_keep_their_reasons_and_details() {
        let r = rejected(JwsError::Malformed("empty signature"));
        assert_eq!(
            (r.reason, r.detail.as_ref()),
            (Reason::MalformedToken, "empty signature")
        );
        let r = rejected(JwsError::UnsupportedAlg("HS256".into()));
        assert_eq!(
            (r.reason, r.detail.as_ref()),
            (
                Reason::UnsupportedAlgorithm,
                r#"alg "HS256" is not accepted"#
            )
        );
        let token = "eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.";
        assert_eq!(
            decode(token).unwrap_err().reason,
            Reason::UnsupportedAlgorithm
        );
    }
}
