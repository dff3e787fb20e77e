//! The demo's shared HTML frame and response helpers.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

pub(super) use crate::respond::escape_html as esc;

const STYLE: &str = "
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:54rem;margin:2rem auto;padding:0 1rem;color:#1d2733;line-height:1.45}
header{border-bottom:3px solid var(--accent);margin-bottom:1.5rem}
header p{color:#5a6b7b;margin-top:-.5rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem}
.card{border:1px solid #d5dde5;border-radius:8px;padding:1rem 1.2rem;margin:1rem 0}
.card h3{margin:.2rem 0 .4rem;font-size:1.05rem}
.muted{color:#5a6b7b;font-size:.92rem}
button{font:inherit;padding:.45rem .9rem;border-radius:6px;border:1px solid var(--accent);background:var(--accent);color:#fff;cursor:pointer;margin:.2rem .3rem .2rem 0}
button.secondary{background:#fff;color:var(--accent)}
button.danger{background:#fff;color:#a4262c;border-color:#a4262c}
form{display:inline}
table{border-collapse:collapse;width:100%;margin:.5rem 0}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #e3e8ee;vertical-align:top}
th{width:12rem;font-weight:600}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.88rem}
pre{background:#f4f6f8;padding:.8rem;border-radius:6px;overflow-x:auto}
.ok{color:#1b7f3b;font-weight:600}.bad{color:#a4262c;font-weight:600}
";

/// A response of the demo's servers.
pub(super) type Reply = Response<Full<Bytes>>;

/// A whole page: `accent` colours the frame so the three parts look apart.
pub(super) fn page(title: &str, subtitle: &str, accent: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>:root{{--accent:{accent}}}{STYLE}</style></head>\
         <body><header><h1>{title}</h1><p>{subtitle}</p></header>\n{body}\n</body></html>\n",
        title = esc(title),
        subtitle = esc(subtitle),
    )
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub(super) fn html(status: StatusCode, body: String) -> Reply {
    respond(status, "text/html; charset=utf-8", body)
}

pub(super) fn json(value: &serde_json::Value) -> Reply {
    respond(StatusCode::OK, "application/json", value.to_string())
}

pub(super) fn not_found() -> Reply {
    respond(StatusCode::NOT_FOUND, "text/plain", "not found\n")
}
