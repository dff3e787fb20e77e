//! An HTI:jwe launch token as `Verifier::verify` unwraps it: the four-dot shape check
//! (`jwe::is_jwe`), `DecryptionKeys::decrypt` (the compact JWE parser, header rules, then
//! RSA-OAEP and AES-GCM / AES-CBC-HMAC with the module's keys: one whose kid names it, or
//! each in turn), then `jws::decode` on the inner token. Two keys: the module's (kid
//! "module") and RFC 7516 A.1's (kid "rfc7516"), so the RFC's example decrypts.
#![no_main]

use std::sync::LazyLock;

use hti_guard::jose::jwe::{self, DecryptionKeys};
use hti_guard::jose::jws::{self, MAX_TOKEN_LEN};
use libfuzzer_sys::fuzz_target;

static KEYS: LazyLock<DecryptionKeys> = LazyLock::new(|| {
    DecryptionKeys::from_pems(&[
        (hti_guard_fuzz::RSA_PEM.to_vec(), "module".into()),
        (hti_guard_fuzz::RFC7516_PEM.to_vec(), "rfc7516".into()),
    ])
    .unwrap()
});

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    // The verifier's order: the shape, the length bound, then the keys.
    if !jwe::is_jwe(token) || token.len() > MAX_TOKEN_LEN {
        return;
    }
    let Ok(inner) = KEYS.decrypt(token) else {
        return;
    };
    assert_eq!(inner.split('.').count(), 3, "decrypt returns a compact JWS");
    let _ = jws::decode(&inner);
});
