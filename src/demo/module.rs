//! The demo module app: the upstream behind the guard. It knows nothing of JWTs or cookies;
//! every page reads the `X-HTI-*` headers the guard sets, on the launch's landing page and
//! on every later request of the visit (the guard's session). Its pages:
//!
//! - `/task/<id>`: the landing page after a launch: the person, the task, the decoded
//!   `X-HTI-Claims`, and the spoof demonstration
//! - `/task/<id>/answers`: a second page with a form (GET and POST), the same person
//! - `/echo`: the reserved headers that arrived, as JSON (for the spoof demonstration)
//! - anything else: what the module received
//!
//! A page reached without the headers (the module's own port, bypassing the guard) says so.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::LOGOUT_PATH;
use super::page::{self, esc};
use crate::headers;

const ACCENT: &str = "#1b7f3b";

/// The answers a person can give on the second page.
const ANSWERS: [&str; 3] = ["Well", "So-so", "Badly"];

/// The headers this request carried that the guard reserves (`x-hti-*`, `_` aliases too).
fn reserved_headers(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .filter(|(name, _)| headers::is_reserved(name))
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or("(not text)").to_owned(),
            )
        })
        .collect()
}

/// What one request brought the module: the reserved headers, the decoded claims and the
/// names of the cookies it carried.
struct Visit {
    received: Vec<(String, String)>,
    claims: Option<Value>,
    cookies: Vec<String>,
}

