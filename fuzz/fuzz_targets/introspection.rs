//! A Koppeltaal introspection endpoint's answer as `Verifier::verify` takes it for an
//! introspected token: `introspect::parse_answer` (a JSON object), `active` (only
//! `"active": true` counts), `merge_answer` (the answer's claims over the token's own, never
//! another iss or jti), then the HTI claim rules at a fixed now.
#![no_main]

use std::sync::LazyLock;

use hti_guard::fuzzing::{NOW, default_rules, introspection_answer};
use hti_guard::verify::ClaimRules;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

/// The token's own (unverified) claims: a valid launch at NOW.
static TOKEN: LazyLock<Map<String, Value>> = LazyLock::new(|| {
    let now = NOW as i64;
    json!({
        "iss": hti_guard_fuzz::ISS,
        "aud": hti_guard_fuzz::AUD,
        "sub": "Practitioner/1",
        "resource": "Task/123",
        "jti": "0123456789abcdef0123456789abcdef",
        "iat": now - 10,
        "exp": now + 200,
    })
    .as_object()
    .unwrap()
    .clone()
});

static RULES: LazyLock<ClaimRules> = LazyLock::new(default_rules);

fuzz_target!(|data: &[u8]| {
    let _ = introspection_answer(data, &TOKEN, NOW as i64, &RULES);
});
