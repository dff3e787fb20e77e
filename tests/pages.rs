//! The guard's own pages over real sockets: the error, no-session and signed-out pages in
//! Dutch and English by `Accept-Language`, with their titles, the reference and the portal
//! link; JSON errors unchanged; the operator's templates (`pages.dir`) used per file, their
//! values escaped, a bad template refused at load by `check`, naming `pages.dir`, and the
//! templates read again by a reload (a broken one refused, the pages in use kept).

mod common;

use std::time::Duration;

use common::jwks::JwksServer;
use common::mint;
use common::*;

const LIMIT: Duration = Duration::from_secs(30);
const SECRET: &str = "c2Vzc2lvbi1zZWNyZXQtZm9yLXRoZS10ZXN0cy0wMTIzNDU2Nzg5"; // 40 bytes
const PORTAL: &str = "https://portal.example/home?from=guard&x=1";

fn with_sessions(builder: GuardBuilder) -> GuardBuilder {
    builder
        .set("session.enabled", "true")
        .set_str("session.secret", SECRET)
        .set_str("session.landing", "/task/{resource_id}")
}

/// A page as a browser gets it.
struct Page {
    status: u16,
    reference: String,
    vary: String,
    language: String,
    body: String,
}

impl Page {
    async fn read(response: reqwest::Response) -> Page {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        let content_type = header("content-type");
        assert_eq!(content_type, "text/html; charset=utf-8");
        assert_eq!(header("cache-control"), "no-store");
        Page {
            status: response.status().as_u16(),
            reference: header("x-request-id"),
            vary: header("vary"),
            language: header("content-language"),
            body: within(LIMIT, "page body", response.text()).await.unwrap(),
        }
    }

    /// Asserts the page is in `lang` with this title and says it as its heading.
    fn assert_page(&self, lang: &str, title: &str) {
        assert!(
            self.body
                .starts_with(&format!("<!doctype html>\n<html lang=\"{lang}\">")),
            "{}",
            self.body
        );
        assert!(
            self.body.contains(&format!("<title>{title}</title>")),
            "{}",
            self.body
        );
        assert!(
            self.body.contains(&format!("<h1>{title}</h1>")),
            "{}",
            self.body
        );
        assert_eq!(self.vary, "Accept-Language");
        assert_eq!(self.language, lang);
    }
}

/// A request for `path` with `Accept-Language: accept_language` (none when empty).
async fn get(fx: &Fixture, path: &str, accept_language: &str) -> reqwest::Response {
    let mut request = fx
        .client
        .get(fx.guard.url(path))
        .header("accept", "text/html");
    if !accept_language.is_empty() {
        request = request.header("accept-language", accept_language);
    }
    within(LIMIT, "GET", request.send()).await.unwrap()
}

