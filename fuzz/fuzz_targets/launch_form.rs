//! A launch's form body or query as the proxy reads it: `launch::extract` (the token
//! fields, `conflicting_tokens`, the rest re-encoded), `launch::strip_token_fields` (a
//! POST launch's query), `launch::is_form` and the SHOF callback's query. `extract` has a
//! fast path beside `form_urlencoded::parse`; it is held to the library's answer here.
#![no_main]

use hti_guard::launch;
use libfuzzer_sys::fuzz_target;

fn fields() -> Vec<String> {
    vec!["token".to_owned(), "launch".to_owned()]
}

/// `extract` the slow way: the library's pairs, one by one.
fn slow(form: &[u8], fields: &[String]) -> Result<(String, String), &'static str> {
    let mut token: Option<String> = None;
    let mut rest = form_urlencoded::Serializer::new(String::new());
    let mut kept = false;
    for (name, value) in form_urlencoded::parse(form) {
        if fields.iter().any(|f| *f == name) {
            if value.is_empty() {
                continue;
            }
            match &token {
                Some(t) if *t != value => return Err("conflicting_tokens"),
                Some(_) => {}
                None => token = Some(value.into_owned()),
            }
        } else {
            rest.append_pair(&name, &value);
            kept = true;
        }
    }
    let token = token.ok_or("missing_token")?;
    let rest = if kept { rest.finish() } else { String::new() };
    Ok((token.trim().to_owned(), rest))
}

fuzz_target!(|data: &[u8]| {
    let fields = fields();
    let fast = launch::extract(data, &fields)
        .map(|e| (e.token, e.rest))
        .map_err(|r| r.reason.as_str());
    assert_eq!(fast, slow(data, &fields));
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(rest) = launch::strip_token_fields(text, &fields) {
        // What is left carries no token field.
        assert!(
            form_urlencoded::parse(rest.as_bytes()).all(|(n, _)| !fields.iter().any(|f| *f == n))
        );
    }
    let _ = launch::is_form(Some(text));
    let _ = hti_guard::fuzzing::callback_query(text);
});
