//! `hti-guard demo`, driven as a browser would: read the portal page, follow a launch
//! button, submit the form it returns to the guard, follow the guard's 303 with its session
//! cookie to the module's task page, walk to a second page and log out; the refusal buttons
//! end on the guard's error page with a reference. (tests/browser.rs does the same in a
//! real browser.)

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Browser, DemoRun, within};
use tokio::process::Child;

const LIMIT: Duration = Duration::from_secs(30);
const COOKIE: &str = "hti_guard_session";

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
        let DemoRun { child, urls, order } = DemoRun::start(extra, parts.len()).await;
        assert_eq!(order, parts, "one line per part, the portal first");
        for (part, url) in &urls {
            let guard_by_name = part == "guard" && url.starts_with("http://localhost:");
            assert!(
                url.starts_with("http://127.0.0.1:") || guard_by_name,
                "loopback only: {url}"
            );
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Demo {
            child,
            urls,
            client,
        }
    }

    fn url(&self, part: &str) -> &str {
        &self.urls[part]
    }

    async fn get(&self, url: &str) -> (u16, String) {
        let response = within(LIMIT, "GET", self.client.get(url).send())
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// The guard's origin (`http://127.0.0.1:G`), from its printed launch URL.
    fn guard(&self) -> String {
        self.url("guard").trim_end_matches("/launch").to_string()
    }

    /// Follow a portal link (a GET form), then submit the form on the page it returns, the
    /// way a browser does: urlencoded POST of the hidden fields to the form's action.
    async fn launch_via(&self, portal_path: &str) -> (u16, String) {
        let response = self.launch_response(portal_path, None).await;
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// A launch that the guard accepts: its 303 to the landing page with the session
    /// cookie, followed into `jar`. Returns the landing page.
    async fn launch_session(&self, portal_path: &str, jar: &mut Jar) -> String {
        let response = self.launch_response(portal_path, jar.header()).await;
        assert_eq!(response.status(), 303, "{portal_path}: See Other");
        let location = response
            .headers()
            .get("location")
            .expect("a Location")
            .to_str()
            .unwrap()
            .to_string();
        let set = set_cookie(&response).expect("the launch sets the session cookie");
        for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(
                set.split(';')
                    .any(|a| a.trim().eq_ignore_ascii_case(attribute)),
                "{attribute} in {set}"
            );
        }
        assert!(
            !set.to_ascii_lowercase().contains("secure"),
            "plain-http demo: no Secure: {set}"
        );
        jar.update(&response);
        assert!(jar.0.is_some());
        let (status, page) = self.get_in(&location, jar).await;
        assert_eq!(status, 200, "{location}: {page}");
        page
    }

    /// A GET through the guard (a path, or an absolute URL) with the jar's cookie.
    async fn get_in(&self, url: &str, jar: &mut Jar) -> (u16, String) {
        self.send_in(self.client.get(self.absolute(url)), jar).await
    }

    async fn send_in(&self, request: reqwest::RequestBuilder, jar: &mut Jar) -> (u16, String) {
        let request = match jar.header() {
            Some(cookie) => request.header("cookie", cookie),
            None => request,
        };
        let response = within(LIMIT, "request", request.send()).await.unwrap();
        jar.update(&response);
        (response.status().as_u16(), response.text().await.unwrap())
    }

    fn absolute(&self, url: &str) -> String {
        if url.starts_with('/') {
            format!("{}{url}", self.guard())
        } else {
            url.to_string()
        }
    }

    async fn launch_response(
        &self,
        portal_path: &str,
        cookie: Option<String>,
    ) -> reqwest::Response {
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
        let mut request = self
            .client
            .post(&action)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "text/html")
            .body(body);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        within(LIMIT, "POST launch", request.send()).await.unwrap()
    }
}

/// The browser's cookie store, for the guard's one cookie.
#[derive(Default)]
struct Jar(Option<String>);

impl Jar {
    fn header(&self) -> Option<String> {
        self.0.as_ref().map(|value| format!("{COOKIE}={value}"))
    }

    /// Take the guard's `Set-Cookie`: a value to keep, or a removal (empty or expired).
    fn update(&mut self, response: &reqwest::Response) {
        let Some(set) = set_cookie(response) else {
            return;
        };
        let (pair, attributes) = set.split_once(';').unwrap_or((&set, ""));
        let value = pair.split_once('=').unwrap().1.trim();
        let expired = attributes.split(';').any(|a| {
            let a = a.trim().to_ascii_lowercase();
            a == "max-age=0" || a.starts_with("max-age=-") || a.contains("1970")
        });
        self.0 = (!value.is_empty() && !expired).then(|| value.to_string());
    }
}

