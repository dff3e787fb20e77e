//! A launch token (compact JWS) as `Verifier::verify` reads it: `jose::jws::decode` (the
//! split, base64url, the header visitor, the claims object), then the signature check with
//! every key of the portal's JWKS that fits the header's alg.
#![no_main]

use std::sync::LazyLock;

use hti_guard::jose::jwk::VerifyKey;
use hti_guard::jose::jws::{self, MAX_TOKEN_LEN};
use libfuzzer_sys::fuzz_target;

static KEYS: LazyLock<Vec<VerifyKey>> = LazyLock::new(|| hti_guard_fuzz::parsed_jwks().keys);

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(decoded) = jws::decode(token) else {
        return;
    };
    assert!(token.len() <= MAX_TOKEN_LEN);
    // The signing input and the signature are the token's own bytes, around its last dot.
    assert_eq!(
        format!("{}.{}", decoded.signing_input, decoded.signature),
        token
    );
    assert_eq!(decoded.signing_input.matches('.').count(), 1);
    for key in KEYS.iter().filter(|k| k.fits(decoded.alg)) {
        let _ = key.verify(
            decoded.alg,
            decoded.signing_input.as_bytes(),
            decoded.signature,
        );
    }
});
