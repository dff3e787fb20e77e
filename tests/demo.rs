//! `hti-guard demo`, driven as a browser would: read the portal page, follow a launch
//! button, submit the form it returns to the guard, and read the module's page; the
//! refusal buttons end on the guard's error page with a reference.

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use common::within;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_hti-guard");
const LIMIT: Duration = Duration::from_secs(30);

struct Demo {
    child: Child,
    urls: HashMap<String, String>,
    client: reqwest::Client,
}

impl Demo {
    /// Start the demo on free ports and read the lines that say where each part is.
    async fn start() -> Demo {
        Demo::start_with(&[], &["portal", "guard", "module", "metrics"]).await
    }

    /// Start with extra arguments, expecting these parts to be printed in order.
    async fn start_with(extra: &[&str], parts: &[&str]) -> Demo {
        let mut child = Command::new(BIN)
            .args(["demo", "--port", "0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start hti-guard demo");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut urls = HashMap::new();
        let mut order = Vec::new();
        while urls.len() < parts.len() {
            let line = within(LIMIT, "demo output", lines.next_line())
                .await
                .unwrap()
                .expect("demo printed its four lines");
            if let Some((part, url)) = line.split_once(": ") {
                order.push(part.to_string());
                urls.insert(part.to_string(), url.to_string());
            }
        }
        assert_eq!(order, parts, "one line per part, the portal first");
        for url in urls.values() {
            assert!(url.starts_with("http://127.0.0.1:"), "loopback only: {url}");
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let demo = Demo {
            child,
            urls,
            client,
        };
        demo.wait_ready().await;
        demo
    }

    fn url(&self, part: &str) -> &str {
        &self.urls[part]
    }

    async fn wait_ready(&self) {
        let readyz = self.url("metrics").replace("/metrics", "/readyz");
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            if let Ok(r) = self.client.get(&readyz).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "demo guard never ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn get(&self, url: &str) -> (u16, String) {
        let response = within(LIMIT, "GET", self.client.get(url).send())
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// Follow a portal link (a GET form), then submit the form on the page it returns, the
    /// way a browser does: urlencoded POST of the hidden fields to the form's action.
    async fn launch_via(&self, portal_path: &str) -> (u16, String) {
        let portal = self.url("portal").trim_end_matches('/').to_string();
        let (status, page) = self.get(&format!("{portal}{portal_path}")).await;
        assert_eq!(status, 200, "{page}");
        let (action, fields) = post_form(&page);
        assert_eq!(
            action,
            self.url("guard"),
            "the form posts to the guard's launch path"
        );
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields.iter())
            .finish();
        let response = within(
            LIMIT,
            "POST launch",
            self.client
                .post(&action)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("accept", "text/html")
                .body(body)
                .send(),
        )
        .await
        .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }
}

/// The POST form of a page: its action and hidden fields (decoded from HTML).
fn post_form(page: &str) -> (String, Vec<(String, String)>) {
    let start = page.find("<form id=\"launch\"").expect("a launch form");
    let form = &page[start..page[start..].find("</form>").unwrap() + start];
    let action = attribute(form, "action").expect("form action");
    let mut fields = Vec::new();
    let mut rest = form;
    while let Some(i) = rest.find("<input ") {
        let input = &rest[i..rest[i..].find('>').unwrap() + i];
        fields.push((
            attribute(input, "name").unwrap(),
            attribute(input, "value").unwrap(),
        ));
        rest = &rest[i + input.len()..];
    }
    (action, fields)
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let key = format!("{name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The reference printed on the guard's HTML error page.
fn reference(page: &str) -> String {
    let start = page
        .find("Reference: <code>")
        .expect("a reference on the page")
        + 17;
    page[start..start + page[start..].find("</code>").unwrap()].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_from_the_portal_reaches_the_module_verified() {
    let demo = Demo::start().await;
    let (status, home) = demo.get(demo.url("portal")).await;
    assert_eq!(status, 200);
    for text in [
        "Dr. Anna de Vries",
        "Jan Jansen",
        "RelatedPerson/",
        "Task/",
        "ActivityDefinition/",
        "/.well-known/jwks.json",
    ] {
        assert!(home.contains(text), "portal page lists {text}");
    }
    let (status, jwks) = demo
        .get(&format!("{}.well-known/jwks.json", demo.url("portal")))
        .await;
    assert_eq!(status, 200);
    let jwks: serde_json::Value = serde_json::from_str(&jwks).unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "RS512");

    for (sample, sub) in [
        ("practitioner", "Practitioner/demo-practitioner-1"),
        ("patient", "Patient/demo-patient-7"),
        ("related-person", "RelatedPerson/demo-related-3"),
    ] {
        let (status, page) = demo
            .launch_via(&format!("/go?sample={sample}&style=hti"))
            .await;
        assert_eq!(status, 200, "{sample}: {page}");
        assert!(page.contains("Verified launch for <code>"), "{sample}");
        assert!(
            page.contains(&format!("<th>x-hti-sub</th><td><code>{sub}</code>")),
            "{sample}"
        );
        assert!(page.contains("X-HTI-Claims, decoded"), "{sample}");
        assert!(
            page.contains("&quot;hti-version&quot;: &quot;2.0&quot;"),
            "{sample}: claims shown"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_koppeltaal_launch_keeps_iss_and_drops_the_token() {
    let demo = Demo::start().await;
    let (status, page) = demo
        .launch_via("/go?sample=related-person&style=koppeltaal")
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<th>x-hti-patient</th><td><code>Patient/demo-patient-12</code>"));
    assert!(
        page.contains("<th>iss</th>"),
        "the Koppeltaal iss field reaches the module"
    );
    assert!(
        !page.contains("<th>launch</th>"),
        "the token field does not"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refusal_buttons_end_on_the_guards_error_page() {
    let demo = Demo::start().await;
    for (case, status, text) in [
        ("replay", 401, "already been used"),
        ("expired", 401, "expired"),
        ("tampered", 401, "could not be verified"),
        ("other-module", 401, "meant for another module"),
    ] {
        let (got, page) = demo.launch_via(&format!("/refuse?case={case}")).await;
        assert_eq!(got, status, "{case}: {page}");
        assert!(page.contains(text), "{case}: {page}");
        let reference = reference(&page);
        assert_eq!(reference.len(), 36, "{case}: a request id as reference");
        assert!(
            !page.contains("Demo module"),
            "{case}: nothing reached the module"
        );
    }
    let (_, metrics) = demo.get(demo.url("metrics")).await;
    for reason in ["replayed", "expired", "bad_signature", "wrong_audience"] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\",result=\"rejected\"")),
            "{reason} counted"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_headers_never_reach_the_module() {
    let demo = Demo::start().await;
    let echo = demo.url("guard").replace("/launch", "/echo");
    let response = within(
        LIMIT,
        "echo",
        demo.client
            .get(&echo)
            .header("X-HTI-Sub", "Patient/mallory")
            .header("X_HTI_Iss", "https://evil.example")
            .send(),
    )
    .await
    .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["x_hti_headers_received"], serde_json::json!({}));
    // Directly at the module (bypassing the guard) they do arrive: the module just echoes.
    let direct = format!("{}echo", demo.url("module"));
    let body: serde_json::Value = demo
        .client
        .get(&direct)
        .header("X-HTI-Sub", "Patient/mallory")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["x_hti_headers_received"]["x-hti-sub"],
        "Patient/mallory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_demo() {
    let mut demo = Demo::start().await;
    let pid = demo.child.id().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = within(LIMIT, "demo exit", demo.child.wait()).await.unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn koppeltaal_mode_introspects_and_accepts_encrypted_launches() {
    let demo = Demo::start_with(
        &["--koppeltaal"],
        &["portal", "guard", "module", "metrics", "auth server"],
    )
    .await;
    let (status, config) = demo.get(demo.url("auth server")).await;
    assert_eq!(status, 200);
    assert!(config.contains("introspection_endpoint"));
    for style in ["hti", "koppeltaal", "jwe"] {
        let (status, page) = demo
            .launch_via(&format!("/go?sample=patient&style={style}"))
            .await;
        assert_eq!(status, 200, "{style}: {page}");
        assert!(
            page.contains("<th>x-hti-sub</th><td><code>Patient/demo-patient-7</code>"),
            "{style}"
        );
    }
    let (_, page) = demo
        .get(&format!(
            "{}/go?sample=patient&style=jwe",
            demo.url("portal").trim_end_matches('/')
        ))
        .await;
    let (_, fields) = post_form(&page);
    assert_eq!(
        fields[0].1.matches('.').count(),
        4,
        "the encrypted launch is a JWE"
    );
    let (_, metrics) = demo.get(demo.url("metrics")).await;
    assert!(
        metrics.contains(r#"hti_guard_introspection_requests_total{result="active"} 3"#),
        "{metrics}"
    );
    // The refusals hold in this mode too.
    let (status, page) = demo.launch_via("/refuse?case=replay").await;
    assert_eq!(status, 401, "{page}");
}
