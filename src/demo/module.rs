//! The demo module app: the upstream behind the guard. It knows nothing of JWTs; it shows
//! the `X-HTI-*` headers it received, the decoded `X-HTI-Claims`, and, when asked, proves
//! that headers a client tries to spoof never reach it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::page::{self, esc};
use crate::headers;
use crate::proxy::Body;

const ACCENT: &str = "#1b7f3b";

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

/// Answer one request to the module app.
pub async fn handle(request: Request<Incoming>) -> Response<Body> {
    if request.uri().path() == "/echo" {
        let received: serde_json::Map<String, Value> = reserved_headers(request.headers())
            .into_iter()
            .map(|(k, v)| (k, json!(v)))
            .collect();
        return page::json(&json!({ "x_hti_headers_received": received }));
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let received = reserved_headers(request.headers());
    let claims = request
        .headers()
        .get(&headers::X_HTI_CLAIMS)
        .and_then(|v| URL_SAFE_NO_PAD.decode(v.as_bytes()).ok())
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
    let form: Vec<(String, String)> =
        match Limited::new(request.into_body(), 64 * 1024).collect().await {
            Ok(body) => form_urlencoded::parse(&body.to_bytes())
                .into_owned()
                .collect(),
            Err(_) => Vec::new(),
        };
    page::html(
        StatusCode::OK,
        render(&method, &path, &received, claims.as_ref(), &form),
    )
}

fn render(
    method: &http::Method,
    path: &str,
    received: &[(String, String)],
    claims: Option<&Value>,
    form: &[(String, String)],
) -> String {
    let sub = received.iter().find(|(k, _)| k == "x-hti-sub");
    let mut body = String::new();
    match sub {
        Some((_, sub)) => body.push_str(&format!(
            "<p class=\"ok\">Verified launch for <code>{}</code>.</p>\
             <p>hti-guard checked the token (signature with the portal's key, every HTI claim, \
             single use) and passed the result on as headers. The module only reads them.</p>",
            esc(sub)
        )),
        None => body.push_str(
            "<p class=\"bad\">No verified launch on this request.</p>\
             <p>Start the module from the demo portal: hti-guard only sets the <code>X-HTI-*</code> \
             headers on a launch it has verified.</p>",
        ),
    }
    body.push_str(&format!(
        "<h2>What the module received</h2><p class=\"muted\"><code>{} {}</code></p>",
        esc(method.as_str()),
        esc(path)
    ));
    if !received.is_empty() {
        body.push_str("<table>");
        for (name, value) in received {
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
    if let Some(claims) = claims {
        let pretty = serde_json::to_string_pretty(claims).unwrap_or_default();
        body.push_str(&format!(
            "<h2>X-HTI-Claims, decoded</h2><pre>{}</pre>",
            esc(&pretty)
        ));
    }
    if !form.is_empty() || *method == http::Method::POST {
        body.push_str("<h2>Form fields received</h2>");
        if form.is_empty() {
            body.push_str(
                "<p class=\"muted\">None: the guard removed the token field before forwarding.</p>",
            );
        } else {
            body.push_str("<table>");
            for (name, value) in form {
                body.push_str(&format!(
                    "<tr><th>{}</th><td><code>{}</code></td></tr>",
                    esc(name),
                    esc(value)
                ));
            }
            body.push_str(
                "</table><p class=\"muted\">The token field itself never reaches the module.</p>",
            );
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

/// A button that sends spoofed claim headers through the guard and shows what arrived.
const SPOOF_SECTION: &str = r#"<h2>What the module did not receive</h2>
<p>A client can try to send the trusted headers itself. This button asks the module for
<code>/echo</code> through the guard with <code>X-HTI-Sub: Patient/mallory</code>,
<code>X-HTI-Iss: https://evil.example</code> and <code>X_HTI_Resource: Task/stolen</code>.</p>
<button id="spoof" class="secondary">Try to spoof the headers</button>
<pre id="spoof-result" class="muted">(not tried yet)</pre>
<script>
document.getElementById('spoof').addEventListener('click', async () => {
  const out = document.getElementById('spoof-result');
  try {
    const r = await fetch('/echo', {headers: {'X-HTI-Sub': 'Patient/mallory',
      'X-HTI-Iss': 'https://evil.example', 'X_HTI_Resource': 'Task/stolen'}});
    const got = (await r.json()).x_hti_headers_received;
    const names = Object.keys(got);
    out.textContent = names.length === 0
      ? 'Sent 3 spoofed headers; the module received none of them: hti-guard removed them.'
      : 'The module received: ' + JSON.stringify(got);
  } catch (e) { out.textContent = 'Request failed: ' + e; }
});
</script>"#;
