//! The in-process hot path: signature verification per algorithm, the token decode, the
//! claim rules, the memory replay insert, the header rewrite, the form read, and a whole
//! `Verifier::verify` (keys already cached, unique jti per call; `verify/<alg>_no_replay`
//! without the replay store), and one launch handled in-process. Run with `cargo bench --bench verify`; the whole proxy is
//! measured by `benches/load/run.sh`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;

use hti_guard::config::Config;
use hti_guard::headers;
use hti_guard::jose::jwk::{self, parse_jwks};
use hti_guard::jose::jws;
use hti_guard::launch;
use hti_guard::metrics::Metrics;
use hti_guard::replay::{Freshness, MemoryStore, ReplayError, ReplayStore, StoreFuture};
use hti_guard::verify::claims::{self, ClaimRules};
use hti_guard::verify::{KeyCache, Verifier};

#[allow(dead_code)]
#[path = "../tests/common/mint.rs"]
mod mint;

const ISS: &str = "https://portal.example";
const AUD: &str = "Device/bench";

fn signatures(c: &mut Criterion) {
    let mut group = c.benchmark_group("signature");
    for alg in [
        mint::Alg::RS256,
        mint::Alg::RS512,
        mint::Alg::PS256,
        mint::Alg::ES256,
        mint::Alg::ES384,
        mint::Alg::ES512,
    ] {
        let key = mint::SigningKey::generate(alg);
        let parsed = parse_jwks(mint::jwks(&[&key]).to_string().as_bytes()).unwrap();
        let public = &parsed.keys[0];
        let token = key.token(&mint::hti_claims(ISS, AUD));
        let ours = jwk::Alg::from_name(alg.name()).unwrap();
        group.bench_function(alg.name(), |b| {
            b.iter(|| {
                let decoded = jws::decode(black_box(&token)).unwrap();
                assert!(public.verify(ours, decoded.signing_input.as_bytes(), decoded.signature));
            })
        });
    }
    group.finish();
}

/// A launch token as a portal sends it: RS512, HTI claims with the optional ones.
fn launch_claims() -> serde_json::Value {
    let mut set = mint::hti_claims(ISS, AUD);
    set["patient"] = json!("Patient/42");
    set["definition"] = json!("ActivityDefinition/mindfulness");
    set["intent"] = json!("plan");
    set
}

/// Split and decode a launch token (header and claims JSON), without the signature check.
fn token_decode(c: &mut Criterion) {
    let key = mint::SigningKey::generate(mint::Alg::RS512);
    let token = key.token(&launch_claims());
    c.bench_function("decode/RS512", |b| {
        b.iter(|| jws::decode(black_box(&token)).unwrap())
    });
}

/// Read the token from a launch form: the ~700-byte RS512 token and a `state` field.
fn form_extract(c: &mut Criterion) {
    let key = mint::SigningKey::generate(mint::Alg::RS512);
    let fields = vec!["token".to_owned(), "launch".to_owned()];
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("token", &key.token(&launch_claims()))
        .append_pair("state", "a1b2c3")
        .finish()
        .into_bytes();
    c.bench_function("launch/extract", |b| {
        b.iter(|| launch::extract(black_box(&body), &fields).unwrap())
    });
}

fn claim_rules(c: &mut Criterion) {
    let rules = ClaimRules {
        audience: vec![AUD.into()],
        max_lifetime: Duration::from_secs(300),
        clock_skew: Duration::from_secs(30),
        hti_versions: vec!["2.0".into()],
    };
    let map = launch_claims().as_object().unwrap().clone();
    let now = mint::now();
    c.bench_function("claims/check", |b| {
        b.iter(|| claims::check(black_box(&map), now, &rules).unwrap())
    });
}

fn replay_insert(c: &mut Criterion) {
    let store = MemoryStore::new(usize::MAX);
    let counter = AtomicU64::new(0);
    let now = mint::now() as u64;
    c.bench_function("replay/memory_insert", |b| {
        b.iter(|| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let jti = format!("{n:032x}");
            store.check(ISS, &jti, now, now + 330).unwrap()
        })
    });
}

fn header_rewrite(c: &mut Criterion) {
    let mut incoming = HeaderMap::new();
    for (name, value) in [
        ("host", "module.example"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64)"),
        ("accept", "text/html,application/xhtml+xml"),
        ("accept-language", "nl-NL,nl;q=0.9"),
        ("cookie", "session=abc; theme=dark"),
        ("connection", "keep-alive"),
        ("x-hti-sub", "Patient/spoofed"),
    ] {
        incoming.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    let client = headers::client_address("10.1.2.3".parse().unwrap());
    c.bench_function("headers/rewrite", |b| {
        b.iter(|| {
            let mut h = incoming.clone();
            let id = headers::request_id(&h);
            headers::strip_reserved(&mut h);
            headers::strip_hop_by_hop(&mut h, None);
            let host = h.get(http::header::HOST).cloned();
            headers::set_forwarded(&mut h, &client, false, host, false);
            h.insert(headers::X_REQUEST_ID, HeaderValue::from_str(&id).unwrap());
            h
        })
    });
}

/// A single-threaded runtime to drive `Verifier::verify` in a bench loop.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A replay store that remembers nothing and calls every jti fresh, so that a bench with it
/// measures parse, key lookup, signature and claims (and the accepted launch's claims JSON).
struct NoReplay;

impl ReplayStore for NoReplay {
    fn name(&self) -> &'static str {
        "none"
    }

    fn check_and_insert<'a>(
        &'a self,
        _iss: &'a str,
        _jti: &'a str,
        _now: u64,
        _keep_until: u64,
    ) -> StoreFuture<'a, Result<Freshness, ReplayError>> {
        Box::pin(std::future::ready(Ok(Freshness::Fresh)))
    }

    fn ping(&self) -> StoreFuture<'_, Result<(), ReplayError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// A verifier for one issuer whose key set (just `key`) is already cached, with a memory
