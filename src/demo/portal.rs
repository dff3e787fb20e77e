//! The demo portal: it holds an RS512 key, publishes its JWKS, and launches the demo module
//! the way real portals do, with an auto-submitting form that POSTs a freshly minted token
//! to the guard. It also shows the guard refusing a replayed, expired, tampered or
//! misaddressed token.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Method, Request, StatusCode};
use serde_json::{Value, json};

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::auth::{AuthServer, Authorize, MODULE_JWKS_PATH};
use super::page::{self, esc};
use super::{AUDIENCE, Addresses};
use crate::jose::Alg;
use crate::jose::sign::{SignError, SigningKey};
use crate::tools::LaunchSpec;

const ACCENT: &str = "#0b5cab";
const AUTH_ACCENT: &str = "#5b3a8c";

/// One sample launch: who starts which task.
struct Sample {
    id: &'static str,
    who: &'static str,
    role: &'static str,
    sub: &'static str,
    patient: Option<&'static str>,
    task: &'static str,
    activity: &'static str,
    definition: &'static str,
}

const SAMPLES: [Sample; 3] = [
    Sample {
        id: "practitioner",
        who: "Dr. Anna de Vries",
        role: "a practitioner, starting the module for her patient Jan Jansen",
        sub: "Practitioner/demo-practitioner-1",
        patient: Some("Patient/demo-patient-7"),
        task: "Task/demo-task-101",
        activity: "Sleep diary",
        definition: "ActivityDefinition/demo-sleep-diary",
    },
    Sample {
        id: "patient",
        who: "Jan Jansen",
        role: "a patient, starting his own task",
        sub: "Patient/demo-patient-7",
        patient: None,
        task: "Task/demo-task-102",
        activity: "Breathing exercise",
        definition: "ActivityDefinition/demo-breathing-exercise",
    },
    Sample {
        id: "related-person",
        who: "Marieke Bakker",
        role: "a related person (mother), acting for her son Sem",
        sub: "RelatedPerson/demo-related-3",
        patient: Some("Patient/demo-patient-12"),
        task: "Task/demo-task-103",
        activity: "Mood tracker",
        definition: "ActivityDefinition/demo-mood-tracker",
    },
];

/// A way the guard refuses a launch, shown from the portal.
struct Refusal {
    id: &'static str,
    title: &'static str,
    explain: &'static str,
}

const REFUSALS: [Refusal; 4] = [
    Refusal {
        id: "replay",
        title: "The same token twice",
        explain: "The portal has just launched this token once (in the background). Sending it again must be refused: every HTI token is single use.",
    },
    Refusal {
        id: "expired",
        title: "An expired token",
        explain: "This token was issued ten minutes ago and expired five minutes ago.",
    },
    Refusal {
        id: "tampered",
        title: "A tampered token",
        explain: "Someone changed the person (sub) in this token after the portal signed it, so the signature no longer fits.",
    },
    Refusal {
        id: "other-module",
        title: "A token for another module",
        explain: "This token is addressed to Device/another-module, not to this module.",
    },
];

/// The portal's state: its key and where the others are.
pub(super) struct Portal {
    /// In `--koppeltaal` and `--shof` mode the portal is the domain's auth server too.
    auth: Option<AuthServer>,
    /// `--shof`: launches are SMART EHR launches (GET with `iss` and `launch`).
    shof: bool,
    key: SigningKey,
    kid: String,
    iss: String,
    fhir_base: String,
    /// Where the browser posts launches (`--guard-host`).
    launch_url: String,
    /// The guard as the portal itself reaches it (127.0.0.1).
    guard_url: String,
    jwks: String,
    client: reqwest::Client,
}

impl Portal {
    pub(super) fn new(
        key: SigningKey,
        addrs: &Addresses,
        koppeltaal: bool,
        shof: bool,
    ) -> Result<Portal, String> {
        let kid = format!(
            "demo-portal-{}",
            &crate::jose::sign::random_jti().map_err(|e| e.to_string())?[..8]
        );
        let jwks = key.jwks(&kid, Some(Alg::RS512)).to_string();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot build the portal's HTTP client: {e}"))?;
        let auth = if shof {
            Some(
                AuthServer::new(&addrs.portal_url(), &addrs.guard_url())
                    .with_shof(&super::redirect_uri(addrs))?,
            )
        } else {
            koppeltaal.then(|| AuthServer::new(&addrs.portal_url(), &addrs.guard_url()))
        };
        Ok(Portal {
            auth,
            shof,
            key,
            kid,
            iss: addrs.portal_url(),
            fhir_base: format!("{}/fhir", addrs.portal_url()),
            launch_url: format!("{}/launch", addrs.guard_browser_url()),
            guard_url: addrs.guard_url(),
            jwks,
            client,
        })
    }

