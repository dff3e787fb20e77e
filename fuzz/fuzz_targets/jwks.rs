//! A portal's (or the SHOF auth server's) JWKS document as the key cache parses it:
//! `jwk::parse_jwks` (each entry's kty, alg, use, crv, key material, RSA size), then every
//! usable key asked whether it fits each algorithm and made to check a signature, the way
//! `Verifier::verify` uses it.
#![no_main]

use hti_guard::jose::Alg;
use hti_guard::jose::jwk::parse_jwks;
use libfuzzer_sys::fuzz_target;

const MESSAGE: &[u8] =
    b"eyJhbGciOiJFUzI1NiIsImtpZCI6ImVzMjU2In0.eyJpc3MiOiJodHRwczovL3BvcnRhbC5leGFtcGxlIn0";
const SIGNATURE: &str =
    "ZmFrZS1zaWduYXR1cmUtYnl0ZXMtZm9yLXRoZS1mdXp6ZXItMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3";

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = parse_jwks(data) else {
        return;
    };
    for key in &parsed.keys {
        let _ = key.describe();
        for alg in Alg::ALL {
            if key.fits(alg) {
                assert!(
                    !key.verify(alg, MESSAGE, SIGNATURE),
                    "a made-up signature verified"
                );
            }
        }
    }
    for problem in &parsed.problems {
        let _ = problem.to_string();
        let _ = problem.kind.as_str();
    }
});
