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

/// Where a request goes, decided by its method and normalised path alone: the one `match`
/// of the proxy's stage order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// GET or HEAD on `module.jwks_path`: the module's public keys.
    ModuleJwks,
    /// GET or POST on `session.logout_path` (with sessions on).
    Logout,
    /// The SHOF callback (with `[shof]` on), any method: the guard serves it and never
    /// forwards it.
    Callback,
    /// A launch path: the kind of launch (or a method not accepted there).
    Launch(Kind),
    /// Everything else goes upstream.
    Passthrough,
}

/// The paths that route a request anywhere but upstream.
#[derive(Debug, Clone)]
pub struct Routes {
    launch: LaunchConfig,
    jwks_path: Option<String>,
    /// The logout path, and whether it matches regardless of case.
    logout: Option<(String, bool)>,
    /// The SHOF callback path, matched exactly.
    callback: Option<String>,
}

impl Routes {
    pub fn new(
        launch: LaunchConfig,
        jwks_path: Option<String>,
        logout: Option<(String, bool)>,
    ) -> Routes {
        Routes {
            launch,
            jwks_path,
            logout,
            callback: None,
        }
    }

    /// These routes with the SHOF callback at `path`.
    pub fn with_callback(mut self, path: Option<String>) -> Routes {
        self.callback = path;
        self
    }

    /// Route a request by its method and normalised path.
    pub fn route(&self, method: &Method, path: &str) -> Route {
        if self.jwks_path.as_deref() == Some(path)
            && (method == Method::GET || method == Method::HEAD)
        {
            return Route::ModuleJwks;
        }
        if self.callback.as_deref() == Some(path) {
            return Route::Callback;
        }
        if let Some((logout, fold)) = &self.logout
            && crate::config::path::same(path, logout, *fold)
            && (method == Method::GET || method == Method::POST)
        {
            return Route::Logout;
        }
        match classify(method, path, &self.launch) {
            Kind::Passthrough => Route::Passthrough,
            kind => Route::Launch(kind),
        }
    }