    /// Encrypt `jws` to the module's published encryption key (HTI:jwe), as a portal does.
    async fn encrypt(&self, jws: &str) -> Result<String, String> {
        if self.auth.is_none() {
            return Err("encrypted launches need --koppeltaal".into());
        }
        let url = format!("{}{MODULE_JWKS_PATH}", self.guard_url);
        let jwks: Value = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("cannot fetch the module's JWKS: {e}"))?
            .json()
            .await
            .map_err(|e| format!("the module's JWKS is not JSON: {e}"))?;
        let key = jwks["keys"]
            .as_array()
            .and_then(|keys| keys.iter().find(|k| k["use"] == "enc"))
            .ok_or("the module publishes no encryption key")?;
        let kid = key["kid"].as_str().ok_or("the encryption key has no kid")?;
        crate::jose::jwe::encrypt_for(key, kid, "RSA-OAEP", "A128CBC-HS256", jws)
    }

    fn spec(&self, sample: &Sample, aud: &str) -> LaunchSpec {
        LaunchSpec {
            iss: self.iss.clone(),
            aud: aud.to_owned(),
            sub: sample.sub.to_owned(),
            resource: sample.task.to_owned(),
            patient: sample.patient.map(str::to_owned),
            definition: Some(sample.definition.to_owned()),
            intent: Some("plan".to_owned()),
            lifetime: Duration::from_secs(300),
        }
    }

    fn mint(&self, spec: &LaunchSpec, issued: SystemTime) -> Result<String, SignError> {
        let claims = spec.claims(issued)?;
        self.key.sign_jws(Alg::RS512, &self.kid, &claims)
    }

    /// A token for a refusal case.
    async fn refused_token(&self, case: &str) -> Result<String, String> {
        let sample = &SAMPLES[0];
        let now = SystemTime::now();
        let err = |e: SignError| e.to_string();
        match case {
            "replay" => {
                let token = self.mint(&self.spec(sample, AUDIENCE), now).map_err(err)?;
                let form = form_urlencoded::Serializer::new(String::new())
                    .append_pair("token", &token)
                    .finish();
                // Use it once, as the first launch would have.
                let first = self
                    .client
                    .post(format!("{}/launch", self.guard_url))
                    .header(
                        http::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(form)
                    .send()
                    .await
                    .map_err(|e| format!("the first launch did not reach the guard: {e}"))?;
                // Accepted: forwarded (200) or, with sessions, sent on to the landing page.
                if !(first.status().is_success() || first.status() == StatusCode::SEE_OTHER) {
                    return Err(format!("the first launch was refused ({})", first.status()));
                }
                Ok(token)
            }
            "expired" => self
                .mint(&self.spec(sample, AUDIENCE), now - Duration::from_secs(600))
                .map_err(err),
            "tampered" => {
                let token = self.mint(&self.spec(sample, AUDIENCE), now).map_err(err)?;
                tamper(&token).ok_or_else(|| "cannot tamper with the token".to_string())
            }
            "other-module" => self
                .mint(&self.spec(sample, "Device/another-module"), now)
                .map_err(err),
            other => Err(format!("no such case: {other}")),
        }
    }
}

/// Change `sub` in a signed token, keeping the signature: what an attacker would try.
fn tamper(token: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims["sub"] = json!("Patient/someone-else");
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    Some(format!("{header}.{payload}.{signature}"))
}

