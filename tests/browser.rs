//! The demo in a real browser: headless Chromium, driven by `tests/browser/session.mjs`
//! (playwright-core), walks a person's visit. The portal (127.0.0.1) auto-submits a launch
//! to the guard on another site (`localhost`, from `demo --guard-host localhost`); the guard
//! answers 303 with its session cookie; the module's task page shows the person and the
//! task, survives a reload, a click to a second page keeps the person, and after logout a
//! protected page is the guard's "start from your portal" page. The replay refusal ends on
//! the guard's error page. Screenshots go to `target/browser-test/`.
//!
//! The SHOF login (`tests/browser/shof.mjs`): a portal page sends the launch to the guard,
//! which sends the browser through the mock auth server's authorize (approving at once, for
//! the IdP) and back to its callback; the task page shows the person, through a reload, a
//! second page and logout. Screenshots go to `target/browser-test-shof/`.
//!
//! The guard's own pages (`tests/browser/pages.mjs`): the error, no-session and signed-out
//! pages in a Dutch and an English Chromium, checked on their visible text. Screenshots go
//! to `target/pages-screenshots/` (`<page>-<lang>.png`).
//!
//! Needs node, the packages of `npm ci --prefix tests/browser`, and Chromium
//! (`/usr/bin/chromium`, or `HTI_GUARD_CHROMIUM`). Without them the test says so and
//! passes, except under CI (`CI` set), where it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::shof_fixture::CALLBACK;
use common::{DemoRun, Fixture, ShofFixture, mint, needs, probe, within};
use tokio::process::Command;

/// The whole browser walk: Chromium's start and a dozen pages.
const SCRIPT_LIMIT: Duration = Duration::from_secs(180);
const SCREENSHOTS: [&str; 5] = [
    "landing.png",
    "answers.png",
    "logged-out.png",
    "no-session.png",
    "replay.png",
];

fn script_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// `target/browser-test/` (under `CARGO_TARGET_DIR` when set).
fn output_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("browser-test")
}

