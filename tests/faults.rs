//! Faults survived (issue 16), each against the real thing on loopback, each proving that
//! nothing was wrongly accepted (a refused launch never reaches the upstream, a jti is never
//! accepted twice) and that the guard recovers by itself:
//! - keys: a JWKS endpoint hanging past `keys.fetch_timeout`, answering garbage or 500 until
//!   `keys.max_stale`, answering 10 MB (the guard's peak memory read from /proc);
//! - replay: Redis SIGKILLed and restarted under load; the memory store full;
//! - auth: the introspection endpoint and the SHOF token endpoint hanging;
//! - upstream: refusing, resetting mid-response, cutting a body short, slow headers, slow
//!   and stalled bodies, each followed by requests on a pool that is not poisoned;
//! - connections: 2,000 slowloris connections, clients aborting mid-body, the process at
//!   `ulimit -n 256` swamped with connections.

mod common;

#[path = "faults/support.rs"]
mod support;

#[path = "faults/keys.rs"]
mod keys;

#[path = "faults/replay.rs"]
mod replay;

#[path = "faults/auth.rs"]
mod auth;

#[path = "faults/upstream.rs"]
mod upstream;

#[path = "faults/connections.rs"]
mod connections;