impl Visit {
    fn from_headers(h: &HeaderMap) -> Visit {
        let claims = h
            .get(&headers::X_HTI_CLAIMS)
            .and_then(|v| URL_SAFE_NO_PAD.decode(v.as_bytes()).ok())
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
        let cookies = h
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.split_once('=').map(|(name, _)| name.trim().to_owned()))
            .filter(|name| !name.is_empty())
            .collect();
        Visit {
            received: reserved_headers(h),
            claims,
            cookies,
        }
    }

    /// One verified header's value (`x-hti-sub`, ...).
    fn get(&self, name: &str) -> Option<&str> {
        self.received
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Answer one request to the module app.
pub(super) async fn handle(request: Request<Incoming>) -> page::Reply {
    let path = request.uri().path().to_owned();
    if path == "/echo" {
        let received: serde_json::Map<String, Value> = reserved_headers(request.headers())
            .into_iter()
            .map(|(k, v)| (k, json!(v)))
            .collect();
        return page::json(&json!({ "x_hti_headers_received": received }));
    }
    if path == "/favicon.ico" {
        return page::not_found();
    }
    let method = request.method().clone();
    let visit = Visit::from_headers(request.headers());
    let form: Vec<(String, String)> =
        match Limited::new(request.into_body(), 64 * 1024).collect().await {
            Ok(body) => form_urlencoded::parse(&body.to_bytes())
                .into_owned()
                .collect(),
            Err(_) => Vec::new(),
        };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let body = match segments.as_slice() {
        ["task", id] if !id.is_empty() && method == Method::GET => task_page(&visit, id),
        ["task", id, "answers"] if !id.is_empty() => answers_page(&visit, id, &method, &form),
        _ => other_page(&visit, &method, &path, &form),
    };
    page::html(StatusCode::OK, body)
}

/// Who this request is for, from the verified headers, or a warning that there are none.
/// `task_id` is the task the page is about, checked against `X-HTI-Resource`.
fn identity(visit: &Visit, task_id: Option<&str>) -> String {
    let Some(sub) = visit.get("x-hti-sub") else {
        return "<p class=\"bad\" id=\"no-launch\">No verified launch on this request.</p>\
                <p>This page was reached without the <code>X-HTI-*</code> headers that \
                hti-guard sets, so the module does not know who you are. Start the module \
                from the demo portal: hti-guard sets them on a launch it has verified and on \
                every request of the session that follows.</p>"
            .to_owned();
    };
    let mut out = format!(
        "<p class=\"ok\" id=\"person\">Verified: you are <code>{}</code>.</p><table>",
        esc(sub)
    );
    for (label, name) in [
        ("person", "x-hti-sub"),
        ("task", "x-hti-resource"),
        ("patient", "x-hti-patient"),
        ("activity", "x-hti-definition"),
        ("intent", "x-hti-intent"),
        ("portal", "x-hti-iss"),
    ] {
        if let Some(value) = visit.get(name) {
            out.push_str(&format!(
                "<tr><th>{label}</th><td><code id=\"{name}\">{}</code></td></tr>",
                esc(value)
            ));
        }
    }
    out.push_str("</table>");
    if let Some(id) = task_id {
        let resource = visit.get("x-hti-resource").unwrap_or("");
        if resource.rsplit('/').next() != Some(id) {
            out.push_str(&format!(
                "<p class=\"bad\" id=\"other-task\">This visit was launched for <code>{}</code>, \
                 not for task <code>{}</code>. Deciding what a person may see is the module's \
                 job: hti-guard only tells it who they are.</p>",
                esc(resource),
                esc(id)
            ));
        }
    }
    out
}

/// Links between the pages, and the guard's logout.
fn nav(links: &[(&str, String, &str)]) -> String {
    let mut out = String::from("<p class=\"nav\">");
    for (id, href, text) in links {
        out.push_str(&format!(
            "<a id=\"{id}\" href=\"{}\">{}</a> · ",
            esc(href),
            esc(text)
        ));
    }
    out.push_str(&format!(
        "<a id=\"logout\" href=\"{LOGOUT_PATH}\">Log out</a> \
         <span class=\"muted\">(ends the guard's session)</span></p>"
    ));
    out
}

fn task_page(visit: &Visit, id: &str) -> String {
    let mut body = identity(visit, Some(id));
    body.push_str(&format!("<h2>Task <code>{}</code></h2>", esc(id)));
    if visit.get("x-hti-sub").is_some() {
        body.push_str(
            "<p>hti-guard verified the launch (signature with the portal's key, every HTI \
             claim, single use), kept the result in its session cookie and sent your browser \
             here. This request, a reload and every later page of this visit carry the same \
             verified headers; the module only reads them.</p>",
        );
    }
    body.push_str(&nav(&[(
        "answers",
        format!("/task/{id}/answers"),
        "Fill in the task",
    )]));
    body.push_str(&received(visit));
    body.push_str(SPOOF_SECTION);
    page::page(
        "Demo module",
        "The application behind hti-guard",
        ACCENT,
        &body,
    )
}

fn answers_page(visit: &Visit, id: &str, method: &Method, form: &[(String, String)]) -> String {
    let mut body = identity(visit, Some(id));
    body.push_str(&format!(
        "<h2>Task <code>{}</code>: your answers</h2>",
        esc(id)
    ));
    let answer = form
        .iter()
        .find(|(k, _)| k == "answer")
        .map(|(_, v)| v.as_str());
    match (method, answer) {
        (&Method::POST, Some(answer)) => body.push_str(&format!(
            "<p class=\"ok\" id=\"saved\">Saved “{}” for <code>{}</code>.</p>\
             <p class=\"muted\">The demo keeps nothing; a real module would store the answer \
             for the person in <code>X-HTI-Sub</code>, which the guard set on this POST as \
             on every request of the session.</p>",
            esc(answer),
            esc(visit.get("x-hti-sub").unwrap_or("nobody")),
        )),
        _ => {
            body.push_str(&format!(
                "<p>A second page of the module: the person above came with this request \
                 too, without a new launch.</p>\
                 <form method=\"post\" action=\"/task/{}/answers\"><label>How did it go? \
                 <select name=\"answer\">",
                esc(id)
            ));
            for a in ANSWERS {
                body.push_str(&format!("<option>{a}</option>"));
            }
            body.push_str("</select></label> <button id=\"save\">Save</button></form>");
        }
    }
    body.push_str(&nav(&[("task", format!("/task/{id}"), "Back to the task")]));
    page::page(
        "Demo module",
        "The application behind hti-guard",
        ACCENT,
        &body,
    )
}

/// Any other path: what the module received, with the form fields of a POST.
fn other_page(visit: &Visit, method: &Method, path: &str, form: &[(String, String)]) -> String {
    let mut body = identity(visit, None);
    let task = visit
        .get("x-hti-resource")
        .and_then(|r| r.rsplit('/').next())
        .map(|id| ("task", format!("/task/{id}"), "Go to your task"));
    body.push_str(&nav(task.as_slice()));
    body.push_str(&format!(
        "<h2>What the module received</h2><p class=\"muted\"><code>{} {}</code></p>",
        esc(method.as_str()),
        esc(path)
    ));
    body.push_str(&received(visit));
    if !form.is_empty() || *method == Method::POST {
        body.push_str("<h2>Form fields received</h2>");
        if form.is_empty() {
            body.push_str("<p class=\"muted\">None.</p>");
        } else {
            body.push_str("<table>");
            for (name, value) in form {
                body.push_str(&format!(
                    "<tr><th>{}</th><td><code>{}</code></td></tr>",
                    esc(name),
                    esc(value)
                ));
            }
            body.push_str("</table>");
        }
    }
    body.push_str(SPOOF_SECTION);
    page::page(
        "Demo module",
        "The application behind hti-guard",
        ACCENT,
        &body,
    )
}

/// The reserved headers that arrived, the decoded claims, and the cookies the module got.
fn received(visit: &Visit) -> String {
    let mut body = String::new();
    if !visit.received.is_empty() {
        body.push_str("<h2>Headers from hti-guard</h2><table>");
        for (name, value) in &visit.received {
            let shown = if name == "x-hti-claims" {
                format!("{}…", esc(&value.chars().take(48).collect::<String>()))
            } else {
                esc(value)
            };
            body.push_str(&format!(
                "<tr><th>{}</th><td><code>{shown}</code></td></tr>",
                esc(name)
            ));
        }
        body.push_str("</table>");
    }
    if let Some(claims) = &visit.claims {
        let pretty = serde_json::to_string_pretty(claims).unwrap_or_default();
        body.push_str(&format!(
            "<h2>X-HTI-Claims, decoded</h2><pre>{}</pre>",
            esc(&pretty)
        ));
    }
    let cookies = if visit.cookies.is_empty() {
        "none".to_owned()
    } else {
        visit
            .cookies
            .iter()
            .map(|c| format!("<code>{}</code>", esc(c)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    body.push_str(&format!(
        "<p class=\"muted\" id=\"cookies\">Cookies the module received: {cookies}. \
         The guard's session cookie stays with the guard.</p>"
    ));
    body
}

/// A button that sends spoofed claim headers through the guard and shows what arrived.
const SPOOF_SECTION: &str = r#"<h2>What the module did not receive</h2>
<p>A client can try to send the trusted headers itself. This button asks the module for
<code>/echo</code> through the guard with <code>X-HTI-Sub: Patient/mallory</code>,
<code>X-HTI-Iss: https://evil.example</code> and <code>X_HTI_Resource: Task/stolen</code>.</p>
<button id="spoof" class="secondary">Try to spoof the headers</button>
<pre id="spoof-result" class="muted" style="white-space:pre-wrap">(not tried yet)</pre>
<script>
document.getElementById('spoof').addEventListener('click', async () => {
  const out = document.getElementById('spoof-result');
  try {
    const r = await fetch('/echo', {headers: {'X-HTI-Sub': 'Patient/mallory',
      'X-HTI-Iss': 'https://evil.example', 'X_HTI_Resource': 'Task/stolen'}});
    if (!r.ok) { out.textContent = 'The guard answered ' + r.status + ': no session, nothing forwarded.'; return; }
    const got = (await r.json()).x_hti_headers_received;
    const spoofed = Object.values(got).filter(v =>
      ['Patient/mallory', 'https://evil.example', 'Task/stolen'].includes(v));
    out.textContent = spoofed.length === 0
      ? 'Sent 3 spoofed headers; the module received none of them: hti-guard removed them'
        + (got['x-hti-sub'] ? ' and set the verified ones (X-HTI-Sub: ' + got['x-hti-sub'] + ').' : '.')
      : 'The module received: ' + JSON.stringify(got);
  } catch (e) { out.textContent = 'Request failed: ' + e; }
});
</script>"#;