fn chromium() -> PathBuf {
    std::env::var_os("HTI_GUARD_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// What is missing to run the browser test, if anything.
fn missing() -> Option<String> {
    if !probe("node", &["--version"]) {
        return Some("node is not installed (apt-get install nodejs npm)".into());
    }
    if !script_dir().join("node_modules/playwright-core").is_dir() {
        return Some("playwright-core is not installed: run npm ci --prefix tests/browser".into());
    }
    if !chromium().is_file() {
        return Some(format!(
            "{} not found (apt-get install chromium, or set HTI_GUARD_CHROMIUM)",
            chromium().display()
        ));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visit_in_a_real_browser_keeps_the_person_from_launch_to_logout() {
    if !needs(missing()) {
        return;
    }
    let out = fresh_output_dir("browser-test");
    let demo = DemoRun::start(&["--guard-host", "localhost"], 4).await;
    let urls = &demo.urls;
    let portal = &urls["portal"];
    let guard = urls["guard"].trim_end_matches("/launch");
    assert!(portal.starts_with("http://127.0.0.1:"), "{portal}");
    assert!(guard.starts_with("http://localhost:"), "{guard}");

    run_script(
        "session.mjs",
        &[("PORTAL_URL", portal.as_str()), ("GUARD_URL", guard)],
        &out,
    )
    .await;
    expect_screenshots(&out, &SCREENSHOTS);
}

/// Runs `node script` in `tests/browser` with these variables (and `OUT_DIR`, `CHROMIUM`),
/// bounded, and asserts it exits 0.
async fn run_script(script: &str, vars: &[(&str, &str)], out: &Path) {
    println!("screenshots: {}", out.display());
    let mut command = Command::new("node");
    command
        .arg(script)
        .current_dir(script_dir())
        .envs(vars.iter().copied())
        .env("OUT_DIR", out)
        .env("CHROMIUM", chromium())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let run = within(SCRIPT_LIMIT, "the browser script", command.output())
        .await
        .expect("run node");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        run.status.success(),
        "the browser walk {script} failed ({}); screenshots in {}\n{stdout}\n{stderr}",
        run.status,
        out.display()
    );
}

fn expect_screenshots(out: &Path, names: &[&str]) {
    for name in names {
        let png = std::fs::read(out.join(name)).unwrap_or_default();
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000,
            "{name}: a screenshot in {}",
            out.display()
        );
    }
    assert!(!out.join("failure.png").exists());
}

/// An empty `dir` beside `target/browser-test/` (its own, so that the walks can run at once).
fn fresh_output_dir(name: &str) -> PathBuf {
    let out = output_dir().with_file_name(name);
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    out
}

/// The SHOF login in a real browser: the portal page (127.0.0.1) -> the guard (localhost)
/// -> the mock auth server's authorize (127.0.0.1, approves at once) -> the guard's callback
/// -> the app's task page with the person; a reload, a second page, logout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shof_login_in_a_real_browser_keeps_the_person_from_launch_to_logout() {
    if !needs(missing()) {
        return;
    }
    let out = fresh_output_dir("browser-test-shof");
    let shof = ShofFixture::start_at("localhost", |builder, _| builder).await;
    let guard = shof.guard.url("").replace("127.0.0.1", "localhost");
    let token = shof.token();
    run_script(
        "shof.mjs",
        &[
            ("GUARD_URL", guard.as_str()),
            ("FHIR_BASE", shof.auth.fhir_base().as_str()),
            ("TOKEN", token.as_str()),
            ("AUTHORIZE", shof.auth.authorization_endpoint().as_str()),
            ("CALLBACK", CALLBACK),
            ("PERSON", "Practitioner/123"),
        ],
        &out,
    )
    .await;
    expect_screenshots(
        &out,
        &["shof-landing.png", "shof-second.png", "shof-logged-out.png"],
    );
    let authorizes = shof.auth.authorizes();
    assert_eq!(authorizes.len(), 1, "one login");
    assert_eq!(authorizes[0].refused, None);
    assert_eq!(shof.auth.token_requests(), 1);
    let metrics = shof.guard.metrics().await;
    assert_eq!(
        common::metrics::value(
            &metrics,
            "hti_guard_logins_total",
            &[("result", "accepted"), ("reason", "none")]
        ),
        1.0,
        "{metrics}"
    );
}

/// The guard's pages as a Dutch and an English browser shows them: an expired launch link,
/// a protected path without a session, the signed-out page; each with its title, its
/// sentence, the portal link and the reference, screenshotted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guards_pages_in_a_real_browser_in_dutch_and_english() {
    if !needs(missing()) {
        return;
    }
    const PORTAL: &str = "https://portal.example/home";
    let fx = Fixture::start_with(|b| {
        b.set("session.enabled", "true")
            .set_str(
                "session.secret",
                "c2Vzc2lvbi1zZWNyZXQtZm9yLXRoZS10ZXN0cy0wMTIzNDU2Nzg5",
            )
            .set("launch.methods", "[\"GET\", \"POST\"]")
            .set_str("pages.portal_url", PORTAL)
    })
    .await;
    let out = fresh_output_dir("pages-screenshots");
    let guard = fx.guard.url("");
    let mut claims = fx.claims();
    let now = mint::now();
    claims["iat"] = (now - 900).into();
    claims["exp"] = (now - 600).into();
    let expired = format!("/launch?token={}", fx.token(&claims));
    for lang in ["nl", "en"] {
        run_script(
            "pages.mjs",
            &[
                ("PAGE_LANG", lang),
                ("GUARD_URL", guard.as_str()),
                ("PORTAL_URL", PORTAL),
                ("EXPIRED_LAUNCH", expired.as_str()),
            ],
            &out,
        )
        .await;
    }
    expect_screenshots(
        &out,
        &[
            "error-nl.png",
            "session-nl.png",
            "logout-nl.png",
            "error-en.png",
            "session-en.png",
            "logout-en.png",
        ],
    );
    assert_eq!(fx.upstream.hits(), 0, "no page came from the upstream");
}
