//! Shared helpers for the integration tests: a mock upstream that echoes, a mock JWKS server
//! that counts hits, a token minter with real keys, and a launcher for the guard. Everything
//! runs on loopback ephemeral ports.
#![allow(dead_code, unused_imports)]

pub mod authserver;
pub mod guard;
pub mod jwks;
pub mod metrics;
pub mod mint;
pub mod upstream;

pub use authserver::{AuthMode, AuthServer};
pub use guard::{
    AUDIENCE, Fixture, Guard, GuardBuilder, client, expect_echo, expect_rejection, form,
    unique_issuer, within,
};
pub use jwks::{JwksServer, Mode};
pub use mint::{Alg, SigningKey};
pub use upstream::{Echo, Upstream};
