//! The session cookie as `Sessions::read` takes it from a request: the `Cookie` headers
//! split into pairs, the guard's cookie taken out (it never reaches the upstream), each
//! value opened (AES-256-GCM under the current key, then the previous one), the session
//! JSON read, its binding, lifetime, idle timeout and renewal judged, and a valid one's
//! claims written as `X-HTI-*` headers.
//!
//! Input: the first byte picks the mode. Even: the rest is `Cookie` header values, one per
//! line, as a browser (or anyone) sends them. Odd: the rest is the sealed plaintext itself,
//! sealed with the deployment's key and sent as the guard's cookie, so that the fuzzer
//! reaches the session JSON behind the AEAD (a random value never opens).
#![no_main]

use std::sync::LazyLock;

use hti_guard::fuzzing::{NOW, SessionFuzz};
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

static SESSIONS: LazyLock<SessionFuzz> = LazyLock::new(SessionFuzz::default);

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let cookies: Vec<HeaderValue> = if mode % 2 == 0 {
        rest.split(|&b| b == b'\n')
            .filter_map(|line| HeaderValue::from_bytes(line).ok())
            .collect()
    } else {
        let Ok(plain) = std::str::from_utf8(rest) else {
            return;
        };
        let Some(sealed) = SESSIONS.seal(plain.to_owned()) else {
            return;
        };
        let text = format!("theme=dark; {}={sealed}; lang=nl", SESSIONS.cookie_name());
        vec![HeaderValue::from_str(&text).unwrap()]
    };
    let _ = SESSIONS.read(&cookies, NOW);
});
