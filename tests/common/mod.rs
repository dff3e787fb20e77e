//! The one harness of the integration tests: a mock upstream that echoes, a mock JWKS server
//! that counts hits, a token minter with real keys, the guard in-process ([`Fixture`],
//! [`GuardBuilder`]) or as the binary ([`Served`], [`DemoRun`], [`command`]), and temp
//! directories, config files and free ports. Everything runs on loopback.
#![allow(dead_code, unused_imports)]

pub mod authserver;
pub mod guard;
pub mod host;
pub mod jar;
pub mod jwks;
pub mod launch_load;
pub mod metrics;
pub mod mint;
pub mod process;
pub mod redis;
pub mod shof_auth;
pub mod shof_fixture;
pub mod upstream;

pub use authserver::{AuthMode, AuthServer};
pub use guard::{
    AUDIENCE, Backends, Fixture, Guard, GuardBuilder, client, expect_echo, expect_rejection, form,
    module_key_file, outcome, post_form, toml_str, unique_issuer, within,
};
pub use host::{
    ConfigFile, TempDir, Watchdog, accept_each, closed_origin, closed_url, eventually, free_port,
    loopback, needs, path_str, probe, read_http1_response, reap, temp_file, wait_ok,
};
pub use jar::{Browser, SetCookie, set_cookies};
pub use jwks::{JwksServer, Mode};
pub use launch_load::{LaunchLoad, Mint, Outcomes, jti_of};
pub use mint::{Alg, SigningKey};
pub use process::{BIN, DemoRun, Finished, Served, command, program, run};
pub use redis::{Redis, redis_installed};
pub use shof_auth::{AuthorizeRequest, IdToken, TokenMode};
pub use shof_fixture::ShofFixture;
pub use upstream::{Echo, JtiCounter, Upstream};
