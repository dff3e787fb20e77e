//! Structure-aware: an `arbitrary` claims set and header, signed with the portal's fixed
//! test keys, through the whole `Verifier::verify` (decode, alg, issuer, kid and key,
//! signature, the HTI claim rules, the single-use check) at a fixed now, so that the fuzzer
//! spends its time in the claim rules instead of the base64 layer. Invariants: an accepted
//! launch has a configured iss, the audience, a jti of 16+ visible characters, an exp after
//! now (within the skew), an iat not after it, a lifetime within `launch.max_lifetime`; the
//! same token again is `replayed`; a refused token burns no jti (the same reason again).
//!
//! `HTI_FUZZ_COUNTS=N` prints the outcome counts every N executions (FUZZING.md).
#![no_main]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use arbitrary::Arbitrary;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hti_guard::Config;
use hti_guard::fuzzing::{NOW, now};
use hti_guard::jose::Alg;
use hti_guard::metrics::Metrics;
use hti_guard::replay::MemoryStore;
use hti_guard::verify::{KeyCache, Verifier};
use hti_guard_fuzz::{AUD, ISS, SIGNERS};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

const MAX_LIFETIME: i64 = 300;
const SKEW: i64 = 30;

struct World {
    verifier: Verifier,
    replay: Arc<MemoryStore>,
    runtime: tokio::runtime::Runtime,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let config = Config::from_toml_str(&format!(
        r#"
        upstream = "http://127.0.0.1:1"
        [launch]
        audience = ["{AUD}", "Device/other-module"]
        max_lifetime = "{MAX_LIFETIME}s"
        clock_skew = "{SKEW}s"
        [[issuers]]
        iss = "{ISS}"
        jwks_url = "http://127.0.0.1:1/jwks"
        algorithms = ["ES256", "RS256"]
        "#
    ))
    .unwrap();
    let cache = Arc::new(KeyCache::new(&config.issuers, &config.keys));
    assert!(cache.install(ISS, hti_guard_fuzz::parsed_jwks()));
    let replay = MemoryStore::new(1024);
    let verifier = Verifier::new(&config, cache, replay.clone(), Arc::new(Metrics::new()));
    // A paused clock: an unknown kid waits for a refetch no task serves; time jumps.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    World {
        verifier,
        replay,
        runtime,
    }
});

#[derive(Arbitrary, Debug)]
enum Text {
    Absent,
    Null,
    Empty,
    Pick(u8),
    Free(String),
    Number(i32),
    List(Vec<String>),
}

impl Text {
    fn value(&self, picks: &[&str]) -> Option<Value> {
        Some(match self {
            Text::Absent => return None,
            Text::Null => Value::Null,
            Text::Empty => json!(""),
            Text::Pick(i) => json!(picks[*i as usize % picks.len()]),
            Text::Free(s) => json!(s),
            Text::Number(n) => json!(n),
            Text::List(l) => json!(l),
        })
    }
}

#[derive(Arbitrary, Debug)]
enum Time {
    Absent,
    Null,
    /// Seconds from now.
    Offset(i16),
    Float(i16, u8),
    Text(i16),
    Raw(i64),
    Big(f64),
}

impl Time {
    fn value(&self) -> Option<Value> {
        let now = NOW as i64;
        Some(match self {
            Time::Absent => return None,
            Time::Null => Value::Null,
            Time::Offset(s) => json!(now + i64::from(*s)),
            Time::Float(s, frac) => json!((now + i64::from(*s)) as f64 + f64::from(*frac) / 256.0),
            Time::Text(s) => json!((now + i64::from(*s)).to_string()),
            Time::Raw(n) => json!(n),
            Time::Big(f) => json!(f),
        })
    }
}

#[derive(Arbitrary, Debug)]
enum Aud {
    Absent,
    Null,
    Ours,
    Other,
    Free(String),
    /// true: ours, false: another module's.
    List(Vec<bool>),
    ListWithNumber,
    Number,
}

impl Aud {
    fn value(&self) -> Option<Value> {
        Some(match self {
            Aud::Absent => return None,
            Aud::Null => Value::Null,
            Aud::Ours => json!(AUD),
            Aud::Other => json!("Device/not-us"),
            Aud::Free(s) => json!(s),
            Aud::List(l) => json!(
                l.iter()
                    .map(|&o| if o { AUD } else { "Device/not-us" })
                    .collect::<Vec<_>>()
            ),
            Aud::ListWithNumber => json!([AUD, 7]),
            Aud::Number => json!(42),
        })
    }
}

