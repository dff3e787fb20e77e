//! A browser's cookie handling, by hand: [`Browser`] keeps the cookies one origin sets (name,
//! path, removal by `Max-Age=0` or an empty value) and sends those whose path matches, and
//! never follows a redirect, so that a test asserts every hop of a login.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::{Client, RequestBuilder, Response};

use super::guard::{client, within};

const LIMIT: Duration = Duration::from_secs(60);

/// One `Set-Cookie` header, parsed.
#[derive(Clone, Debug)]
pub struct SetCookie {
    pub name: String,
    pub value: String,
    /// The attributes in order, names as sent, values when given.
    pub attributes: Vec<(String, Option<String>)>,
    pub raw: String,
}

impl SetCookie {
    pub fn parse(header: &str) -> Option<SetCookie> {
        let mut parts = header.split(';');
        let (name, value) = parts.next()?.split_once('=')?;
        let attributes = parts
            .map(|part| match part.split_once('=') {
                Some((key, value)) => (key.trim().to_string(), Some(value.trim().to_string())),
                None => (part.trim().to_string(), None),
            })
            .collect();
        Some(SetCookie {
            name: name.trim().to_string(),
            value: value.trim().to_string(),
            attributes,
            raw: header.to_string(),
        })
    }

    /// The value of attribute `name` (case-insensitive); `Some("")` for a flag.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_deref().unwrap_or(""))
    }

    /// The `Path` attribute, `/` when absent.
    pub fn path(&self) -> &str {
        self.attribute("path").unwrap_or("/")
    }

    /// Whether this header removes the cookie rather than setting it.
    pub fn clears(&self) -> bool {
        self.value.is_empty()
            || self
                .attribute("max-age")
                .is_some_and(|age| age.parse::<i64>().is_ok_and(|age| age <= 0))
            || self
                .attribute("expires")
                .is_some_and(|date| date.contains("1970"))
    }
}

/// The `Set-Cookie` headers of `response`.
pub fn set_cookies(response: &Response) -> Vec<SetCookie> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(SetCookie::parse)
        .collect()
}

/// RFC 6265 path-match.
fn path_matches(request_path: &str, cookie_path: &str) -> bool {
    request_path == cookie_path
        || (request_path.starts_with(cookie_path)
            && (cookie_path.ends_with('/')
                || request_path.as_bytes().get(cookie_path.len()) == Some(&b'/')))
}

/// A cookie-keeping client for one origin (`http://host:port`). Requests elsewhere go out
/// without cookies and what they set is ignored. Redirects are never followed.
pub struct Browser {
    pub client: Client,
    origin: String,
    jar: Mutex<Vec<SetCookie>>,
}

impl Browser {
    pub fn new(origin: &str) -> Browser {
        Browser {
            client: client(),
            origin: origin.trim_end_matches('/').to_string(),
            jar: Mutex::new(Vec::new()),
        }
    }

    /// The cookies kept now.
    pub fn cookies(&self) -> Vec<SetCookie> {
        self.jar.lock().unwrap().clone()
    }

    /// The kept cookie `name`, if any.
    pub fn cookie(&self, name: &str) -> Option<SetCookie> {
        self.cookies()
            .into_iter()
            .find(|cookie| cookie.name == name)
    }

    /// Keeps `cookie` as if the origin had set it (e.g. one copied from another browser).
    pub fn keep(&self, cookie: SetCookie) {
        let mut jar = self.jar.lock().unwrap();
        jar.retain(|kept| !(kept.name == cookie.name && kept.path() == cookie.path()));
        if !cookie.clears() {
            jar.push(cookie);
        }
    }

    /// GET `url` with this `Accept`.
    pub async fn get(&self, url: &str, accept: &str) -> Response {
        self.send(url, self.client.get(url).header("accept", accept))
            .await
    }

    /// POST a form to `url` with this `Accept`.
    pub async fn post_form(&self, url: &str, fields: &[(&str, &str)], accept: &str) -> Response {
        let request = self
            .client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", accept)
            .body(super::guard::form(fields));
        self.send(url, request).await
    }

    /// Sends `request` (to `url`) with the matching cookies, keeps what the answer sets.
    pub async fn send(&self, url: &str, mut request: RequestBuilder) -> Response {
        let ours = url.starts_with(&self.origin)
            && matches!(
                url.as_bytes().get(self.origin.len()),
                None | Some(b'/' | b'?')
            );
        if ours {
            let path = url[self.origin.len()..]
                .split(['?', '#'])
                .next()
                .unwrap_or("");
            let path = if path.is_empty() { "/" } else { path };
            let header: Vec<String> = self
                .cookies()
                .iter()
                .filter(|cookie| path_matches(path, cookie.path()))
                .map(|cookie| format!("{}={}", cookie.name, cookie.value))
                .collect();
            if !header.is_empty() {
                request = request.header("cookie", header.join("; "));
            }
        }
        let response = within(LIMIT, url, request.send())
            .await
            .unwrap_or_else(|error| panic!("{url}: {error}"));
        if ours {
            for cookie in set_cookies(&response) {
                self.keep(cookie);
            }
        }
        response
    }
}