    /// The `Allow` header value for a 405 on a launch path.
    pub fn allow(&self) -> String {
        allow_header(&self.launch)
    }
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

/// The (name, value) pairs of a urlencoded form, exactly as `form_urlencoded::parse` gives
/// them, with a fast path for the usual field: one with neither `%` nor `+` (a JWT is
/// base64url and dots) decodes to its own bytes read as UTF-8, borrowed when they are
/// valid, so the ~700-byte token is scanned a few times with memchr instead of byte by byte
/// in three passes (plus, percent, UTF-8). A field with either goes the library's way.
struct Pairs<'a> {
    input: &'a [u8],
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (Cow<'a, str>, Cow<'a, str>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (sequence, rest) = match memchr::memchr(b'&', self.input) {
                Some(i) => (&self.input[..i], &self.input[i + 1..]),
                None if self.input.is_empty() => return None,
                None => (self.input, &[][..]),
            };
            self.input = rest;
            if sequence.is_empty() {
                continue;
            }
            if memchr::memchr2(b'%', b'+', sequence).is_some() {
                return form_urlencoded::parse(sequence).next();
            }
            let (name, value) = match memchr::memchr(b'=', sequence) {
                Some(i) => (&sequence[..i], &sequence[i + 1..]),
                None => (sequence, &[][..]),
            };
            return Some((
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(value),
            ));
        }
    }
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
    for (name, value) in (Pairs { input: form }) {
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
    fn routes_in_order() {
        let routes = Routes::new(
            cfg(&[Method::POST, Method::GET]),
            Some("/.well-known/jwks.json".into()),
            Some(("/hti-guard/logout".into(), true)),
        );
        let r = |m: Method, p: &str| routes.route(&m, p);
        assert_eq!(r(Method::GET, "/.well-known/jwks.json"), Route::ModuleJwks);
        assert_eq!(r(Method::HEAD, "/.well-known/jwks.json"), Route::ModuleJwks);
        assert_eq!(
            r(Method::POST, "/.well-known/jwks.json"),
            Route::Passthrough
        );
        assert_eq!(r(Method::GET, "/hti-guard/logout"), Route::Logout);
        assert_eq!(r(Method::POST, "/HTI-guard/Logout"), Route::Logout);
        assert_eq!(r(Method::PUT, "/hti-guard/logout"), Route::Passthrough);
        assert_eq!(r(Method::POST, "/launch"), Route::Launch(Kind::FormPost));
        assert_eq!(r(Method::GET, "/launch"), Route::Launch(Kind::Query));
        assert_eq!(
            r(Method::PUT, "/launch"),
            Route::Launch(Kind::MethodNotAllowed)
        );
        assert_eq!(r(Method::GET, "/app"), Route::Passthrough);
        let strict = Routes::new(
            cfg(&[Method::POST]),
            None,
            Some(("/hti-guard/logout".into(), false)),
        );
        assert_eq!(
            strict.route(&Method::GET, "/hti-guard/logout"),
            Route::Logout
        );
        assert_eq!(
            strict.route(&Method::GET, "/HTI-guard/logout"),
            Route::Passthrough
        );
        let bare = Routes::new(cfg(&[Method::POST]), None, None);
        assert_eq!(
            bare.route(&Method::GET, "/hti-guard/logout"),
            Route::Passthrough
        );
        assert_eq!(bare.allow(), "POST");
    }

    #[test]
    fn the_shof_callback_is_routed_for_every_method_and_only_its_path() {
        let routes = Routes::new(
            cfg(&[Method::POST, Method::GET]),
            None,
            Some(("/hti-guard/logout".into(), false)),
        )
        .with_callback(Some("/hti-guard/callback".into()));
        let r = |m: Method, p: &str| routes.route(&m, p);
        assert_eq!(r(Method::GET, "/hti-guard/callback"), Route::Callback);
        assert_eq!(r(Method::POST, "/hti-guard/callback"), Route::Callback);
        assert_eq!(r(Method::HEAD, "/hti-guard/callback"), Route::Callback);
        assert_eq!(r(Method::GET, "/hti-guard/callback/"), Route::Passthrough);
        assert_eq!(r(Method::GET, "/hti-guard/Callback"), Route::Passthrough);
        assert_eq!(r(Method::GET, "/launch"), Route::Launch(Kind::Query));
        assert_eq!(r(Method::GET, "/hti-guard/logout"), Route::Logout);
        let without = Routes::new(cfg(&[Method::POST]), None, None).with_callback(None);
        assert_eq!(
            without.route(&Method::GET, "/hti-guard/callback"),
            Route::Passthrough
        );
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

    /// Forms that take each path: %-escapes (of ASCII, of UTF-8, malformed, of `&`, `=` and
    /// `+`), '+', invalid UTF-8 raw and escaped, empty names, values and fields, '=' in a
    /// value, names without '=', repeated and conflicting token fields.
    fn tricky_forms() -> Vec<Vec<u8>> {
        let mut forms: Vec<Vec<u8>> = [
            &b""[..],
            b"&",
            b"&&token=a&&",
            b"=",
            b"==",
            b"token",
            b"token=",
            b"token=a=b=c",
            b"=a&token=b",
            b"token=abc.def-ghi_jkl&state=x",
            b"token=a+b&state=c+d",
            b"token=a%20b&state=%7e",
            b"tok%65n=x&launch=x",
            b"to+ken=x&token=y",
            b"token=%zz%2&state=%",
            b"token=%ff%fe&x=%c3%a9",
            b"token=\xff\xfe&x=\xc3\xa9&y=\xc3",
            b"token=x\xffy&state=\xe2\x82",
            b"token=a%26b%3Dc%2Bd&state=%26",
            b"token=+a+&launch=%20a%20",
            b"token=t&token=t&launch=t",
            b"token=t&token=&launch=u",
            b"token=&token=&launch=",
            b"launch=%74&token=t",
            b"token=%E2%82%AC&launch=\xe2\x82\xac",
            b"a=1&b&c=&=d&token=x&e=%2F&f=g+h",
            "token=ключ&état=été".as_bytes(),
        ]
        .iter()
        .map(|f| f.to_vec())
        .collect();
        // And a few thousand made from the bytes that matter, by a fixed LCG.
        let alphabet = b"token=&%+2Fe0a\xff\xc3\xa9 .";
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state
        };
        for _ in 0..4000 {
            let len = (next() >> 59) as usize;
            let form = (0..len)
                .map(|_| alphabet[(next() >> 33) as usize % alphabet.len()])
                .collect();
            forms.push(form);
        }
        forms
    }

    /// `split_form` as it was, on `form_urlencoded::parse` alone: the reference.
    fn split_form_slow<'a>(
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

    #[test]
    fn fast_form_parse_is_the_library_parse() {
        let fields = fields();
        for form in tricky_forms() {
            let what = form.escape_ascii().to_string();
            let fast: Vec<_> = Pairs { input: &form }.collect();
            let slow: Vec<_> = form_urlencoded::parse(&form).collect();
            assert_eq!(fast, slow, "{what}");
            for ((fast_name, fast_value), (slow_name, slow_value)) in fast.iter().zip(&slow) {
                // Borrowed where the library borrows: no copy the library did not make.
                assert_eq!(
                    matches!(fast_name, Cow::Borrowed(_)),
                    matches!(slow_name, Cow::Borrowed(_)),
                    "{what}"
                );
                assert_eq!(
                    matches!(fast_value, Cow::Borrowed(_)),
                    matches!(slow_value, Cow::Borrowed(_)),
                    "{what}"
                );
            }

            let mut fast_tokens = Vec::new();
            let mut slow_tokens = Vec::new();
            let fast_rest = split_form(&form, &fields, |v| {
                fast_tokens.push(v);
                Ok(())
            });
            let slow_rest = split_form_slow(&form, &fields, |v| {
                slow_tokens.push(v);
                Ok(())
            });
            assert_eq!(fast_rest.unwrap(), slow_rest.unwrap(), "{what}");
            assert_eq!(fast_tokens, slow_tokens, "{what}");

            let slow_extract = {
                let mut token: Option<Cow<'_, str>> = None;
                split_form_slow(&form, &fields, |value| {
                    if value.is_empty() {
                        return Ok(());
                    }
                    match &token {
                        Some(t) if *t != value => {
                            Err(Rejection::new(Reason::ConflictingTokens, "two"))
                        }
                        Some(_) => Ok(()),
                        None => {
                            token = Some(value);
                            Ok(())
                        }
                    }
                })
                .and_then(|rest| {
                    let token = token.ok_or_else(|| Rejection::new(Reason::MissingToken, "no"))?;
                    Ok(Extracted {
                        token: token.trim().to_owned(),
                        rest,
                    })
                })
            };
            match (extract(&form, &fields), slow_extract) {
                (Ok(fast), Ok(slow)) => assert_eq!(fast, slow, "{what}"),
                (Err(fast), Err(slow)) => assert_eq!(fast.reason, slow.reason, "{what}"),
                (fast, slow) => panic!("{what}: {fast:?} but {slow:?} the slow way"),
            }
            if let Ok(query) = std::str::from_utf8(&form) {
                let slow = {
                    let mut found = false;
                    split_form_slow(query.as_bytes(), &fields, |_| {
                        found = true;
                        Ok(())
                    })
                    .ok()
                    .and_then(|rest| found.then_some(rest))
                };
                assert_eq!(strip_token_fields(query, &fields), slow, "{what}");
            }
        }
    }

    #[test]
    fn token_fields_with_escapes_and_repeats() {
        let e = extract(b"tok%65n=a+b%2Ec&launch=a%20b.c&x=1", &fields()).unwrap();
        assert_eq!((e.token.as_str(), e.rest.as_str()), ("a b.c", "x=1"));
        let e = extract(b"token=&token=t&launch=t&state=s%2B", &fields()).unwrap();
        assert_eq!((e.token.as_str(), e.rest.as_str()), ("t", "state=s%2B"));
        let e = extract(b"token=a\xffb", &fields()).unwrap();
        assert_eq!(e.token, "a\u{fffd}b");
        let e = extract(b"token=a%ffb", &fields()).unwrap();
        assert_eq!(e.token, "a\u{fffd}b");
        assert_eq!(
            extract(b"token=a%2Bb&launch=a+b", &fields())
                .unwrap_err()
                .reason,
            Reason::ConflictingTokens
        );
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