#[derive(Arbitrary, Debug)]
enum Jti {
    Absent,
    /// 32 hex characters.
    Fresh(u128),
    Short(u8),
    Free(String),
    Number(u64),
}

#[derive(Arbitrary, Debug)]
enum Header {
    /// ES256 with the ES256 key's kid.
    Es256,
    /// RS256 with the RSA key (slow to sign; one choice of many).
    Rs256,
    /// ES384: the issuer does not accept it.
    Es384,
    /// ES256 naming the ES384 key.
    KeyMismatch,
    UnknownKid(String),
    NoKid,
    KidNumber,
    None,
    Hs256,
    /// ES256, one signature byte flipped.
    BadSignature(u8),
    Typ(String),
    Crit,
    Extra(String, String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    header: Header,
    iss: Text,
    aud: Aud,
    exp: Time,
    iat: Time,
    nbf: Time,
    jti: Jti,
    sub: Text,
    resource: Text,
    patient: Text,
    definition: Text,
    intent: Text,
    hti_version: Text,
    extra: Vec<(String, Text)>,
    again: bool,
}

const ISSUERS: [&str; 3] = [
    ISS,
    "https://other-portal.example",
    "https://portal.example/",
];
const SUBS: [&str; 4] = [
    "Practitioner/1",
    "Patient/42",
    "RelatedPerson/r-7",
    "Device/9",
];
const RESOURCES: [&str; 3] = ["Task/123", "Task/t-9", "Task/"];
const PATIENTS: [&str; 4] = ["Patient/42", "Person/p", "Task/1", "Patient/a b"];
const DEFINITIONS: [&str; 4] = [
    "ActivityDefinition/mindfulness",
    "https://example.org/fhir/ActivityDefinition/x|1.0",
    "urn:uuid:0f7e",
    "Task/1",
];
const INTENTS: [&str; 3] = ["plan", "order", "nonsense"];
const VERSIONS: [&str; 2] = ["2.0", "1.0"];

fn claims(input: &Input) -> Value {
    let mut m = Map::new();
    let put = |m: &mut Map<String, Value>, name: &str, value: Option<Value>| {
        if let Some(v) = value {
            m.insert(name.to_owned(), v);
        }
    };
    put(&mut m, "iss", input.iss.value(&ISSUERS));
    put(&mut m, "aud", input.aud.value());
    put(&mut m, "exp", input.exp.value());
    put(&mut m, "iat", input.iat.value());
    put(&mut m, "nbf", input.nbf.value());
    put(
        &mut m,
        "jti",
        match &input.jti {
            Jti::Absent => None,
            Jti::Fresh(n) => Some(json!(format!("{n:032x}"))),
            Jti::Short(n) => Some(json!(format!("{n:x}"))),
            Jti::Free(s) => Some(json!(s)),
            Jti::Number(n) => Some(json!(n)),
        },
    );
    put(&mut m, "sub", input.sub.value(&SUBS));
    put(&mut m, "resource", input.resource.value(&RESOURCES));
    put(&mut m, "patient", input.patient.value(&PATIENTS));
    put(&mut m, "definition", input.definition.value(&DEFINITIONS));
    put(&mut m, "intent", input.intent.value(&INTENTS));
    put(&mut m, "hti-version", input.hti_version.value(&VERSIONS));
    for (name, value) in &input.extra {
        if !m.contains_key(name)
            && let Some(v) = value.value(&["x"])
        {
            m.insert(name.clone(), v);
        }
    }
    Value::Object(m)
}

fn signer(kid: &str) -> &'static hti_guard::jose::sign::SigningKey {
    &SIGNERS.iter().find(|(k, _, _)| *k == kid).unwrap().2
}

