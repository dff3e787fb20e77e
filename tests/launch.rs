//! Launches end to end: where the token is read, the HTI claim rules, single use, and what
//! the upstream receives. Every rejection also asserts that nothing reached the upstream.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::mint::{self, now};
use common::*;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(30);

/// Launches `claims` signed by the fixture's key and expects a 401 with `reason`.
async fn expect_claims_rejected(fx: &Fixture, claims: &Value, reason: &str) {
    let token = fx.token(claims);
    let response = within(LIMIT, "launch", fx.launch(&token)).await;
    expect_rejection(response, 401, reason).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_launch_reaches_upstream_with_trusted_headers() {
    let fx = Fixture::start().await;
    let mut claims = fx.claims();
    claims["patient"] = json!("Patient/p-1");
    claims["definition"] = json!("https://example.org/fhir/ActivityDefinition/ad-1");
    claims["intent"] = json!("plan");
    claims["hti-version"] = json!("2.0");
    let token = fx.token(&claims);
    let response = within(
        LIMIT,
        "launch",
        fx.post_form(&[("token", &token), ("iss", "https://fhir.example/r4")]),
    )
    .await;
    let echo = expect_echo(response).await;

    assert_eq!(echo.method, "POST");
    assert_eq!(echo.path(), "/launch");
    assert_eq!(
        echo.form(),
        vec![("iss".to_string(), "https://fhir.example/r4".to_string())],
        "token removed, other fields kept"
    );
    assert_eq!(
        echo.header("content-length"),
        Some(echo.body.len().to_string().as_str()),
        "Content-Length matches the re-encoded body"
    );
    assert_eq!(echo.header("x-hti-iss"), Some(fx.iss.as_str()));
    assert_eq!(echo.header("x-hti-sub"), Some("Practitioner/123"));
    assert_eq!(echo.header("x-hti-resource"), Some("Task/abc"));
    assert_eq!(echo.header("x-hti-patient"), Some("Patient/p-1"));
    assert_eq!(
        echo.header("x-hti-definition"),
        Some("https://example.org/fhir/ActivityDefinition/ad-1")
    );
    assert_eq!(echo.header("x-hti-intent"), Some("plan"));
    assert_eq!(echo.header("x-hti-jti"), claims["jti"].as_str());
    let encoded = echo.header("x-hti-claims").expect("X-HTI-Claims");
    let decoded: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(encoded)
            .expect("X-HTI-Claims is base64url without padding"),
    )
    .expect("X-HTI-Claims is JSON");
    assert_eq!(decoded, claims, "X-HTI-Claims is the verified claims set");
    assert_eq!(fx.upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_claims_absent_means_no_header() {
    let fx = Fixture::start().await;
    let token = fx.good_token();
    let echo = expect_echo(within(LIMIT, "launch", fx.launch(&token)).await).await;
    assert_eq!(echo.header("x-hti-patient"), None);
    assert_eq!(echo.header("x-hti-definition"), None);
    assert_eq!(echo.header("x-hti-intent"), None);
    assert!(
        echo.body.is_empty(),
        "nothing left of the form: {:?}",
        echo.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn koppeltaal_launch_with_token_and_launch_fields_is_accepted() {
    let fx = Fixture::start().await;
    let token = fx.good_token();
    let response = within(
        LIMIT,
        "launch",
        fx.post_form(&[
            ("iss", "https://fhir.example/r4"),
            ("launch", &token),
            ("token", &token),
        ]),
    )
    .await;
    let echo = expect_echo(response).await;
    assert_eq!(
        echo.form(),
        vec![("iss".to_string(), "https://fhir.example/r4".to_string())]
    );
    assert_eq!(echo.header("x-hti-sub"), Some("Practitioner/123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_the_query_of_a_post_is_neither_read_nor_passed_on() {
    let fx = Fixture::start().await;
    let query_token = fx.good_token();
    let request = |body: String| {
        fx.client
            .post(
                fx.guard
                    .url(&format!("/launch?lang=nl&token={query_token}")),
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .send()
    };
    // Only in the query: a POST launch reads the body, so there is no token.
    let response = within(LIMIT, "launch", request(String::new()))
        .await
        .unwrap();
    expect_rejection(response, 400, "missing_token").await;
    assert_eq!(fx.upstream.hits(), 0);

    // In the body: accepted, and the query token does not reach the upstream.
    let body_token = fx.good_token();
    let response = within(LIMIT, "launch", request(form(&[("token", &body_token)])))
        .await
        .unwrap();
    let echo = expect_echo(response).await;
    assert_eq!(echo.path(), "/launch");
    assert_eq!(
        echo.query(),
        vec![("lang".to_string(), "nl".to_string())],
        "token fields removed from the query, others kept"
    );
    assert_eq!(
        echo.header("x-hti-jti"),
        mint::payload_of(&body_token)["jti"].as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_field_alone_is_accepted() {
    let fx = Fixture::start().await;
    let token = fx.good_token();
    let echo =
        expect_echo(within(LIMIT, "launch", fx.post_form(&[("launch", &token)])).await).await;
    assert_eq!(echo.header("x-hti-resource"), Some("Task/abc"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token() {
    let fx = Fixture::start().await;
    let response = within(
        LIMIT,
        "launch",
        fx.post_form(&[("iss", "https://fhir.example/r4")]),
    )
    .await;
    expect_rejection(response, 400, "missing_token").await;
    let response = within(LIMIT, "launch", fx.post_form(&[])).await;
    expect_rejection(response, 400, "missing_token").await;
    assert_eq!(fx.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_tokens() {
    let fx = Fixture::start().await;
    let first = fx.good_token();
    let second = fx.good_token();
    let response = within(
        LIMIT,
        "launch",
        fx.post_form(&[("token", &first), ("launch", &second)]),
    )
    .await;
    expect_rejection(response, 400, "conflicting_tokens").await;
    assert_eq!(fx.upstream.hits(), 0);
    // Neither jti was used up.
    expect_echo(within(LIMIT, "launch", fx.launch(&first)).await).await;
    expect_echo(within(LIMIT, "launch", fx.launch(&second)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_token() {
    let fx = Fixture::start().await;
    let good = fx.good_token();
    let parts: Vec<&str> = good.split('.').collect();
    let not_json = mint::b64(b"{not json");
    let cases = vec![
        "not-a-jwt".to_string(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{}.{}.{}.{}", parts[0], parts[1], parts[2], parts[2]),
        "!!!.@@@.###".to_string(),
        format!("{not_json}.{}.{}", parts[1], parts[2]),
        format!("{}.{not_json}.{}", parts[0], parts[2]),
    ];
    for token in cases {
        let response = within(LIMIT, "launch", fx.launch(&token)).await;
        let status = response.status();
        let body: Value = response.json().await.expect("JSON rejection");
        assert_eq!(status, 401, "{token}: {body}");
        assert_eq!(body["error"], "malformed_token", "{token}: {body}");
    }
    assert_eq!(fx.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_segment_that_is_not_base64url_is_malformed() {
    let fx = Fixture::start().await;
    let good = fx.good_token();
    let (input, _) = good.rsplit_once('.').unwrap();
    let token = format!("{input}.***");
    fx.expect_refused(&token, 401, "malformed_token").await;
    assert_eq!(fx.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_issuer() {
    let fx = Fixture::start().await;
    let mut claims = fx.claims();
    claims["iss"] = json!("https://not-configured.example");
    expect_claims_rejected(&fx, &claims, "unknown_issuer").await;
    assert_eq!(fx.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_claim() {
    let fx = Fixture::start().await;
    for claim in ["iss", "exp", "iat", "jti", "sub", "resource", "aud"] {
        let mut claims = fx.claims();
        claims.as_object_mut().unwrap().remove(claim);
        let response = within(LIMIT, "launch", fx.launch(&fx.token(&claims))).await;
        let status = response.status();
        let body: Value = response.json().await.expect("JSON rejection");
        assert_eq!(status, 401, "without {claim}: {body}");
        assert_eq!(body["error"], "missing_claim", "without {claim}: {body}");
    }
    assert_eq!(fx.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_claim() {
    let fx = Fixture::start().await;
    let now = now();
    let cases: Vec<(&str, Value)> = vec![
        ("exp", json!((now + 300).to_string())),
        ("iat", json!(now.to_string())),
        ("nbf", json!("yesterday")),
        ("aud", json!(42)),
        ("aud", json!([AUDIENCE, 7])),
        ("jti", json!("short-jti")),
        ("jti", json!(12345678901234567890u64)),
        ("sub", json!("Practitioner")),
        ("sub", json!("not a reference")),
        ("sub", json!(123)),
        ("resource", json!("abc")),
        ("resource", json!("Task/")),
        // `patient` may name a person of any type (the GIDS portal's habit), nothing else.
        ("patient", json!("Task/123")),
        ("patient", json!("p-1")),
        ("hti-version", json!("1.0")),
        ("intent", json!("not-an-intent")),
    ];
    for (claim, value) in cases {
        let mut claims = fx.claims();
        claims[claim] = value.clone();
        let response = within(LIMIT, "launch", fx.launch(&fx.token(&claims))).await;
        let status = response.status();
        let body: Value = response.json().await.expect("JSON rejection");
        assert_eq!(status, 401, "{claim} = {value}: {body}");
        assert_eq!(body["error"], "invalid_claim", "{claim} = {value}: {body}");
    }
    assert_eq!(fx.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_claim_variants() {
    let fx = Fixture::start().await;
    let now = now();
    let cases: Vec<(&str, Value)> = vec![
        ("aud", json!(["Device/someone-else", AUDIENCE])),
        ("aud", json!([AUDIENCE])),
        ("sub", json!("Patient/p-9")),
        ("sub", json!("RelatedPerson/rp-1")),
        ("patient", json!("Practitioner/123")),
        ("definition", json!("ActivityDefinition/ad-7")),
        ("hti-version", json!("2.0")),
        ("intent", json!("order")),
        ("idp_hint", json!("idp-1")),
        ("nbf", json!(now - 10)),
        ("unknown-extra-claim", json!({"nested": true})),
    ];
    for (claim, value) in cases {
        let mut claims = fx.claims();
        claims[claim] = value.clone();
        let response = within(LIMIT, "launch", fx.launch(&fx.token(&claims))).await;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{claim} = {value}: {text}");
    }
    assert_eq!(fx.upstream.hits(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_audience() {
    let fx = Fixture::start().await;
    for aud in [
        json!("Device/other-module"),
        json!(["Device/a", "Device/b"]),
    ] {
        let mut claims = fx.claims();
        claims["aud"] = aud;
        expect_claims_rejected(&fx, &claims, "wrong_audience").await;
    }
    assert_eq!(fx.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired() {
    let fx = Fixture::start().await;
    let now = now();
    let mut claims = fx.claims();
    claims["iat"] = json!(now - 200);
    claims["exp"] = json!(now - 60);
    expect_claims_rejected(&fx, &claims, "expired").await;
    assert_eq!(fx.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_within_clock_skew_is_accepted() {
    let fx = Fixture::start().await;
    let now = now();
    let mut claims = fx.claims();
    claims["iat"] = json!(now - 200);
    claims["exp"] = json!(now - 5);
    expect_echo(within(LIMIT, "launch", fx.launch(&fx.token(&claims))).await).await;
    let mut claims = fx.claims();
    claims["iat"] = json!(now + 5);
    claims["exp"] = json!(now + 200);
    expect_echo(within(LIMIT, "launch", fx.launch(&fx.token(&claims))).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_in_future() {
    let fx = Fixture::start().await;
    let now = now();
    let mut claims = fx.claims();
    claims["iat"] = json!(now + 120);
    claims["exp"] = json!(now + 300);
    expect_claims_rejected(&fx, &claims, "issued_in_future").await;
    let mut claims = fx.claims();
    claims["nbf"] = json!(now + 120);
    expect_claims_rejected(&fx, &claims, "issued_in_future").await;
    assert_eq!(fx.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifetime_too_long() {
    let fx = Fixture::start().await;
    let now = now();
    let mut claims = fx.claims();
    claims["iat"] = json!(now);
    claims["exp"] = json!(now + 900);
    expect_claims_rejected(&fx, &claims, "lifetime_too_long").await;
    let mut claims = fx.claims();
    claims["iat"] = json!(now);
    claims["exp"] = json!(now + 301);
    expect_claims_rejected(&fx, &claims, "lifetime_too_long").await;
    assert_eq!(fx.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_max_lifetime_and_versions_are_honoured() {
    let fx = Fixture::start_with(|builder| {
        builder
            .set_str("launch.max_lifetime", "15m")
            .set("launch.hti_versions", r#"["2.0", "2.1"]"#)
    })
    .await;
    let now = now();
    let mut claims = fx.claims();
    claims["iat"] = json!(now);
    claims["exp"] = json!(now + 900);
    claims["hti-version"] = json!("2.1");
    expect_echo(within(LIMIT, "launch", fx.launch(&fx.token(&claims))).await).await;
    let mut claims = fx.claims();
    claims["iat"] = json!(now);
    claims["exp"] = json!(now + 901);
    expect_claims_rejected(&fx, &claims, "lifetime_too_long").await;
    assert_eq!(fx.upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audience_list_in_config() {
    let fx = Fixture::start_with(|builder| {
        builder.set(
            "launch.audience",
            &format!(r#"["Device/other", "{AUDIENCE}"]"#),
        )
    })
    .await;
    let mut claims = fx.claims();
    claims["aud"] = json!("Device/other");
    expect_echo(within(LIMIT, "launch", fx.launch(&fx.token(&claims))).await).await;
    expect_echo(within(LIMIT, "launch", fx.launch(&fx.good_token())).await).await;
    let mut claims = fx.claims();
    claims["aud"] = json!("Device/third");
    expect_claims_rejected(&fx, &claims, "wrong_audience").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed() {
    let fx = Fixture::start().await;
    let token = fx.good_token();
    expect_echo(within(LIMIT, "launch", fx.launch(&token)).await).await;
    let response = within(LIMIT, "replay", fx.launch(&token)).await;
    expect_rejection(response, 401, "replayed").await;
    // A different token with the same jti is a replay as well.
    let mut claims = mint::payload_of(&token);
    claims["resource"] = json!("Task/other");
    expect_claims_rejected(&fx, &claims, "replayed").await;
    assert_eq!(
        fx.upstream.hits(),
        1,
        "only the first launch reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_submissions_accept_exactly_one() {
    let fx = Fixture::start().await;
    let token = fx.good_token();
    let body = form(&[("token", &token)]);
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let client = client();
        let url = fx.guard.url("/launch");
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("accept", "application/json")
                .body(body)
                .send()
                .await
                .expect("launch");
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            (status, text)
        }));
    }
    let mut accepted = 0;
    let mut replayed = 0;
    for task in tasks {
        let (status, text) = within(LIMIT, "concurrent launch", task)
            .await
            .expect("task");
        match status {
            200 => accepted += 1,
            401 => {
                let body: Value = serde_json::from_str(&text).expect("JSON rejection");
                assert_eq!(body["error"], "replayed", "{text}");
                replayed += 1;
            }
            other => panic!("unexpected {other}: {text}"),
        }
    }
    assert_eq!(accepted, 1);
    assert_eq!(replayed, 63);
    assert_eq!(fx.upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_checks_do_not_burn_the_jti() {
    let fx = Fixture::start().await;
    let good = fx.claims();
    let now = now();

    // Signed by a key the issuer does not publish, under the issuer's kid.
    let stranger = mint::shared_key(Alg::RS256);
    let header = json!({"alg": "RS512", "kid": fx.key.kid, "typ": "JWT"});
    let forged = mint::compact(&header, &good, |input| stranger.sign_as(Alg::RS512, input));
    fx.expect_refused(&forged, 401, "bad_signature").await;

    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("Device/other");
    expect_claims_rejected(&fx, &wrong_aud, "wrong_audience").await;

    let mut too_long = good.clone();
    too_long["exp"] = json!(now + 3600);
    expect_claims_rejected(&fx, &too_long, "lifetime_too_long").await;

    let mut bad_sub = good.clone();
    bad_sub["sub"] = json!("nobody");
    expect_claims_rejected(&fx, &bad_sub, "invalid_claim").await;

    let mut expired = good.clone();
    expired["iat"] = json!(now - 400);
    expired["exp"] = json!(now - 100);
    expect_claims_rejected(&fx, &expired, "expired").await;

    assert_eq!(fx.upstream.hits(), 0);
    expect_echo(within(LIMIT, "good launch", fx.launch(&fx.token(&good))).await).await;
    assert_eq!(fx.upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_jti_at_two_issuers_is_two_launches() {
    let upstream = Upstream::start().await;
    let key_a = mint::shared_key(Alg::RS512);
    let key_b = mint::shared_key(Alg::ES256);
    let jwks_a = JwksServer::start(&[key_a]).await;
    let jwks_b = JwksServer::start(&[key_b]).await;
    let (iss_a, iss_b) = (unique_issuer(), unique_issuer());
    let guard = GuardBuilder::new(&upstream.url())
        .issuer(&iss_a, &jwks_a.url())
        .issuer(&iss_b, &jwks_b.url())
        .start()
        .await;
    let client = client();
    let jti = mint::random_jti();
    for (iss, key) in [(&iss_a, key_a), (&iss_b, key_b)] {
        let mut claims = mint::hti_claims(iss, AUDIENCE);
        claims["jti"] = json!(jti);
        let response = client
            .post(guard.url("/launch"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("token", &key.token(&claims))]))
            .send();
        let echo = expect_echo(within(LIMIT, "launch", response).await.expect("launch")).await;
        assert_eq!(echo.header("x-hti-iss"), Some(iss.as_str()));
    }
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_store_unavailable_when_full() {
    let fx = Fixture::start_with(|builder| builder.set("replay.max_entries", "1")).await;
    expect_echo(within(LIMIT, "first", fx.launch(&fx.good_token())).await).await;
    let response = within(LIMIT, "second", fx.launch(&fx.good_token())).await;
    expect_rejection(response, 503, "replay_store_unavailable").await;
    assert_eq!(
        fx.upstream.hits(),
        1,
        "the refused launch did not reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_replay_entries_free_their_room() {
    let fx = Fixture::start_with(|builder| {
        builder
            .set("replay.max_entries", "1")
            .set_str("launch.clock_skew", "1s")
    })
    .await;
    let mut short = fx.claims();
    short["exp"] = json!(now() + 2);
    expect_echo(within(LIMIT, "short-lived", fx.launch(&fx.token(&short))).await).await;
    fx.expect_refused(&fx.good_token(), 503, "replay_store_unavailable")
        .await;
    // Once exp + clock_skew has passed, the entry goes and a new launch fits again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let response = within(LIMIT, "launch", fx.launch(&fx.good_token())).await;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{text}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the expired entry was never removed: {text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(fx.upstream.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_content_type_with_charset_is_a_form() {
    let fx = Fixture::start().await;
    let token = fx.good_token();
    let response = fx
        .client
        .post(fx.guard.url("/launch"))
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=UTF-8",
        )
        .body(form(&[("token", &token)]))
        .send();
    let echo = expect_echo(within(LIMIT, "launch", response).await.unwrap()).await;
    assert_eq!(echo.header("x-hti-sub"), Some("Practitioner/123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_not_allowed() {
    let fx = Fixture::start().await;
    let token = fx.good_token();
    let url = format!("{}?token={token}", fx.guard.url("/launch"));
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let response = fx
            .client
            .request(method.clone(), &url)
            .header("accept", "application/json")
            .send();
        let response = within(LIMIT, "launch", response).await.expect("request");
        expect_rejection(response, 405, "method_not_allowed").await;
    }
    assert_eq!(fx.upstream.hits(), 0);
    // The token was not used.
    expect_echo(within(LIMIT, "POST", fx.launch(&token)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_launch_when_enabled() {
    let fx =
        Fixture::start_with(|builder| builder.set("launch.methods", r#"["POST", "GET"]"#)).await;
    let token = fx.good_token();
    let url = format!(
        "{}?iss={}&token={token}",
        fx.guard.url("/launch"),
        "https%3A%2F%2Ffhir.example%2Fr4"
    );
    let response = within(LIMIT, "GET launch", fx.client.get(&url).send())
        .await
        .expect("GET");
    let echo = expect_echo(response).await;
    assert_eq!(echo.method, "GET");
    assert_eq!(echo.path(), "/launch");
    assert_eq!(
        echo.query(),
        vec![("iss".to_string(), "https://fhir.example/r4".to_string())],
        "token removed from the query, other parameters kept"
    );
    assert_eq!(echo.header("x-hti-sub"), Some("Practitioner/123"));

    let token = fx.good_token();
    let url = format!("{}?launch={token}", fx.guard.url("/launch"));
    let echo = expect_echo(
        within(LIMIT, "GET launch", fx.client.get(&url).send())
            .await
            .expect("GET"),
    )
    .await;
    assert!(echo.query().is_empty(), "{}", echo.uri);

    let url = format!(
        "{}?token={}&launch={}",
        fx.guard.url("/launch"),
        fx.good_token(),
        fx.good_token()
    );
    let response = fx
        .client
        .get(&url)
        .header("accept", "application/json")
        .send();
    let response = within(LIMIT, "GET with two tokens", response)
        .await
        .expect("GET");
    expect_rejection(response, 400, "conflicting_tokens").await;

    let response = fx
        .client
        .get(fx.guard.url("/launch"))
        .header("accept", "application/json")
        .send();
    let response = within(LIMIT, "GET without token", response)
        .await
        .expect("GET");
    expect_rejection(response, 400, "missing_token").await;
    assert_eq!(fx.upstream.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_too_large() {
    let fx = Fixture::start().await;
    let token = fx.good_token();
    let padding = "x".repeat(100 * 1024);
    let response = within(
        LIMIT,
        "large launch",
        fx.post_form(&[("token", &token), ("padding", &padding)]),
    )
    .await;
    expect_rejection(response, 413, "body_too_large").await;
    assert_eq!(fx.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_max_body() {
    let fx = Fixture::start_with(|builder| builder.set_str("launch.max_body", "4KiB")).await;
    let padding = "x".repeat(5 * 1024);
    let response = within(
        LIMIT,
        "large launch",
        fx.post_form(&[("token", &fx.good_token()), ("padding", &padding)]),
    )
    .await;
    expect_rejection(response, 413, "body_too_large").await;
    assert_eq!(fx.upstream.hits(), 0);
    expect_echo(within(LIMIT, "launch", fx.launch(&fx.good_token())).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_paths_and_fields() {
    let fx = Fixture::start_with(|builder| {
        builder
            .set("launch.paths", r#"["/hti/start"]"#)
            .set("launch.token_fields", r#"["launch"]"#)
    })
    .await;
    let token = fx.good_token();
    // /launch is now an ordinary path: passed through untouched, no claims attached.
    let response = fx
        .client
        .post(fx.guard.url("/launch"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-hti-sub", "Patient/evil")
        .body(form(&[("token", &token)]))
        .send();
    let echo = expect_echo(within(LIMIT, "passthrough", response).await.expect("POST")).await;
    assert_eq!(echo.form(), vec![("token".to_string(), token.clone())]);
    assert!(echo.hti_headers().is_empty(), "{:?}", echo.hti_headers());

    // `token` is not a configured field any more.
    let response = post_form(
        &fx.client,
        &fx.guard.url("/hti/start"),
        &[("token", &token)],
    )
    .await;
    expect_rejection(response, 400, "missing_token").await;

    let response = fx
        .client
        .post(fx.guard.url("/hti/start"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("launch", &token)]))
        .send();
    let echo = expect_echo(within(LIMIT, "launch", response).await.expect("POST")).await;
    assert_eq!(echo.path(), "/hti/start");
    assert_eq!(echo.header("x-hti-sub"), Some("Practitioner/123"));
    assert_eq!(fx.upstream.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejection_is_json_or_html_by_accept() {
    let fx = Fixture::start().await;
    let mut claims = fx.claims();
    claims["aud"] = json!("Device/other");
    let token = fx.token(&claims);

    let body = fx.expect_refused(&token, 401, "wrong_audience").await;
    let object = body.as_object().expect("object");
    assert_eq!(object.len(), 3, "exactly error, message, reference: {body}");

    for accept in [None, Some("text/html,application/xhtml+xml,*/*;q=0.8")] {
        let mut request = fx
            .client
            .post(fx.guard.url("/launch"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("token", &token)]));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let response = within(LIMIT, "html", request.send()).await.expect("POST");
        assert_eq!(response.status(), 401);
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(content_type.starts_with("text/html"), "{content_type}");
        let reference = response
            .headers()
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .expect("X-Request-Id")
            .to_string();
        let html = response.text().await.expect("html");
        assert!(
            html.contains(&reference),
            "the page shows the reference: {html}"
        );
        assert!(!html.contains(&token), "the page does not echo the token");
        assert!(
            !html.contains(AUDIENCE),
            "no technical detail on the page: {html}"
        );
    }
    assert_eq!(fx.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rejection_has_its_own_reference() {
    let fx = Fixture::start().await;
    let first = fx.expect_refused("x.y.z", 401, "malformed_token").await;
    let second = fx.expect_refused("x.y.z", 401, "malformed_token").await;
    assert_ne!(first["reference"], second["reference"]);
}
