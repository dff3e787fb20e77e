//! Launches shaped exactly as the GIDS HTI test portal (GIDS-HTI-TestSuite, the reference HTI
//! producer) makes them, for every user type it offers, through the real guard. The portal
//! (jose4j, `HtiPortalService.getLaunchToken`) signs RS512 with a header of only `kid` (an
//! MD5 JWK thumbprint, 22 base64url characters) and `alg`, no `typ`; its claims, in its
//! order: `resource` `Task/<id>`, `definition` `ActivityDefinition/<id>`, `patient` =
//! `<UserType>/<userId>` (the launching user, whatever the type), `intent` `plan`,
//! `hti-version` `2.0`, `sub` = the same reference, `iat`, `aud` a string, `iss` (its own
//! origin), `exp` = `iat` + 300, `jti` a UUID. Ids are 8 hex characters. It POSTs the token as
//! the form field `token`.

mod common;

use common::mint::{self, Alg, b64, random_bytes, random_hex};
use common::*;
use serde_json::{Map, Value, json};

/// The portal's default `hti.portal.aud`.
const GIDS_AUD: &str = "module.example.com";
/// The user types the portal's form offers (`user_type`).
const USER_TYPES: [&str; 4] = ["Person", "Patient", "Practitioner", "RelatedPerson"];

struct Portal {
    key: SigningKey,
    iss: String,
    jwks: JwksServer,
}

/// The portal's `getSortOfRandomIdentifier()`: the first group of a UUID.
fn short_id() -> String {
    random_hex(4)
}

fn uuid() -> String {
    let hex = random_hex(16);
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

impl Portal {
    async fn start() -> Portal {
        let key = SigningKey::with_kid(Alg::RS512, &b64(&random_bytes(16)));
        let jwks = JwksServer::start(&[&key]).await;
        Portal {
            key,
            iss: format!("http://localhost:{}", 8000 + u16::from(random_bytes(1)[0])),
            jwks,
        }
    }

    /// The claims, in the portal's order, for a user of `user_type`.
    fn claims(&self, user_type: &str) -> (Value, String) {
        let user = format!("{user_type}/{}", short_id());
        let now = mint::now();
        let mut claims = Map::new();
        for (name, value) in [
            ("resource", json!(format!("Task/{}", short_id()))),
            (
                "definition",
                json!(format!("ActivityDefinition/{}", short_id())),
            ),
            ("patient", json!(user)),
            ("intent", json!("plan")),
            ("hti-version", json!("2.0")),
            ("sub", json!(user)),
            ("iat", json!(now)),
            ("aud", json!(GIDS_AUD)),
            ("iss", json!(self.iss)),
            ("exp", json!(now + 300)),
            ("jti", json!(uuid())),
        ] {
            claims.insert(name.into(), value);
        }
        (Value::Object(claims), user)
    }

    fn token(&self, claims: &Value) -> String {
        self.key
            .token_with_header(&json!({"kid": self.key.kid, "alg": "RS512"}), claims)
    }
}

async fn guard_for(portal: &Portal, upstream: &Upstream) -> Guard {
    GuardBuilder::new(&upstream.url())
        .issuer(&portal.iss, &portal.jwks.url())
        .set_str("launch.audience", GIDS_AUD)
        .start()
        .await
}

async fn launch(guard: &Guard, token: &str) -> reqwest::Response {
    post_form(&client(), &guard.url("/module_launch"), &[("token", token)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_user_type_the_portal_offers_is_accepted() {
    let portal = Portal::start().await;
    let upstream = Upstream::start().await;
    let guard = GuardBuilder::new(&upstream.url())
        .issuer(&portal.iss, &portal.jwks.url())
        .set_str("launch.audience", GIDS_AUD)
        .set("launch.paths", r#"["/module_launch"]"#)
        .start()
        .await;
    for user_type in USER_TYPES {
        let (claims, user) = portal.claims(user_type);
        let echo = expect_echo(launch(&guard, &portal.token(&claims)).await).await;
        assert_eq!(echo.path(), "/module_launch", "{user_type}");
        assert_eq!(echo.header("x-hti-iss"), Some(portal.iss.as_str()));
        assert_eq!(echo.header("x-hti-sub"), Some(user.as_str()), "{user_type}");
        // Passed on as sent: the app sees which type of user the portal put there.
        assert_eq!(
            echo.header("x-hti-patient"),
            Some(user.as_str()),
            "{user_type}"
        );
        assert_eq!(echo.header("x-hti-resource"), claims["resource"].as_str());
        assert_eq!(
            echo.header("x-hti-definition"),
            claims["definition"].as_str()
        );
        assert_eq!(echo.header("x-hti-intent"), Some("plan"));
        assert_eq!(echo.header("x-hti-jti"), claims["jti"].as_str());
        assert!(echo.form().is_empty(), "the token field is removed");
    }
    assert_eq!(upstream.hits(), USER_TYPES.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patient_still_names_a_person_and_nothing_else() {
    let portal = Portal::start().await;
    let upstream = Upstream::start().await;
    let guard = guard_for(&portal, &upstream).await;
    for patient in [
        "Device/1a2b3c4d",
        "Task/1a2b3c4d",
        "person/1a2b3c4d",
        "Patient/",
        "Person/1a2b 3c4d",
        "Practitioner/1a2b3c4d\r\nX-HTI-Sub: Patient/1",
    ] {
        let (mut claims, _) = portal.claims("Person");
        claims["patient"] = json!(patient);
        let response = guard.launch(&client(), &portal.token(&claims)).await;
        expect_rejection(response, 401, "invalid_claim").await;
    }
    assert_eq!(upstream.hits(), 0, "nothing reached the app");
}