/// replay store that never fills; and the configuration it was made from.
fn verifier_for(key: &mint::SigningKey) -> (Verifier, Config) {
    verifier_with(key, MemoryStore::new(usize::MAX))
}

/// As `verifier_for`, with the given replay store.
fn verifier_with(key: &mint::SigningKey, replay: Arc<dyn ReplayStore>) -> (Verifier, Config) {
    let config = Config::from_toml_str(&format!(
        r#"
        upstream = "http://127.0.0.1:1"
        [launch]
        audience = "{AUD}"
        [[issuers]]
        iss = "{ISS}"
        jwks_url = "http://127.0.0.1:1/jwks"
        "#
    ))
    .unwrap();
    let cache = Arc::new(KeyCache::new(&config.issuers, &config.keys));
    assert!(cache.install(
        ISS,
        parse_jwks(mint::jwks(&[key]).to_string().as_bytes()).unwrap()
    ));
    let verifier = Verifier::new(&config, cache, replay, Arc::new(Metrics::new()));
    (verifier, config)
}

fn full_verify(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("verify");
    for alg in [mint::Alg::RS256, mint::Alg::RS512, mint::Alg::ES256] {
        let key = mint::SigningKey::generate(alg);
        let (verifier, _) = verifier_for(&key);
        // Unique jtis need unique tokens: sign a batch up front, outside the timing.
        let tokens: Vec<String> = (0..20_000)
            .map(|_| key.token(&mint::hti_claims(ISS, AUD)))
            .collect();
        let next = AtomicU64::new(0);
        group.bench_function(alg.name(), |b| {
            b.iter(|| {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let token = &tokens[i % tokens.len()];
                // After one pass over the batch the jtis repeat; the replay answer is then
                // `replayed`, which costs the same as `fresh`.
                let _ = runtime.block_on(verifier.verify(black_box(token), SystemTime::now()));
            })
        });
    }
    for alg in [mint::Alg::RS256, mint::Alg::RS512] {
        let key = mint::SigningKey::generate(alg);
        let (verifier, _) = verifier_with(&key, Arc::new(NoReplay));
        let token = key.token(&mint::hti_claims(ISS, AUD));
        group.bench_function(format!("{}_no_replay", alg.name()), |b| {
            b.iter(|| {
                runtime
                    .block_on(verifier.verify(black_box(&token), SystemTime::now()))
                    .unwrap()
            })
        });
    }
    group.finish();
}

/// One launch in-process: the form read, the verify (RS512, keys cached, unique jti), and
/// the header rewrite with the trusted claims, on what a browser posts. It stops short of
/// `proxy::Proxy`: that takes hyper `Incoming` bodies, which only a connection can make, so
/// the socket layer is left to the load benchmark.
fn launch_in_process(c: &mut Criterion) {
    let runtime = runtime();
    let key = mint::SigningKey::generate(mint::Alg::RS512);
    let (verifier, config) = verifier_for(&key);
    let set = launch_claims();
    // Bodies as a portal's auto-submitting form sends them, one fresh jti each.
    let bodies: Vec<Vec<u8>> = (0..20_000)
        .map(|_| {
            let mut claims = set.clone();
            claims["jti"] = json!(mint::random_jti());
            form_urlencoded::Serializer::new(String::new())
                .append_pair("token", &key.token(&claims))
                .append_pair("state", "a1b2c3")
                .finish()
                .into_bytes()
        })
        .collect();
    let mut incoming = HeaderMap::new();
    for (name, value) in [
        ("host", "module.example"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64)"),
        ("content-type", "application/x-www-form-urlencoded"),
        ("accept", "text/html,application/xhtml+xml"),
        ("origin", "https://portal.example"),
        ("x-hti-sub", "Patient/spoofed"),
    ] {
        incoming.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    let fields = &config.launch.token_fields;
    let client = headers::client_address("10.1.2.3".parse().unwrap());
    let next = AtomicU64::new(0);
    c.bench_function("launch/in_process", |b| {
        b.iter(|| {
            let i = next.fetch_add(1, Ordering::Relaxed) as usize;
            // Past one pass the jtis repeat: `replayed` then skips only the trusted headers.
            let extracted = launch::extract(black_box(&bodies[i % bodies.len()]), fields).unwrap();
            let mut h = incoming.clone();
            headers::strip_reserved(&mut h);
            headers::strip_hop_by_hop(&mut h, None);
            let host = h.get(http::header::HOST).cloned();
            headers::set_forwarded(&mut h, &client, false, host, false);
            if let Ok(verified) =
                runtime.block_on(verifier.verify(&extracted.token, SystemTime::now()))
            {
                headers::set_trusted(&mut h, &verified).expect("header-safe claims");
            }
            (h, extracted.rest)
        })
    });
}

criterion_group!(
    benches,
    signatures,
    token_decode,
    claim_rules,
    replay_insert,
    header_rewrite,
    form_extract,
    full_verify,
    launch_in_process
);
criterion_main!(benches);