fn unsigned(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

fn token(header: &Header, claims: &Value) -> String {
    let es256 = |h: Value| {
        signer("es256")
            .sign_with_header(Alg::ES256, &h, claims)
            .unwrap()
    };
    match header {
        Header::Es256 => es256(json!({"alg": "ES256", "kid": "es256", "typ": "JWT"})),
        Header::Rs256 => signer("rs256")
            .sign_with_header(Alg::RS256, &json!({"alg": "RS256", "kid": "rs256"}), claims)
            .unwrap(),
        Header::Es384 => signer("es384")
            .sign_with_header(Alg::ES384, &json!({"alg": "ES384", "kid": "es384"}), claims)
            .unwrap(),
        Header::KeyMismatch => es256(json!({"alg": "ES256", "kid": "es384"})),
        Header::UnknownKid(kid) => es256(json!({"alg": "ES256", "kid": kid})),
        Header::NoKid => es256(json!({"alg": "ES256"})),
        Header::KidNumber => es256(json!({"alg": "ES256", "kid": 1})),
        Header::None => unsigned(&json!({"alg": "none"}), claims, b""),
        Header::Hs256 => unsigned(
            &json!({"alg": "HS256", "kid": "es256"}),
            claims,
            b"0123456789abcdef0123456789abcdef",
        ),
        Header::BadSignature(at) => {
            let good = es256(json!({"alg": "ES256", "kid": "es256"}));
            let (input, sig) = good.rsplit_once('.').unwrap();
            let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
            let i = *at as usize % sig.len();
            sig[i] ^= 0x01;
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
        }
        Header::Typ(typ) => es256(json!({"alg": "ES256", "kid": "es256", "typ": typ})),
        Header::Crit => es256(json!({"alg": "ES256", "kid": "es256", "crit": ["exp"]})),
        Header::Extra(name, value) => {
            let mut h = json!({"alg": "ES256", "kid": "es256"});
            if name != "alg" && name != "kid" && name != "crit" {
                h[name] = json!(value);
            }
            es256(h)
        }
    }
}

static COUNTS: LazyLock<Mutex<BTreeMap<String, u64>>> = LazyLock::new(Default::default);
static RUNS: AtomicU64 = AtomicU64::new(0);
static EVERY: LazyLock<Option<u64>> = LazyLock::new(|| {
    std::env::var("HTI_FUZZ_COUNTS")
        .ok()
        .and_then(|n| n.parse().ok())
});

/// An outcome's name: `accepted`, or the reason and its detail without the numbers and
/// quoted values that vary.
fn kind(result: &Result<String, (String, String)>) -> String {
    match result {
        Ok(_) => "accepted".into(),
        Err((reason, detail)) => {
            let mut name = format!("{reason}: ");
            for c in detail.split('"').next().unwrap_or_default().chars() {
                match c {
                    '0'..='9' if name.ends_with('N') => {}
                    '0'..='9' => name.push('N'),
                    _ => name.push(c),
                }
            }
            name.replace("-N", "N").trim_end().to_owned()
        }
    }
}

fn count(name: String) {
    let Some(every) = *EVERY else {
        return;
    };
    let mut counts = COUNTS.lock().unwrap();
    *counts.entry(name).or_default() += 1;
    let runs = RUNS.fetch_add(1, Ordering::Relaxed) + 1;
    if runs.is_multiple_of(every) {
        eprintln!("outcomes after {runs} runs:");
        for (name, n) in counts.iter() {
            eprintln!("  {n:>9}  {name}");
        }
    }
}

fuzz_target!(|input: Input| {
    let world = &*WORLD;
    world.replay.purge(u64::MAX);
    let claims = claims(&input);
    let token = token(&input.header, &claims);
    let verify = || {
        world
            .runtime
            .block_on(world.verifier.verify(&token, now()))
            .map(|v| v.claims.jti.clone())
            .map_err(|r| (r.reason.as_str().to_owned(), r.detail.to_string()))
    };
    let first = world.runtime.block_on(world.verifier.verify(&token, now()));
    let result = match &first {
        Ok(launch) => {
            let c = &launch.claims;
            let now = NOW as i64;
            assert_eq!(launch.issuer.as_deref(), Some(ISS));
            assert_eq!(c.iss, ISS);
            assert!(c.jti.len() >= 16 && c.jti.bytes().all(|b| b.is_ascii_graphic()));
            assert!(now < c.exp + SKEW, "exp {} now {now}", c.exp);
            assert!(c.iat <= now + SKEW && c.iat <= c.exp);
            assert!(c.exp - c.iat <= MAX_LIFETIME);
            let aud = &claims["aud"];
            assert!(aud == AUD || aud.as_array().is_some_and(|l| l.contains(&json!(AUD))));
            assert!(
                matches!(
                    input.header,
                    Header::Es256 | Header::Rs256 | Header::Typ(_) | Header::Extra(..)
                ),
                "accepted under {:?}",
                input.header
            );
            Ok(c.jti.clone())
        }
        Err(r) => Err((r.reason.as_str().to_owned(), r.detail.to_string())),
    };
    count(kind(&result));
    if input.again {
        let second = verify();
        match &result {
            Ok(_) => assert_eq!(second.map_err(|e| e.0), Err("replayed".to_owned())),
            // Refused before the single-use check: nothing was burnt.
            Err((reason, _)) => assert_eq!(second.map_err(|e| e.0).unwrap_err(), *reason),
        }
    }
});