/// Answer one request to the portal (and, in `--koppeltaal` mode, to its auth server).
pub(super) async fn handle(request: Request<Incoming>, portal: Arc<Portal>) -> page::Reply {
    if let Some(auth) = &portal.auth {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/fhir/.well-known/smart-configuration") => {
                return page::json(&auth.smart_configuration());
            }
            (&Method::GET, "/oauth2/jwks") => {
                if let Some(jwks) = auth.jwks() {
                    return page::json(&jwks);
                }
            }
            (&Method::GET, "/oauth2/authorize") => {
                let query: Vec<(String, String)> =
                    form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
                        .into_owned()
                        .collect();
                return match auth.authorize(&query, &portal.jwks) {
                    Authorize::Login { login, sub } => {
                        page::html(StatusCode::OK, login_page(&login, &sub))
                    }
                    Authorize::Refused(why) => auth_problem(StatusCode::BAD_REQUEST, &why),
                };
            }
            (&Method::POST, "/oauth2/login") => {
                let Some(form) = read_form(request).await else {
                    return page::not_found();
                };
                let login = form
                    .iter()
                    .find(|(k, _)| k == "login")
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("");
                return match auth.log_in(login) {
                    Ok(location) => {
                        let mut response = page::html(StatusCode::FOUND, String::new());
                        match http::HeaderValue::try_from(location) {
                            Ok(location) => {
                                response
                                    .headers_mut()
                                    .insert(http::header::LOCATION, location);
                                response
                            }
                            Err(_) => {
                                auth_problem(StatusCode::INTERNAL_SERVER_ERROR, "cannot redirect")
                            }
                        }
                    }
                    Err(why) => auth_problem(StatusCode::BAD_REQUEST, &why),
                };
            }
            (&Method::POST, "/oauth2/token") => {
                let Some(form) = read_form(request).await else {
                    return page::not_found();
                };
                return match auth.token(&portal.client, &form).await {
                    Ok(answer) => page::json(&answer),
                    Err((status, error, why)) => {
                        let mut response =
                            page::json(&json!({"error": error, "error_description": why}));
                        *response.status_mut() =
                            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                        response
                    }
                };
            }
            (&Method::POST, "/oauth2/introspect") => {
                let Some(form) = read_form(request).await else {
                    return page::not_found();
                };
                if let Err(why) = auth.check_assertion(&portal.client, &form).await {
                    let mut response =
                        page::json(&json!({"error": "invalid_client", "error_description": why}));
                    *response.status_mut() = StatusCode::UNAUTHORIZED;
                    return response;
                }
                let token = form
                    .iter()
                    .find(|(k, _)| k == "token")
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("");
                return page::json(&auth.introspect(token, &portal.jwks));
            }
            _ => {}
        }
    }
    if request.method() != Method::GET {
        return page::not_found();
    }
    let query: Vec<(String, String)> =
        form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match request.uri().path() {
        "/" => page::html(StatusCode::OK, home(&portal)),
        "/.well-known/jwks.json" => {
            let mut response =
                page::json(&serde_json::from_str(&portal.jwks).unwrap_or(Value::Null));
            response.headers_mut().insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("max-age=300"),
            );
            response
        }
        "/go" => {
            let Some(sample) = SAMPLES.iter().find(|s| Some(s.id) == param("sample")) else {
                return page::not_found();
            };
            let style = param("style").unwrap_or("hti");
            let token = match portal.mint(&portal.spec(sample, AUDIENCE), SystemTime::now()) {
                Ok(token) => token,
                Err(e) => return problem(&e.to_string()),
            };
            if style == "shof" {
                return page::html(StatusCode::OK, shof_launch(&portal, &token));
            }
            let token = if style == "jwe" {
                match portal.encrypt(&token).await {
                    Ok(jwe) => jwe,
                    Err(e) => return problem(&e),
                }
            } else {
                token
            };
            page::html(
                StatusCode::OK,
                launch_form(&portal, &token, style == "koppeltaal", None),
            )
        }
        "/refuse" => {
            let Some(refusal) = REFUSALS.iter().find(|r| Some(r.id) == param("case")) else {
                return page::not_found();
            };
            match portal.refused_token(refusal.id).await {
                Ok(token) => page::html(
                    StatusCode::OK,
                    launch_form(&portal, &token, false, Some(refusal)),
                ),
                Err(e) => problem(&e),
            }
        }
        _ => page::not_found(),
    }
}

/// A urlencoded request body, at most 64 KiB.
async fn read_form(request: Request<Incoming>) -> Option<Vec<(String, String)>> {
    let body = Limited::new(request.into_body(), 64 * 1024)
        .collect()
        .await
        .ok()?
        .to_bytes();
    Some(form_urlencoded::parse(&body).into_owned().collect())
}