/// The guard's session `Set-Cookie`, if the response has one.
fn set_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{COOKIE}=")))
        .map(str::to_string)
}

/// The verified person a module page shows.
fn person(page: &str) -> &str {
    let start = page
        .find("id=\"person\">Verified: you are <code>")
        .unwrap_or_else(|| panic!("a verified person on the page: {page}"))
        + "id=\"person\">Verified: you are <code>".len();
    &page[start..start + page[start..].find("</code>").unwrap()]
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

const SAMPLES: [(&str, &str, &str); 3] = [
    (
        "practitioner",
        "Practitioner/demo-practitioner-1",
        "demo-task-101",
    ),
    ("patient", "Patient/demo-patient-7", "demo-task-102"),
    (
        "related-person",
        "RelatedPerson/demo-related-3",
        "demo-task-103",
    ),
];

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

    for (sample, sub, task) in SAMPLES {
        let mut jar = Jar::default();
        let page = demo
            .launch_session(&format!("/go?sample={sample}&style=hti"), &mut jar)
            .await;
        assert_eq!(person(&page), sub, "{sample}");
        assert!(
            page.contains(&format!("<h2>Task <code>{task}</code></h2>")),
            "{sample}: the landing page is the task's"
        );
        assert!(
            page.contains(&format!(
                "<th>x-hti-resource</th><td><code>Task/{task}</code>"
            )),
            "{sample}"
        );
        assert!(!page.contains("id=\"other-task\""), "{sample}");
        assert!(page.contains("X-HTI-Claims, decoded"), "{sample}");
        assert!(
            page.contains("&quot;hti-version&quot;: &quot;2.0&quot;"),
            "{sample}: claims shown"
        );
        assert!(
            page.contains("Cookies the module received: none."),
            "{sample}: the guard's cookie is not forwarded"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_carries_the_person_across_pages_until_logout() {
    let demo = Demo::start().await;
    let mut jar = Jar::default();
    let landing = demo
        .launch_session("/go?sample=practitioner&style=hti", &mut jar)
        .await;
    assert_eq!(person(&landing), "Practitioner/demo-practitioner-1");
    assert!(landing.contains("<code id=\"x-hti-patient\">Patient/demo-patient-7</code>"));
    assert!(landing.contains("href=\"/task/demo-task-101/answers\""));
    assert!(landing.contains("href=\"/hti-guard/logout\""));

    // A reload: the same page again, no replay error.
    let (status, again) = demo.get_in("/task/demo-task-101", &mut jar).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(person(&again), "Practitioner/demo-practitioner-1");

    // The second page, by GET and by POST, carries the same person.
    let (status, answers) = demo.get_in("/task/demo-task-101/answers", &mut jar).await;
    assert_eq!(status, 200, "{answers}");
    assert_eq!(person(&answers), "Practitioner/demo-practitioner-1");
    assert!(answers.contains("<select name=\"answer\">"));
    let post = demo
        .client
        .post(format!("{}/task/demo-task-101/answers", demo.guard()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("answer=Well");
    let (status, saved) = demo.send_in(post, &mut jar).await;
    assert_eq!(status, 200, "{saved}");
    assert!(
        saved.contains("Saved “Well” for <code>Practitioner/demo-practitioner-1</code>"),
        "{saved}"
    );
    // Another task than the session's: the module, not the guard, points it out.
    let (status, other) = demo.get_in("/task/demo-task-999", &mut jar).await;
    assert_eq!(status, 200);
    assert!(other.contains("id=\"other-task\""), "{other}");

    // A new launch replaces the session: another person, another task.
    let landing = demo
        .launch_session("/go?sample=patient&style=hti", &mut jar)
        .await;
    assert_eq!(person(&landing), "Patient/demo-patient-7");
    let (_, answers) = demo.get_in("/task/demo-task-102/answers", &mut jar).await;
    assert_eq!(person(&answers), "Patient/demo-patient-7");

    // Logout clears the cookie; the task page then asks for a launch from the portal.
    let (status, bye) = demo.get_in("/hti-guard/logout", &mut jar).await;
    assert!(status == 200 || status == 303, "{status}: {bye}");
    assert!(jar.0.is_none(), "logout removes the cookie");
    let (status, page) = demo.get_in("/task/demo-task-102", &mut jar).await;
    assert_eq!(status, 401, "{page}");
    assert!(page.contains("portal"), "{page}");
    assert!(!page.contains("Demo module"), "nothing reached the module");
    let response = demo
        .client
        .get(format!("{}/task/demo-task-102", demo.guard()))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "no_session");

    let (_, metrics) = demo.get(demo.url("metrics")).await;
    for (event, count) in [("created", 2), ("logout", 1)] {
        assert!(
            metrics.contains(&format!(
                "hti_guard_sessions_total{{event=\"{event}\"}} {count}"
            )),
            "{event} {count}: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_pages_without_the_guard_say_there_is_no_verified_launch() {
    let demo = Demo::start().await;
    for path in ["task/demo-task-101", "task/demo-task-101/answers", ""] {
        let (status, page) = demo.get(&format!("{}{path}", demo.url("module"))).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            page.contains("No verified launch on this request."),
            "{path}"
        );
        assert!(!page.contains("Verified: you are"), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_koppeltaal_launch_starts_a_session_and_drops_the_token() {
    let demo = Demo::start().await;
    let portal = demo.url("portal").trim_end_matches('/').to_string();
    let (_, form_page) = demo
        .get(&format!(
            "{portal}/go?sample=related-person&style=koppeltaal"
        ))
        .await;
    let (_, fields) = post_form(&form_page);
    assert_eq!(
        fields.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["launch", "iss"],
        "a Koppeltaal launch: launch + iss"
    );
    let mut jar = Jar::default();
    let page = demo
        .launch_session("/go?sample=related-person&style=koppeltaal", &mut jar)
        .await;
    assert_eq!(person(&page), "RelatedPerson/demo-related-3");
    assert!(page.contains("<code id=\"x-hti-patient\">Patient/demo-patient-12</code>"));
    assert!(
        !page.contains("<th>launch</th>"),
        "the token field does not reach the module"
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
        let response = demo
            .launch_response(&format!("/refuse?case={case}"), None)
            .await;
        assert!(
            set_cookie(&response).is_none(),
            "{case}: a refused launch starts no session"
        );
        let got = response.status().as_u16();
        let page = response.text().await.unwrap();
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
    let echo = format!("{}/echo", demo.guard());
    let spoof = |request: reqwest::RequestBuilder| {
        request
            .header("X-HTI-Sub", "Patient/mallory")
            .header("X_HTI_Iss", "https://evil.example")
            .header("accept", "application/json")
    };
    // Without a session nothing is forwarded at all.
    let (status, body) = demo
        .send_in(spoof(demo.client.get(&echo)), &mut Jar::default())
        .await;
    assert_eq!(status, 401, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "no_session");
    // With one, the module gets the verified headers and none of the spoofed ones.
    let mut jar = Jar::default();
    demo.launch_session("/go?sample=patient&style=hti", &mut jar)
        .await;
    let (status, body) = demo.send_in(spoof(demo.client.get(&echo)), &mut jar).await;
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let received = &body["x_hti_headers_received"];
    assert_eq!(received["x-hti-sub"], "Patient/demo-patient-7", "{body}");
    assert_eq!(
        received["x-hti-iss"],
        demo.url("portal").trim_end_matches('/'),
        "{body}"
    );
    assert!(received.get("x_hti_iss").is_none(), "{body}");
    assert!(!body.to_string().contains("mallory"), "{body}");
    assert!(!body.to_string().contains("evil.example"), "{body}");
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
async fn guard_host_localhost_puts_the_guard_on_another_site_in_the_launch_form() {
    let demo = Demo::start_with(
        &["--guard-host", "localhost"],
        &["portal", "guard", "module", "metrics"],
    )
    .await;
    assert!(demo.url("guard").starts_with("http://localhost:"));
    let portal = demo.url("portal").trim_end_matches('/').to_string();
    let (_, form_page) = demo
        .get(&format!("{portal}/go?sample=patient&style=hti"))
        .await;
    let (action, _) = post_form(&form_page);
    assert_eq!(action, demo.url("guard"), "the form posts to localhost");
    // The launch works through that name, and the replay case still reaches the guard.
    let mut jar = Jar::default();
    let page = demo
        .launch_session("/go?sample=patient&style=hti", &mut jar)
        .await;
    assert_eq!(person(&page), "Patient/demo-patient-7");
    let (status, page) = demo.launch_via("/refuse?case=replay").await;
    assert_eq!(status, 401, "{page}");
    assert!(page.contains("already been used"), "{page}");
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
        let mut jar = Jar::default();
        let page = demo
            .launch_session(&format!("/go?sample=patient&style={style}"), &mut jar)
            .await;
        assert_eq!(person(&page), "Patient/demo-patient-7", "{style}");
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

/// The `href` of the element with `id` on a page (decoded from HTML).
fn href_of(page: &str, id: &str) -> String {
    let start = page
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("an element {id} on the page: {page}"));
    let tag = &page[start..start + page[start..].find('>').unwrap()];
    attribute(tag, "href").expect("an href")
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .expect("a Location header")
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shof_mode_logs_in_at_the_auth_server_and_starts_a_session() {
    let demo = Demo::start_with(
        &["--shof"],
        &["portal", "guard", "module", "metrics", "auth server"],
    )
    .await;
    let portal = demo.url("portal").trim_end_matches('/').to_string();
    let (status, config) = demo.get(demo.url("auth server")).await;
    assert_eq!(status, 200);
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    for key in [
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
    ] {
        assert!(config[key].is_string(), "{key}: {config}");
    }
    let (status, home) = demo.get(&format!("{portal}/")).await;
    assert_eq!(status, 200);
    assert!(home.contains("style\" value=\"shof\""), "{home}");

    let browser = Browser::new(&demo.guard());
    // The portal's launch link: a SMART EHR launch (GET) to the guard with iss and launch.
    let (status, page) = demo
        .get(&format!("{portal}/go?sample=patient&style=shof"))
        .await;
    assert_eq!(status, 200, "{page}");
    let launch = href_of(&page, "launch");
    assert!(launch.starts_with(demo.url("guard")), "{launch}");
    let query: HashMap<String, String> =
        form_urlencoded::parse(launch.split_once('?').unwrap().1.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(query["iss"], format!("{portal}/fhir"));
    assert_eq!(
        query["launch"].matches('.').count(),
        2,
        "a signed launch token"
    );

    // The guard sends the browser to the auth server's authorize endpoint.
    let response = browser.get(&launch, "text/html").await;
    assert_eq!(response.status(), 302);
    let authorize = location(&response);
    assert!(
        authorize.starts_with(config["authorization_endpoint"].as_str().unwrap()),
        "{authorize}"
    );
    // The login page.
    let response = browser.get(&authorize, "text/html").await;
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    assert!(page.contains("Log in as Jan Jansen"), "{page}");
    let start = page.find("<form").expect("a login form");
    let form = &page[start..start + page[start..].find("</form>").unwrap()];
    let action = format!("{portal}{}", attribute(form, "action").unwrap());
    let login = attribute(&form[form.find("<input").unwrap()..], "value").unwrap();
    // The same authorize request again: its launch token is burnt.
    let response = browser.get(&authorize, "text/html").await;
    assert_eq!(response.status(), 400, "a launch token logs in once");

    // Log in: back to the guard's callback with code and state.
    let response = browser
        .post_form(&action, &[("login", &login)], "text/html")
        .await;
    assert_eq!(response.status(), 302);
    let callback = location(&response);
    assert!(
        callback.starts_with(&format!("{}/hti-guard/callback?", demo.guard())),
        "{callback}"
    );
    assert!(callback.contains("code=") && callback.contains("state="));
    let response = browser
        .post_form(&action, &[("login", &login)], "text/html")
        .await;
    assert_eq!(response.status(), 400, "a login gives one code");
    let code: HashMap<String, String> =
        form_urlencoded::parse(callback.split_once('?').unwrap().1.as_bytes())
            .into_owned()
            .collect();
    let response = browser
        .post_form(
            config["token_endpoint"].as_str().unwrap(),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code["code"]),
            ],
            "application/json",
        )
        .await;
    assert_eq!(
        response.status(),
        401,
        "no code without the module's assertion"
    );
    // The guard exchanges the code and lands the browser with a session.
    let response = browser.get(&callback, "text/html").await;
    assert_eq!(
        response.status(),
        303,
        "{}",
        response.text().await.unwrap_or_default()
    );
    let landing = location(&response);
    assert!(browser.cookie(COOKIE).is_some(), "a session cookie");
    let landing = if landing.starts_with('/') {
        format!("{}{landing}", demo.guard())
    } else {
        landing
    };
    let response = browser.get(&landing, "text/html").await;
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    assert_eq!(person(&page), "Patient/demo-patient-7");
    assert!(landing.ends_with("/task/demo-task-102"), "{landing}");

    // The login is done: the same callback again finds no login cookie and logs no one in.
    let response = browser.get(&callback, "text/html").await;
    assert_ne!(response.status(), 303);
    let (_, metrics) = demo.get(demo.url("metrics")).await;
    assert!(
        metrics.contains(r#"hti_guard_logins_total{reason="none",result="accepted"} 1"#),
        "{metrics}"
    );
}
