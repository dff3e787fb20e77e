//! A guard with SHOF on (`[shof]`, `[session]`, `[module]`) between the mock auth server and
//! the echo upstream, for `tests/shof.rs` and the real-browser walk.

use super::authserver::AuthServer;
use super::guard::{AUDIENCE, Guard, GuardBuilder, module_key_file, toml_str, unique_issuer};
use super::host::loopback;
use super::mint::{self, Alg, SigningKey};
use super::upstream::Upstream;

pub const CLIENT_ID: &str = "module-shof-7";
pub const JWKS_PATH: &str = "/hti/module-keys";
pub const CALLBACK: &str = "/hti-guard/callback";
pub const SESSION_SECRET: &str = "c2Vzc2lvbi1zZWNyZXQtZm9yLXRoZS10ZXN0cy0wMTIzNDU2Nzg5";

pub struct ShofFixture {
    pub auth: AuthServer,
    pub upstream: Upstream,
    pub portal: &'static SigningKey,
    /// The portal's client_id: the launch token's `iss`.
    pub portal_iss: String,
    pub guard: Guard,
    /// `shof.redirect_uri`, as registered at the mock.
    pub redirect_uri: String,
}

impl ShofFixture {
    /// The guard's callback on `callback_host` (`127.0.0.1`, or `localhost` for a browser
    /// that must see the guard on another site than the auth server), landing on
    /// `/task/{resource_id}`, with `shof.timeout` 2 s, GET and POST launches, and the test's
    /// own settings from `configure` (which sees the auth server).
    pub async fn start_at(
        callback_host: &str,
        configure: impl FnOnce(GuardBuilder, &AuthServer) -> GuardBuilder,
    ) -> ShofFixture {
        let portal = mint::shared_key(Alg::RS512);
        let auth = AuthServer::start(CLIENT_ID, vec![portal.jwk()]).await;
        let upstream = Upstream::start().await;
        // Bound first: the callback URL names the guard's own address.
        let (listener, addr) = loopback("guard").await;
        let redirect_uri = format!("http://{callback_host}:{}{CALLBACK}", addr.port());
        let builder = shof_builder(&auth, &upstream, &redirect_uri);
        let guard = configure(builder, &auth).start_on(listener).await;
        auth.set_guard_jwks_url(&guard.url(JWKS_PATH));
        ShofFixture {
            auth,
            upstream,
            portal,
            portal_iss: unique_issuer(),
            guard,
            redirect_uri,
        }
    }

    /// A fresh launch token of the portal for this module.
    pub fn token(&self) -> String {
        self.portal
            .token(&mint::hti_claims(&self.portal_iss, AUDIENCE))
    }
}

/// The config of a SHOF guard in front of `upstream`, logging in at `auth` with this
/// callback URL (which it registers at the mock).
pub fn shof_builder(auth: &AuthServer, upstream: &Upstream, redirect_uri: &str) -> GuardBuilder {
    auth.set_redirect_uri(redirect_uri);
    let key_file = module_key_file();
    GuardBuilder::new(&upstream.url())
        .set("launch.methods", r#"["GET", "POST"]"#)
        .set_str("module.client_id", CLIENT_ID)
        .set(
            "module.signing_key_files",
            &format!("[{}]", toml_str(key_file.to_str().unwrap())),
        )
        .set_str("module.jwks_path", JWKS_PATH)
        .set("session.enabled", "true")
        .set_str("session.secret", SESSION_SECRET)
        .set_str("session.landing", "/task/{resource_id}")
        .set("shof.enabled", "true")
        .set_str("shof.fhir_base", &auth.fhir_base())
        .set_str("shof.redirect_uri", redirect_uri)
        .set_str("shof.timeout", "2s")
}
