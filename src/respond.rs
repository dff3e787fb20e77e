//! Every response the guard makes itself, in one place: the error page or JSON of a
//! rejection, the 303 after a launch, the logout page or redirect, and the module's JWKS.
//! Each is a `Response<Full<Bytes>>` (linkerd2-proxy's responder is generic over the body
//! the same way); the caller wraps it in its own body type. The HTML frame and its style
//! exist once.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::error::{ErrorFormat, Reason};
use crate::headers::X_REQUEST_ID;

/// A response the guard made.
pub(crate) type Made = Response<Full<Bytes>>;

/// The one HTML frame of the guard's own pages: `title` and `body` (already escaped HTML).
fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}}\
         .ref{{color:#666;font-size:.9rem}}</style></head>\
         <body><h1>{title}</h1>{body}</body></html>\n",
        title = escape_html(title),
    )
}

fn made(status: StatusCode, body: impl Into<Bytes>) -> Made {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

/// The response for a rejected request. `allow` lists the methods for a 405.
pub(crate) fn error(
    reason: Reason,
    reference: &str,
    format: ErrorFormat,
    allow: Option<&str>,
) -> Made {
    let (content_type, body) = match format {
        ErrorFormat::Json => (
            "application/json",
            serde_json::json!({
                "error": reason.as_str(),
                "message": reason.message(),
                "reference": reference,
            })
            .to_string(),
        ),
        ErrorFormat::Html => ("text/html; charset=utf-8", error_page(reason, reference)),
    };
    let mut response = made(reason.status(), body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if format == ErrorFormat::Html {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
        );
    }
    if let Ok(value) = HeaderValue::from_str(reference) {
        headers.insert(X_REQUEST_ID, value);
    }
    if let Some(allow) = allow.and_then(|a| HeaderValue::from_str(a).ok()) {
        headers.insert(header::ALLOW, allow);
    }
    response
}

fn error_page(reason: Reason, reference: &str) -> String {
    let title = reason.status().canonical_reason().unwrap_or("Error");
    page(
        title,
        &format!(
            "<p>{message}</p><p class=\"ref\">Reference: <code>{reference}</code></p>",
            message = escape_html(reason.message()),
            reference = escape_html(reference),
        ),
    )
}

/// `303 See Other` to `location`, setting `cookie` (the session after a launch).
pub(crate) fn see_other(location: &str, cookie: HeaderValue) -> Made {
    let mut response = made(StatusCode::SEE_OTHER, Bytes::new());
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, location);
    }
    headers.insert(header::SET_COOKIE, cookie);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// After logout: `clear` (the cookie that removes the session) set, then a redirect to `to`
/// or a page.
pub(crate) fn logged_out(to: Option<&str>, clear: HeaderValue) -> Made {
    let mut response = match to {
        Some(to) => {
            let mut r = made(StatusCode::SEE_OTHER, Bytes::new());
            if let Ok(to) = HeaderValue::from_str(to) {
                r.headers_mut().insert(header::LOCATION, to);
            }
            r
        }
        None => {
            let body = page(
                "Signed out",
                "<p>You have left the module. To use it again, start it from your portal.</p>",
            );
            let mut r = made(StatusCode::OK, body);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::SET_COOKIE, clear);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The module's public JWKS document.
pub(crate) fn jwks(document: Bytes, cache_control: HeaderValue) -> Made {
    let mut response = made(StatusCode::OK, document);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    headers.insert(header::CACHE_CONTROL, cache_control);
    response
}

/// Escape text for HTML content and attribute values.
pub(crate) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_the_reference() {
        let page = error_page(Reason::Expired, "<script>");
        assert!(page.contains("&lt;script&gt;"));
        assert!(!page.contains("<script>"));
    }

    #[test]
    fn every_page_shares_one_frame() {
        let error = error_page(Reason::NoSession, "r-1");
        let logout = logged_out(None, HeaderValue::from_static("x=; Max-Age=0"));
        let logout = String::from_utf8(futures_body(logout.into_body())).unwrap();
        for page in [&error, &logout] {
            assert_eq!(page.matches("<style>").count(), 1, "{page}");
            assert!(page.starts_with("<!doctype html>"), "{page}");
        }
    }

    fn futures_body(body: Full<Bytes>) -> Vec<u8> {
        use http_body_util::BodyExt;
        let collected = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(body.collect())
            .unwrap();
        collected.to_bytes().to_vec()
    }
}
