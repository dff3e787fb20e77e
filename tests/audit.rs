//! The audit trail of the binary as it runs: one event per launch decision on the log target
//! `hti_guard::audit`, in flat fields or (with `audit.format = "fhir"`) with a FHIR R4
//! AuditEvent, and never a token, a cookie or an Authorization header.

mod common;

use common::mint::{self, Alg};
use common::*;
use serde_json::Value;

/// Something recognisable in a header, which must never reach the log.
const COOKIE_SECRET: &str = "cookie-secret-5f1c9e2a7b3d";
const BEARER_SECRET: &str = "bearer-secret-8a2e4c6f0b1d";
const USER_AGENT: &str = "audit-test-browser/1.0";

/// POST `token` to `/launch` with a request id, a cookie, an Authorization header and a
/// User-Agent, as a browser behind a proxy would.
async fn launch(served: &Served, token: &str, request_id: &str) -> reqwest::Response {
    client()
        .post(served.url("/launch"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .header("x-request-id", request_id)
        .header("cookie", format!("other={COOKIE_SECRET}"))
        .header("authorization", format!("Bearer {BEARER_SECRET}"))
        .header("user-agent", USER_AGENT)
        .header("x-forwarded-for", "198.51.100.7")
        .body(form(&[("token", token)]))
        .send()
        .await
        .expect("launch")
}

/// `token` with the first character of its signature changed.
fn forged(token: &str) -> String {
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let first = if signature.starts_with('A') { "B" } else { "A" };
    format!("{signed}.{first}{}", &signature[1..])
}

/// The event with `request_id`, exactly one.
fn event<'a>(events: &'a [Value], request_id: &str) -> &'a Value {
    let found: Vec<&Value> = events
        .iter()
        .filter(|e| e["request_id"] == request_id)
        .collect();
    assert_eq!(found.len(), 1, "one event for {request_id}: {events:#?}");
    found[0]
}