/// The auth server's login page for the launch's person.
fn login_page(login: &str, sub: &str) -> String {
    let who = SAMPLES.iter().find(|s| s.sub == sub).map_or(sub, |s| s.who);
    let body = format!(
        "<p>The module asks this domain to log you in for the launch of <code>{sub}</code>. \
         A real auth server would ask for credentials at the domain's identity provider.</p>\
         <form method=\"post\" action=\"/oauth2/login\" enctype=\"application/x-www-form-urlencoded\">\
         <input type=\"hidden\" name=\"login\" value=\"{login}\">\
         <button>Log in as {who}</button></form>",
        sub = esc(sub),
        login = esc(login),
        who = esc(who),
    );
    page::page("Log in", "Demo auth server", AUTH_ACCENT, &body)
}

fn auth_problem(status: StatusCode, message: &str) -> page::Reply {
    let body = format!(
        "<p class=\"bad\">The auth server refuses this login: {}</p>",
        esc(message)
    );
    page::html(
        status,
        page::page("Log in", "Demo auth server", AUTH_ACCENT, &body),
    )
}

fn problem(message: &str) -> page::Reply {
    let body = format!(
        "<p class=\"bad\">The portal could not make this launch: {}</p>",
        esc(message)
    );
    page::html(
        StatusCode::INTERNAL_SERVER_ERROR,
        page::page("Demo portal", "Something went wrong", ACCENT, &body),
    )
}

fn home(portal: &Portal) -> String {
    let mut body = String::from(
        "<p>This is a pretend portal (an EHR or patient portal). It has its own signing key \
         and publishes the public half as a <a href=\"/.well-known/jwks.json\">JWKS</a>. \
         Each button below mints a fresh HTI 2.0 token and sends your browser to the module \
         with it, through hti-guard.</p>\n",
    );
    if portal.shof {
        body.push_str(
            "<p class=\"card\"><strong>SHOF mode.</strong> This portal is also the domain's auth \
             server (<a href=\"/fhir/.well-known/smart-configuration\">smart-configuration</a>). \
             A launch is a SMART EHR launch: the guard hands the launch token to the auth server, \
             which checks it, shows a login page and vouches for the person with an id_token; \
             then the guard starts the session.</p>\n",
        );
    } else if portal.auth.is_some() {
        body.push_str(
            "<p class=\"card\"><strong>Koppeltaal mode.</strong> This portal is also the domain's auth \
             server (<a href=\"/fhir/.well-known/smart-configuration\">smart-configuration</a>). \
             The guard does not know its keys: it asks the auth server to introspect each token, \
             signing its request with the module's own key, which it publishes at its JWKS path. \
             The encrypted launch wraps the token in a JWE for the module's encryption key.</p>\n",
        );
    }
    body.push_str("<h2>Launch the module</h2>\n");
    let jwe_button = if portal.auth.is_some() {
        "<form method=\"get\" action=\"/go\"><input type=\"hidden\" name=\"sample\" value=\"{id}\">\
         <input type=\"hidden\" name=\"style\" value=\"jwe\">\
         <button class=\"secondary\">Launch (encrypted: HTI:jwe)</button></form>"
    } else {
        ""
    };
    let buttons = if portal.shof {
        "<form method=\"get\" action=\"/go\"><input type=\"hidden\" name=\"sample\" value=\"{id}\">\
         <input type=\"hidden\" name=\"style\" value=\"shof\"><button>Launch (SHOF: log in)</button></form>"
            .to_owned()
    } else {
        format!(
            "<form method=\"get\" action=\"/go\"><input type=\"hidden\" name=\"sample\" value=\"{{id}}\">\
             <input type=\"hidden\" name=\"style\" value=\"hti\"><button>Launch (HTI: token)</button></form>\
             <form method=\"get\" action=\"/go\"><input type=\"hidden\" name=\"sample\" value=\"{{id}}\">\
             <input type=\"hidden\" name=\"style\" value=\"koppeltaal\">\
             <button class=\"secondary\">Launch (Koppeltaal: launch + iss)</button></form>{jwe_button}"
        )
    };
    for s in &SAMPLES {
        let patient = s
            .patient
            .map(|p| format!("<tr><th>patient</th><td><code>{}</code></td></tr>", esc(p)))
            .unwrap_or_default();
        body.push_str(&format!(
            "<div class=\"card\"><h3>{who}</h3><div class=\"muted\">{role}</div>\
             <table><tr><th>sub</th><td><code>{sub}</code></td></tr>{patient}\
             <tr><th>resource (Task)</th><td><code>{task}</code></td></tr>\
             <tr><th>definition</th><td><code>{definition}</code> ({activity})</td></tr></table>\
             {buttons}</div>\n",
            buttons = buttons.replace("{id}", s.id),
            who = esc(s.who),
            role = esc(s.role),
            sub = esc(s.sub),
            task = esc(s.task),
            definition = esc(s.definition),
            activity = esc(s.activity),
        ));
    }
    // The refusal cases are HTI launches; in SHOF mode every launch is a login.
    let refusals: &[Refusal] = if portal.shof { &[] } else { &REFUSALS };
    if !refusals.is_empty() {
        body.push_str("<h2>See the guard refuse</h2>\n<div class=\"card\">");
    } else {
        body.push_str("<div>");
    }
    for r in refusals {
        body.push_str(&format!(
            "<form method=\"get\" action=\"/refuse\"><input type=\"hidden\" name=\"case\" value=\"{id}\">\
             <button class=\"danger\">{title}</button></form>",
            id = r.id,
            title = esc(r.title),
        ));
    }
    body.push_str(&format!(
        "</div>\n<p class=\"muted\">Issuer <code>{iss}</code>, key <code>{kid}</code> (RS512), \
         audience <code>{AUDIENCE}</code>, launch URL <code>{url}</code>.</p>",
        iss = esc(&portal.iss),
        kid = esc(&portal.kid),
        url = esc(&portal.launch_url),
    ));
    page::page(
        "Demo portal",
        "A portal that launches HTI modules",
        ACCENT,
        &body,
    )
}