/// A launch with a token that is no token, as a browser posts it.
async fn bad_launch(fx: &Fixture, accept_language: &str) -> reqwest::Response {
    let mut request = fx
        .client
        .post(fx.guard.url("/launch"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .body("token=not.a.token");
    if !accept_language.is_empty() {
        request = request.header("accept-language", accept_language);
    }
    within(LIMIT, "launch", request.send()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_speaks_the_browsers_language() {
    let fx = Fixture::start_with(|b| with_sessions(b).set_str("pages.portal_url", PORTAL)).await;
    let cases = [
        ("nl-NL,nl;q=0.9,en-US;q=0.8,en;q=0.7", "nl"),
        ("de-DE,de;q=0.9,nl;q=0.4,en;q=0.3", "nl"),
        ("en-GB,en;q=0.9,nl;q=0.8", "en"),
        ("fr-FR", "en"),
        ("", "en"),
    ];
    for (accept_language, lang) in cases {
        let dutch = lang == "nl";
        let portal_link = format!(
            "href=\"https://portal.example/home?from=guard&amp;x=1\">{}</a>",
            if dutch {
                "Terug naar uw portaal"
            } else {
                "Back to your portal"
            }
        );

        // The error page: a launch whose token is not a token.
        let page = Page::read(bad_launch(&fx, accept_language).await).await;
        assert_eq!(page.status, 401, "{accept_language}");
        let title = if dutch {
            "De module kon niet worden gestart"
        } else {
            "The module could not be started"
        };
        page.assert_page(lang, title);
        assert!(page.body.contains(&portal_link), "{}", page.body);
        assert!(!page.reference.is_empty());
        assert!(
            page.body
                .contains(&format!("<code>{}</code>", page.reference)),
            "{}",
            page.body
        );
        let said = if dutch {
            "Start de module opnieuw vanuit uw portaal."
        } else {
            "Please start the module again from your portal."
        };
        assert!(page.body.contains(said), "{}", page.body);
        assert!(!page.body.contains("Unauthorized"), "{}", page.body);

        // The no-session page: a protected path without a session.
        let page = Page::read(get(&fx, "/task/abc", accept_language).await).await;
        assert_eq!(page.status, 401);
        let title = if dutch {
            "Uw sessie is verlopen"
        } else {
            "Your session has expired"
        };
        page.assert_page(lang, title);
        assert!(page.body.contains(&portal_link), "{}", page.body);
        assert!(page.body.contains(&page.reference), "{}", page.body);

        // The signed-out page.
        let page = Page::read(get(&fx, "/hti-guard/logout", accept_language).await).await;
        assert_eq!(page.status, 200);
        let title = if dutch {
            "U bent afgemeld"
        } else {
            "You have been signed out"
        };
        page.assert_page(lang, title);
        assert!(page.body.contains(&portal_link), "{}", page.body);
        assert!(!page.reference.is_empty());
        assert!(page.body.contains(&page.reference), "{}", page.body);
    }
    assert_eq!(fx.upstream.hits(), 0, "no page came from the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_clients_keep_the_json_error_and_no_portal_link_without_a_portal() {
    let fx = Fixture::start_with(with_sessions).await;
    let response = within(
        LIMIT,
        "GET",
        fx.client
            .get(fx.guard.url("/task/abc"))
            .header("accept", "application/json")
            .header("accept-language", "nl")
            .send(),
    )
    .await
    .unwrap();
    assert!(response.headers().get("vary").is_none());
    let body = expect_rejection(response, 401, "no_session").await;
    assert_eq!(
        body["message"],
        "Please start this module from your portal: open the task there and choose to start it."
    );

    let page = Page::read(get(&fx, "/task/abc", "nl").await).await;
    page.assert_page("nl", "Uw sessie is verlopen");
    assert!(!page.body.contains("href"), "{}", page.body);
    assert_eq!(fx.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_templates_replace_pages_one_file_at_a_time() {
    let dir = TempDir::new();
    dir.write(
        "error.nl.html",
        "<!doctype html><html lang=\"{{lang}}\"><title>{{title}}</title>\
         <h1>Zorgportaal: {{title}}</h1><p>{{message}}</p><p>{{status}} {{reason}}</p>\
         <a href=\"{{portal_url}}\">portaal</a><small>{{ reference }}</small>",
    );
    dir.write(
        "logout.en.html",
        "<p>Bye! {{title}} {{reason}}|{{status}}</p>",
    );
    let fx = Fixture::start_with(|b| {
        with_sessions(b)
            .set_str("pages.portal_url", PORTAL)
            .set_str("pages.dir", path_str(dir.path()))
    })
    .await;

    let response = bad_launch(&fx, "nl").await;
    let reference = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.text().await.unwrap();
    assert_eq!(
        body,
        format!(
            "<!doctype html><html lang=\"nl\"><title>De module kon niet worden gestart</title>\
             <h1>Zorgportaal: De module kon niet worden gestart</h1><p>De start van de module \
             kon niet worden gecontroleerd. Start de module opnieuw vanuit uw portaal.</p>\
             <p>401 malformed_token</p><a href=\"https://portal.example/home?from=guard&amp;x=1\">\
             portaal</a><small>{reference}</small>"
        )
    );
    // English has no error template: the built-in page.
    let page = Page::read(bad_launch(&fx, "en").await).await;
    page.assert_page("en", "The module could not be started");
    // The Dutch no-session page has none either.
    let page = Page::read(get(&fx, "/task/abc", "nl").await).await;
    page.assert_page("nl", "Uw sessie is verlopen");
    // The English logout page is the operator's, the Dutch one built in.
    let response = get(&fx, "/hti-guard/logout", "en").await;
    assert_eq!(response.headers()["vary"], "Accept-Language");
    assert_eq!(
        response.text().await.unwrap(),
        "<p>Bye! You have been signed out |200</p>"
    );
    let page = Page::read(get(&fx, "/hti-guard/logout", "nl").await).await;
    page.assert_page("nl", "U bent afgemeld");
    assert_eq!(fx.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_the_templates_and_refuses_a_bad_one() {
    let dir = TempDir::new();
    let pages = dir.join("pages");
    std::fs::create_dir(&pages).unwrap();
    std::fs::write(pages.join("session.nl.html"), "<h1>{{title}}</h1>").unwrap();
    let base = GuardBuilder::new("http://127.0.0.1:9")
        .issuer("https://portal.example", "http://127.0.0.1:9/jwks")
        .set_str("pages.portal_url", PORTAL)
        .set_str("pages.dir", path_str(&pages));
    let config = dir.write("config.toml", base.toml());
    let check = |config: std::path::PathBuf| {
        let mut command = command(&["check", "--offline"]);
        command.args(["--config", path_str(&config)]);
        run(command)
    };
    let finished = check(config.clone()).await;
    finished.assert_ok();
    let line = finished.line("pages.dir");
    assert!(line.contains("1 of 6 templates: session.nl.html"), "{line}");
    assert!(finished.line("pages.portal_url").contains(PORTAL));

    // An unknown placeholder names the key and the file, before anything is served.
    std::fs::write(pages.join("error.en.html"), "<h1>{{titel}}</h1>").unwrap();
    let finished = check(config.clone()).await;
    finished.assert_error(
        2,
        &[
            "pages.dir",
            "error.en.html",
            "unknown placeholder {{titel}}",
        ],
    );
    std::fs::remove_file(pages.join("error.en.html")).unwrap();

    // A misspelt file name, and a directory that is not there.
    std::fs::write(pages.join("sesion.nl.html"), "x").unwrap();
    check(config.clone())
        .await
        .assert_error(2, &["pages.dir", "sesion.nl.html", "expected one of"]);
    let gone = base.set_str("pages.dir", path_str(&dir.join("absent")));
    let config = dir.write("config.toml", gone.toml());
    check(config)
        .await
        .assert_error(2, &["pages.dir", "cannot read directory", "absent"]);
}

/// Waits until `hti_guard_config_reloads_total{result}` reaches `count`.
async fn wait_reloads(served: &Served, result: &str, count: f64) {
    within(LIMIT, "the reload to be counted", async {
        loop {
            let response = client().get(served.admin_url("/metrics")).send().await;
            let text = response.unwrap().text().await.unwrap();
            let seen = common::metrics::value(
                &text,
                "hti_guard_config_reloads_total",
                &[("result", result)],
            );
            if seen >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// The body of the page at `path` in Dutch.
async fn dutch(served: &Served, path: &str) -> String {
    let request = client()
        .get(served.url(path))
        .header("accept-language", "nl")
        .send();
    within(LIMIT, "GET", request)
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A reload re-reads the templates: a changed one is served from then on, and a broken one
/// is refused with the whole reload, the pages in use staying as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reads_the_templates_again() {
    let dir = TempDir::new();
    dir.write("session.nl.html", "<p>eerste: {{title}}</p>");
    let jwks = JwksServer::start(&[mint::shared_key(mint::Alg::RS512)]).await;
    let backends = Backends::start(jwks).await;
    let builder = with_sessions(backends.builder()).set_str("pages.dir", path_str(dir.path()));
    let served = Served::start(builder, "info").await;
    assert_eq!(
        dutch(&served, "/task/abc").await,
        "<p>eerste: Uw sessie is verlopen</p>"
    );

    dir.write("session.nl.html", "<p>tweede: {{title}}</p>");
    served.signal("-HUP").await;
    wait_reloads(&served, "ok", 1.0).await;
    assert_eq!(
        dutch(&served, "/task/abc").await,
        "<p>tweede: Uw sessie is verlopen</p>"
    );

    dir.write("session.nl.html", "<p>derde: {{titel}}</p>");
    served.signal("-HUP").await;
    wait_reloads(&served, "error", 1.0).await;
    assert_eq!(
        dutch(&served, "/task/abc").await,
        "<p>tweede: Uw sessie is verlopen</p>"
    );
    served.signal("-TERM").await;
    let finished = served.finish().await;
    assert!(
        finished.stdout.contains("unknown placeholder {{titel}}"),
        "{finished}"
    );
    assert_eq!(backends.upstream.hits(), 0);
}