fn assert_no_secret(finished: &Finished, secrets: &[(&str, &str)]) {
    for (what, secret) in secrets {
        assert!(
            !finished.stdout.contains(secret) && !finished.stderr.contains(secret),
            "{what} is in the log:\n{finished}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_launch_decision_is_one_audit_event_without_secrets() {
    let key = mint::shared_key(Alg::RS512);
    let backends = Backends::start(JwksServer::start(&[key]).await).await;
    let served = Served::start(backends.builder(), "info").await;
    let iss = backends.iss.clone();

    let mut claims = mint::hti_claims(&iss, AUDIENCE);
    claims["patient"] = "Patient/p-42".into();
    claims["intent"] = "plan".into();
    let good = key.token(&claims);
    let jti = claims["jti"].as_str().unwrap().to_owned();
    expect_echo(launch(&served, &good, "req-accepted").await).await;
    let replayed = launch(&served, &good, "req-replayed").await;
    expect_rejection(replayed, 401, "replayed").await;
    let bad = forged(&key.token(&mint::hti_claims(&iss, AUDIENCE)));
    expect_rejection(
        launch(&served, &bad, "req-forged").await,
        401,
        "bad_signature",
    )
    .await;
    let mut expired = mint::hti_claims(&iss, AUDIENCE);
    expired["iat"] = (mint::now() - 900).into();
    expired["exp"] = (mint::now() - 600).into();
    let expired = key.token(&expired);
    expect_rejection(
        launch(&served, &expired, "req-expired").await,
        401,
        "expired",
    )
    .await;
    let stranger = key.token(&mint::hti_claims("https://stranger.example", AUDIENCE));
    expect_rejection(
        launch(&served, &stranger, "req-stranger").await,
        401,
        "unknown_issuer",
    )
    .await;
    assert_eq!(
        backends.upstream.hits(),
        1,
        "only the accepted launch went on"
    );
    // Stopped, not killed: the log writer's queue is written out on the way.
    served.signal("-TERM").await;
    let finished = served.finish().await;

    let events = finished.audit_events();
    assert_eq!(events.len(), 5, "{events:#?}");
    let accepted = event(&events, "req-accepted");
    assert_eq!(accepted["kind"], "launch");
    assert_eq!(accepted["outcome"], "accepted");
    assert_eq!(accepted["status"], 200);
    assert_eq!(accepted["issuer"], iss.as_str());
    assert_eq!(accepted["sub"], "Practitioner/123");
    assert_eq!(accepted["resource"], "Task/abc");
    assert_eq!(accepted["patient"], "Patient/p-42");
    assert_eq!(accepted["intent"], "plan");
    assert_eq!(accepted["jti"], jti.as_str());
    assert_eq!(accepted["client_address"], "127.0.0.1");
    assert_eq!(accepted["user_agent"], USER_AGENT);
    assert!(accepted.get("reason").is_none(), "{accepted}");
    // Without trusted_proxies a client's X-Forwarded-For is not evidence.
    assert!(accepted.get("forwarded_for").is_none(), "{accepted}");
    assert!(accepted.get("fhir_audit_event").is_none(), "{accepted}");
    let time = accepted["time"].as_str().unwrap();
    assert!(
        time.ends_with('Z') && time.contains('T'),
        "RFC 3339 UTC: {time}"
    );

    for (id, reason, issuer) in [
        ("req-replayed", "replayed", Some(iss.as_str())),
        ("req-forged", "bad_signature", Some(iss.as_str())),
        ("req-expired", "expired", Some(iss.as_str())),
        ("req-stranger", "unknown_issuer", None),
    ] {
        let e = event(&events, id);
        assert_eq!(e["kind"], "launch", "{e}");
        assert_eq!(e["outcome"], "rejected", "{e}");
        assert_eq!(e["reason"], reason, "{e}");
        assert_eq!(e["status"], 401, "{e}");
        assert_eq!(e["client_address"], "127.0.0.1", "{e}");
        assert!(e["detail"].is_string(), "{e}");
        match issuer {
            Some(iss) => assert_eq!(e["issuer"], iss, "{e}"),
            // An issuer that is not configured is not named: the token is not evidence.
            None => assert!(e.get("issuer").is_none(), "{e}"),
        }
        // Unverified claims are never logged as facts.
        for field in ["sub", "resource", "patient", "jti"] {
            assert!(e.get(field).is_none(), "{field} in {e}");
        }
    }
    let signature = |t: &str| t.rsplit('.').next().unwrap().to_owned();
    let payload = |t: &str| t.split('.').nth(1).unwrap().to_owned();
    assert_no_secret(
        &finished,
        &[
            ("the cookie", COOKIE_SECRET),
            ("the Authorization header", BEARER_SECRET),
            ("the token's signature", &signature(&good)),
            ("the token's payload", &payload(&good)),
            ("a forged token's signature", &signature(&bad)),
            ("an expired token's payload", &payload(&expired)),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fhir_format_writes_a_koppeltaal_audit_event() {
    let key = mint::shared_key(Alg::RS512);
    let backends = Backends::start(JwksServer::start(&[key]).await).await;
    let builder = backends
        .builder()
        .set_str("audit.format", "fhir")
        .set_str("audit.observer", "module-under-test")
        .set("trusted_proxies", "[\"127.0.0.1\"]");
    let served = Served::start(builder, "info").await;
    let claims = mint::hti_claims(&backends.iss, AUDIENCE);
    let good = key.token(&claims);
    expect_echo(launch(&served, &good, "req-fhir-ok").await).await;
    let bad = forged(&good);
    expect_rejection(
        launch(&served, &bad, "req-fhir-bad").await,
        401,
        "bad_signature",
    )
    .await;
    // Stopped, not killed: the log writer's queue is written out on the way.
    served.signal("-TERM").await;
    let finished = served.finish().await;
    let events = finished.audit_events();

    let parse = |e: &Value| -> Value {
        serde_json::from_str(e["fhir_audit_event"].as_str().expect("fhir_audit_event"))
            .expect("the AuditEvent is JSON")
    };
    let ok = event(&events, "req-fhir-ok");
    assert_eq!(ok["forwarded_for"], "198.51.100.7", "{ok}");
    let fhir = parse(ok);
    assert_eq!(fhir["resourceType"], "AuditEvent");
    assert_eq!(
        fhir["meta"]["profile"][0],
        "http://koppeltaal.nl/fhir/StructureDefinition/KT2AuditEvent"
    );
    // R4's required elements: type, recorded, agent (with requestor), source (observer).
    assert_eq!(
        fhir["type"]["system"],
        "http://dicom.nema.org/resources/ontology/DCM"
    );
    assert_eq!(fhir["type"]["code"], "110100");
    assert_eq!(fhir["subtype"][0]["code"], "110120");
    assert_eq!(fhir["recorded"], ok["time"]);
    assert_eq!(fhir["outcome"], "0");
    let agents = fhir["agent"].as_array().unwrap();
    assert!(
        agents
            .iter()
            .all(|a| a["requestor"].is_boolean() && a["type"].is_object())
    );
    assert_eq!(agents[0]["who"]["reference"], "Practitioner/123");
    assert_eq!(agents[0]["requestor"], true);
    assert_eq!(agents[0]["network"]["address"], "198.51.100.7");
    assert_eq!(agents[1]["requestor"], false);
    assert_eq!(
        fhir["source"]["observer"]["identifier"]["value"],
        "module-under-test"
    );
    assert_eq!(fhir["entity"][0]["what"]["reference"], "Task/abc");
    let extension = |url: &str| {
        fhir["extension"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["url"] == url)
            .map(|x| x["valueId"].clone())
    };
    assert_eq!(
        extension("http://koppeltaal.nl/fhir/StructureDefinition/trace-id"),
        Some(claims["jti"].clone()),
        "trace-id = jti"
    );
    assert_eq!(
        extension("http://koppeltaal.nl/fhir/StructureDefinition/request-id"),
        Some("req-fhir-ok".into())
    );

    let refused = parse(event(&events, "req-fhir-bad"));
    assert_eq!(
        refused["outcome"], "4",
        "a client's failure is a minor failure"
    );
    assert_eq!(refused["agent"][0]["who"]["display"], "unverified");
    assert!(refused["entity"].as_array().is_some_and(|e| !e.is_empty()));
    assert!(
        refused["extension"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["url"] != "http://koppeltaal.nl/fhir/StructureDefinition/trace-id"),
        "no jti from an unverified token: {refused}"
    );
    assert_no_secret(
        &finished,
        &[
            ("the cookie", COOKIE_SECRET),
            ("the Authorization header", BEARER_SECRET),
            ("the token's signature", good.rsplit('.').next().unwrap()),
        ],
    );
}
