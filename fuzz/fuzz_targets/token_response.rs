//! A SHOF token endpoint's response as the callback reads it: `shof::parse_token_response`
//! (a JSON object), `id_token_of`, the id_token decoded (`jws::decode`) and held to
//! `check_id_token` (issuer, aud, exp/iat/nbf, nonce), then `launch_context` (resource, iss,
//! jti, sub, the context JSON). The id_token's signature is the key cache's (the jws and
//! jwks targets); a fuzzer cannot sign, so it is not asked for here.
#![no_main]

use hti_guard::fuzzing::{NOW, token_response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = token_response(data, NOW as i64);
});
