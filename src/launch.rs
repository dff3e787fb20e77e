//! Finding a launch: is this request one, and which token does it carry. Pure functions
//! over the method, path and form fields, so every rule is tested without sockets.

use std::borrow::Cow;

use http::Method;

use crate::config::LaunchConfig;
use crate::error::{Reason, Rejection};

/// What a request is, as far as launches go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Not on a launch path: proxied as it is.
    Passthrough,
    /// A launch: the token is read from the form body.
    FormPost,
    /// A launch: the token is read from the query.
    Query,
    /// A launch path with a method not in `launch.methods`.
    MethodNotAllowed,
}

/// Classify a request by its method and path.
pub fn classify(method: &Method, path: &str, cfg: &LaunchConfig) -> Kind {
    if !cfg.paths.iter().any(|p| p == path) {
        return Kind::Passthrough;
    }
    if !cfg.methods.contains(method) {
        return Kind::MethodNotAllowed;
    }
    if *method == Method::GET {
        Kind::Query
    } else {
        Kind::FormPost
    }
}

/// The `Allow` header value for a 405 on a launch path.
pub fn allow_header(cfg: &LaunchConfig) -> String {
    cfg.methods
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a Content-Type is a urlencoded form.
pub fn is_form(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|media| {
            media
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// The token fields of a form and the rest of it, re-encoded without them.
#[derive(Debug, PartialEq, Eq)]
pub struct Extracted {
    pub token: String,
    /// The form (or query) without the token fields, in the original order.
    pub rest: String,
}

/// Walk a urlencoded form: hand each token field's value to `on_token`, and re-encode the
/// other fields in their order ("" when none is left).
fn split_form<'a>(
    form: &'a [u8],
    fields: &[String],
    mut on_token: impl FnMut(Cow<'a, str>) -> Result<(), Rejection>,
) -> Result<String, Rejection> {
    let mut rest = form_urlencoded::Serializer::new(String::new());
    let mut kept = false;
    for (name, value) in form_urlencoded::parse(form) {
        if fields.iter().any(|f| f.as_str() == name) {
            on_token(value)?;
        } else {
            rest.append_pair(&name, &value);
            kept = true;
        }
    }
    Ok(if kept { rest.finish() } else { String::new() })
}

/// Read the token from urlencoded `form`: every token field is read, and all that carry a
/// non-empty value must agree (`conflicting_tokens` otherwise). Returns the form re-encoded
/// without the token fields.
pub fn extract(form: &[u8], fields: &[String]) -> Result<Extracted, Rejection> {
    let mut token: Option<Cow<'_, str>> = None;
    let rest = split_form(form, fields, |value| {
        if value.is_empty() {
            return Ok(());
        }
        match &token {
            Some(t) if *t != value => Err(Rejection::new(
                Reason::ConflictingTokens,
                "two token fields carry different tokens",
            )),
            Some(_) => Ok(()),
            None => {
                token = Some(value);
                Ok(())
            }
        }
    })?;
    let token = token.ok_or_else(|| Rejection::new(Reason::MissingToken, "no token field"))?;
    Ok(Extracted {
        token: token.trim().to_owned(),
        rest,
    })
}

/// The query without any token fields, or `None` when it has none (left as it came). A
/// token in the query of a POST launch is not read, but it is not passed on either.
pub fn strip_token_fields(query: &str, fields: &[String]) -> Option<String> {
    let mut found = false;
    let rest = split_form(query.as_bytes(), fields, |_| {
        found = true;
        Ok(())
    })
    .ok()?;
    found.then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(methods: &[Method]) -> LaunchConfig {
        LaunchConfig {
            paths: vec!["/launch".into(), "/hti/launch".into()],
            audience: vec!["a".into()],
            token_fields: vec!["token".into(), "launch".into()],
            methods: methods.to_vec(),
            max_lifetime: Duration::from_secs(300),
            clock_skew: Duration::from_secs(30),
            hti_versions: vec!["2.0".into()],
            max_body: 65536,
        }
    }

    #[test]
    fn launches_are_exact_paths_with_accepted_methods() {
        let post = cfg(&[Method::POST]);
        assert_eq!(classify(&Method::POST, "/launch", &post), Kind::FormPost);
        assert_eq!(
            classify(&Method::POST, "/hti/launch", &post),
            Kind::FormPost
        );
        assert_eq!(
            classify(&Method::POST, "/launch/", &post),
            Kind::Passthrough
        );
        assert_eq!(
            classify(&Method::POST, "/launcher", &post),
            Kind::Passthrough
        );
        assert_eq!(
            classify(&Method::GET, "/launch", &post),
            Kind::MethodNotAllowed
        );
        assert_eq!(
            classify(&Method::PUT, "/launch", &post),
            Kind::MethodNotAllowed
        );
        let both = cfg(&[Method::POST, Method::GET]);
        assert_eq!(classify(&Method::GET, "/launch", &both), Kind::Query);
        assert_eq!(allow_header(&both), "POST, GET");
    }

    fn fields() -> Vec<String> {
        vec!["token".into(), "launch".into()]
    }

    #[test]
    fn token_from_either_field_and_the_rest_kept() {
        let e = extract(
            b"token=abc.def.ghi&iss=https%3A%2F%2Ffhir.example%2F",
            &fields(),
        )
        .unwrap();
        assert_eq!(e.token, "abc.def.ghi");
        assert_eq!(e.rest, "iss=https%3A%2F%2Ffhir.example%2F");
        let e = extract(b"launch=t1&iss=x&token=t1", &fields()).unwrap();
        assert_eq!(e.token, "t1");
        assert_eq!(e.rest, "iss=x");
        let e = extract(b"launch=t2", &fields()).unwrap();
        assert_eq!((e.token.as_str(), e.rest.as_str()), ("t2", ""));
    }

    #[test]
    fn missing_and_conflicting_tokens() {
        let reason = |form: &[u8]| extract(form, &fields()).unwrap_err().reason;
        assert_eq!(reason(b""), Reason::MissingToken);
        assert_eq!(reason(b"iss=x"), Reason::MissingToken);
        assert_eq!(reason(b"token=&launch="), Reason::MissingToken);
        assert_eq!(reason(b"token=a&launch=b"), Reason::ConflictingTokens);
        assert_eq!(reason(b"token=a&token=b"), Reason::ConflictingTokens);
    }

    #[test]
    fn token_fields_are_stripped_from_a_query() {
        assert_eq!(
            strip_token_fields("a=1&token=x&b=2", &fields()).as_deref(),
            Some("a=1&b=2")
        );
        assert_eq!(
            strip_token_fields("launch=x", &fields()).as_deref(),
            Some("")
        );
        assert_eq!(strip_token_fields("a=%2F&b", &fields()), None);
    }

    #[test]
    fn form_content_types() {
        assert!(is_form(Some("application/x-www-form-urlencoded")));
        assert!(is_form(Some(
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8"
        )));
        assert!(!is_form(Some("multipart/form-data; boundary=x")));
        assert!(!is_form(None));
    }
}