/// The SHOF launch: a SMART EHR launch, a link (GET) to the guard with `iss` and `launch`,
/// followed by script.
fn shof_launch(portal: &Portal, token: &str) -> String {
    let href = format!(
        "{}?{}",
        portal.launch_url,
        form_urlencoded::Serializer::new(String::new())
            .append_pair("iss", &portal.fhir_base)
            .append_pair("launch", token)
            .finish()
    );
    let body = format!(
        "<p>Your browser is being sent to the module with a SMART EHR launch: the FHIR base \
         as <code>iss</code> and a fresh launch token as <code>launch</code>. The module (its \
         guard) hands the token to this domain's auth server, which logs you in.</p>\
         <p><a id=\"launch\" href=\"{href}\">Continue</a></p>\
         <p><a href=\"/\">Back to the portal</a></p>\
         <script>location.replace(document.getElementById('launch').href)</script>",
        href = esc(&href),
    );
    page::page("Launching the module", "Demo portal", ACCENT, &body)
}

/// The page that carries the token to the guard: an HTML form POST, submitted by script
/// for a launch (as portals do), by a button for a refusal case (so it can be read first).
fn launch_form(
    portal: &Portal,
    token: &str,
    koppeltaal: bool,
    refusal: Option<&Refusal>,
) -> String {
    let fields = if koppeltaal {
        format!(
            "<input type=\"hidden\" name=\"launch\" value=\"{}\"><input type=\"hidden\" name=\"iss\" value=\"{}\">",
            esc(token),
            esc(&portal.fhir_base)
        )
    } else {
        format!(
            "<input type=\"hidden\" name=\"token\" value=\"{}\">",
            esc(token)
        )
    };
    let issued = UNIX_EPOCH.elapsed().map(|d| d.as_secs()).unwrap_or(0);
    let (title, intro, button, script) = match refusal {
        None => (
            "Launching the module",
            "Your browser is being sent to the module with a fresh launch token.".to_owned(),
            "Continue",
            "<script>document.getElementById('launch').submit()</script>",
        ),
        Some(r) => (r.title, r.explain.to_owned(), "Send it to the module", ""),
    };
    let body = format!(
        "<p>{intro}</p>\
         <form id=\"launch\" method=\"post\" action=\"{action}\" enctype=\"application/x-www-form-urlencoded\">\
         {fields}<button>{button}</button></form>\
         <p class=\"muted\">Minted at {issued} (UNIX time), {len} characters, sent as <code>{field}</code>.</p>\
         <p><a href=\"/\">Back to the portal</a></p>{script}",
        intro = esc(&intro),
        action = esc(&portal.launch_url),
        len = token.len(),
        field = if koppeltaal { "launch + iss" } else { "token" },
    );
    page::page(title, "Demo portal", ACCENT, &body)
}
