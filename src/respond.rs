//! Every response the guard makes itself, in one place: the error page or JSON of a
//! rejection, the 303 after a launch, the logout page or redirect, and the module's JWKS.
//! Each is a `Response<Full<Bytes>>` (linkerd2-proxy's responder is generic over the body
//! the same way); the caller wraps it in its own body type. The pages' words, frame and the
//! operator's templates are in `pages`.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::config::{Lang, Page, PagesConfig};
use crate::error::{ErrorFormat, Reason};
use crate::headers::X_REQUEST_ID;
use crate::pages::{self, Values};

pub(crate) use crate::pages::escape_html;

/// A response the guard made.
pub(crate) type Made = Response<Full<Bytes>>;

/// What the guard's pages may load: their own inline style, images inlined as `data:`.
const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

fn made(status: StatusCode, body: impl Into<Bytes>) -> Made {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

/// The headers of every page: HTML, in `lang`, never cached or sniffed, loading nothing.
fn page_headers(response: &mut Made, lang: Lang) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_LANGUAGE,
        HeaderValue::from_static(lang.as_str()),
    );
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Language"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
}

/// The response for a rejected request: JSON for an API client, else the error page (the
/// no-session page for `no_session`) in `lang`. `allow` lists the methods for a 405.
pub(crate) fn error(
    pages: &PagesConfig,
    reason: Reason,
    reference: &str,
    format: ErrorFormat,
    lang: Lang,
    allow: Option<&str>,
) -> Made {
    let status = reason.status();
    let mut response = match format {
        ErrorFormat::Json => {
            let body = serde_json::json!({
                "error": reason.as_str(),
                "message": reason.message(),
                "reference": reference,
            })
            .to_string();
            let mut r = made(status, body);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        ErrorFormat::Html => {
            let values = Values {
                words: pages::words(reason, lang),
                reference,
                status: status.as_u16(),
                reason: reason.as_str(),
            };
            let body = pages::render(pages, pages::page_of(reason), lang, &values);
            let mut r = made(status, body);
            page_headers(&mut r, lang);
            r
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(value) = HeaderValue::from_str(reference) {
        headers.insert(X_REQUEST_ID, value);
    }
    if let Some(allow) = allow.and_then(|a| HeaderValue::from_str(a).ok()) {
        headers.insert(header::ALLOW, allow);
    }
    response
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
/// or the signed-out page in `lang`; `reference` as `X-Request-Id`.
pub(crate) fn logged_out(
    pages: &PagesConfig,
    lang: Lang,
    reference: &str,
    to: Option<&str>,
    clear: HeaderValue,
) -> Made {
    let mut response = match to {
        Some(to) => {
            let mut r = made(StatusCode::SEE_OTHER, Bytes::new());
            if let Ok(to) = HeaderValue::from_str(to) {
                r.headers_mut().insert(header::LOCATION, to);
            }
            r
        }
        None => {
            let values = Values {
                words: pages::logout_words(lang),
                reference,
                status: 200,
                reason: "",
            };
            let mut r = made(
                StatusCode::OK,
                pages::render(pages, Page::Logout, lang, &values),
            );
            page_headers(&mut r, lang);
            r.headers_mut().insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            r
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::SET_COOKIE, clear);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The reference the page shows, as on an error.
    if let Ok(value) = HeaderValue::from_str(reference) {
        headers.insert(X_REQUEST_ID, value);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn body(made: Made) -> String {
        use http_body_util::BodyExt;
        let collected = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(made.into_body().collect())
            .unwrap();
        String::from_utf8(collected.to_bytes().to_vec()).unwrap()
    }

    #[test]
    fn json_stays_english_and_pages_say_their_language() {
        let pages = PagesConfig::default();
        let json = error(
            &pages,
            Reason::NoSession,
            "r-1",
            ErrorFormat::Json,
            Lang::Nl,
            None,
        );
        assert!(json.headers().get(header::VARY).is_none());
        let json: serde_json::Value = serde_json::from_str(&body(json)).unwrap();
        assert_eq!(json["message"], Reason::NoSession.message());
        let html = error(
            &pages,
            Reason::NoSession,
            "r-1",
            ErrorFormat::Html,
            Lang::Nl,
            None,
        );
        assert_eq!(html.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(html.headers()[header::VARY], "Accept-Language");
        assert_eq!(html.headers()[header::CONTENT_LANGUAGE], "nl");
        assert_eq!(html.headers()[X_REQUEST_ID], "r-1");
        assert!(body(html).contains("<h1>Uw sessie is verlopen</h1>"));
    }

    #[test]
    fn every_page_shares_one_frame() {
        let pages = PagesConfig::default();
        let error = body(error(
            &pages,
            Reason::Expired,
            "r-1",
            ErrorFormat::Html,
            Lang::En,
            None,
        ));
        let clear = HeaderValue::from_static("x=; Max-Age=0");
        let logout = body(logged_out(&pages, Lang::En, "r-2", None, clear));
        for page in [&error, &logout] {
            assert_eq!(page.matches("<style>").count(), 1, "{page}");
            assert!(page.starts_with("<!doctype html>"), "{page}");
        }
    }
}
