//! JOSE formats and keys, apart from any policy: `jwk` (the algorithms, `Alg` and `Curve`,
//! public keys fitted to them, JWKS parsing, the signature check), `jws` (compact JWS
//! decoding), `jwe` (compact JWE decryption with the module's keys) and `sign` (private
//! signing keys, PEM files, JWS signing).
//!
//! It sits at the ground beside `error`: it imports nothing else of the crate, so the
//! config, the verifier and the tools can all use it without a circle. Which issuer,
//! key, algorithm or claim is acceptable for a launch is decided in `verify`, not here;
//! errors here are this folder's own, and `verify` maps them to rejection reasons.

pub mod jwe;
pub mod jwk;
pub mod jws;
pub mod sign;

pub use jwk::{Alg, Curve};
