//! The HTI claim rules as a pure function of (claims, now, rules), so that every rule is
//! table-tested without sockets or clocks.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::Reason;

/// The rules a claims set is held to (from `[launch]`).
#[derive(Debug, Clone)]
pub struct ClaimRules {
    pub audience: Vec<String>,
    pub max_lifetime: Duration,
    pub clock_skew: Duration,
    pub hti_versions: Vec<String>,
}

/// The claims of a launch that passed every rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HtiClaims {
    pub iss: String,
    pub sub: String,
    pub resource: String,
    pub patient: Option<String>,
    pub definition: Option<String>,
    pub intent: Option<String>,
    pub jti: String,
    pub exp: i64,
    pub iat: i64,
}

/// A claim rule that failed: the reason and a line for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimFailure {
    pub reason: Reason,
    pub detail: String,
}

fn fail(reason: Reason, detail: impl Into<String>) -> ClaimFailure {
    ClaimFailure {
        reason,
        detail: detail.into(),
    }
}

/// Shortest accepted `jti`: enough room for the entropy single use depends on.
pub const MIN_JTI_LEN: usize = 16;

/// FHIR RequestIntent codes, the values `intent` may take.
pub const INTENTS: [&str; 9] = [
    "proposal",
    "plan",
    "directive",
    "order",
    "original-order",
    "reflex-order",
    "filler-order",
    "instance-order",
    "option",
];

/// Apply every HTI claim rule at time `now` (UNIX seconds). `iss` has already chosen the
/// issuer; it is checked again for shape only.
pub fn check(
    claims: &Map<String, Value>,
    now: i64,
    rules: &ClaimRules,
) -> Result<HtiClaims, ClaimFailure> {
    for name in ["iss", "aud", "exp", "iat", "jti", "sub", "resource"] {
        if claims.get(name).is_none_or(Value::is_null) {
            return Err(fail(Reason::MissingClaim, format!("{name} is missing")));
        }
    }
    let iss = string_claim(claims, "iss")?;
    // The issuer goes into `X-HTI-Iss`; under `introspection.all_issuers` (or from an
    // introspection answer) it is not a configured name that was checked at load.
    if !header_safe(iss) {
        return Err(fail(
            Reason::InvalidClaim,
            "iss holds characters a header cannot carry as they are",
        ));
    }
    let exp = numeric_date(claims, "exp")?;
    let iat = numeric_date(claims, "iat")?;
    let nbf = match claims.get("nbf") {
        None | Some(Value::Null) => None,
        Some(_) => Some(numeric_date(claims, "nbf")?),
    };
    check_audience(&claims["aud"], &rules.audience)?;

    let skew = secs(rules.clock_skew);
    if now >= exp.saturating_add(skew) {
        return Err(fail(
            Reason::Expired,
            format!("exp {exp} is not after now {now}"),
        ));
    }
    if iat > now.saturating_add(skew) {
        return Err(fail(
            Reason::IssuedInFuture,
            format!("iat {iat} is after now {now}"),
        ));
    }
    if let Some(nbf) = nbf
        && nbf > now.saturating_add(skew)
    {
        return Err(fail(
            Reason::IssuedInFuture,
            format!("nbf {nbf} is after now {now}"),
        ));
    }
    if exp.saturating_sub(iat) > secs(rules.max_lifetime) {
        return Err(fail(
            Reason::LifetimeTooLong,
            format!(
                "exp - iat = {}s exceeds {}s",
                exp.saturating_sub(iat),
                secs(rules.max_lifetime)
            ),
        ));
    }
    if exp < iat {
        return Err(fail(Reason::InvalidClaim, "exp is before iat"));
    }

    let jti = string_claim(claims, "jti")?;
    if jti.chars().count() < MIN_JTI_LEN {
        return Err(fail(
            Reason::InvalidClaim,
            format!(
                "jti has {} characters, at least {MIN_JTI_LEN} required",
                jti.chars().count()
            ),
        ));
    }
    if !visible_ascii(jti) {
        return Err(fail(
            Reason::InvalidClaim,
            "jti holds characters a header cannot carry",
        ));
    }
    let sub = reference_claim(claims, "sub", None)?;
    let resource = reference_claim(claims, "resource", None)?;
    let patient = optional(claims, "patient")?
        .map(|p| {
            if is_patient_reference(p) {
                Ok(p.to_owned())
            } else {
                Err(fail(
                    Reason::InvalidClaim,
                    format!(
                        "patient is not a {}/<id> reference",
                        PATIENT_TYPES.join("|")
                    ),
                ))
            }
        })
        .transpose()?;
    let definition = optional(claims, "definition")?
        .map(|d| {
            if is_reference(d, Some("ActivityDefinition")) || is_canonical_url(d) {
                Ok(d.to_owned())
            } else {
                Err(fail(
                    Reason::InvalidClaim,
                    "definition is neither a canonical URL nor ActivityDefinition/<id>",
                ))
            }
        })
        .transpose()?;
    let intent = optional(claims, "intent")?
        .map(|i| {
            if INTENTS.contains(&i) {
                Ok(i.to_owned())
            } else {
                Err(fail(
                    Reason::InvalidClaim,
                    "intent is not a FHIR RequestIntent code",
                ))
            }
        })
        .transpose()?;
    if let Some(version) = optional(claims, "hti-version")?
        && !rules.hti_versions.iter().any(|v| v == version)
    {
        return Err(fail(
            Reason::InvalidClaim,
            format!("hti-version {version:?} is not accepted"),
        ));
    }
    let checked = HtiClaims {
        iss: iss.to_owned(),
        sub,
        resource,
        patient,
        definition,
        intent,
        jti: jti.to_owned(),
        exp,
        iat,
    };
    // The rules above admit header-safe values only; this is the one place that makes sure,
    // for every path (JWKS, introspection answers), so that `headers::set_trusted` is never
    // handed a value it would have to drop.
    if let Some(name) = checked
        .header_values()
        .find_map(|(name, value)| (!header_safe(value)).then_some(name))
    {
        return Err(fail(
            Reason::InvalidClaim,
            format!("{name} holds characters a header cannot carry as they are"),
        ));
    }
    Ok(checked)
}

impl HtiClaims {
    /// Every claim that goes into a trusted header, by claim name, present ones only.
    pub fn header_values(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("iss", Some(&self.iss)),
            ("sub", Some(&self.sub)),
            ("resource", Some(&self.resource)),
            ("patient", self.patient.as_ref()),
            ("definition", self.definition.as_ref()),
            ("intent", self.intent.as_ref()),
            ("jti", Some(&self.jti)),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v.as_str())))
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn string_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Result<&'a str, ClaimFailure> {
    match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(fail(Reason::MissingClaim, format!("{name} is empty"))),
        _ => Err(fail(
            Reason::InvalidClaim,
            format!("{name} is not a string"),
        )),
    }
}

/// An optional string claim: absent (or null) is fine, any other type is not.
fn optional<'a>(
    claims: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, ClaimFailure> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        Some(_) => Err(fail(
            Reason::InvalidClaim,
            format!("{name} is not a non-empty string"),
        )),
    }
}

/// A NumericDate: a JSON number of seconds (fractions are allowed and truncated).
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<i64, ClaimFailure> {
    match claims.get(name) {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.floor() as i64)
            })
            .ok_or_else(|| fail(Reason::InvalidClaim, format!("{name} is out of range"))),
        _ => Err(fail(
            Reason::InvalidClaim,
            format!("{name} is not a number"),
        )),
    }
}

fn check_audience(aud: &Value, accepted: &[String]) -> Result<(), ClaimFailure> {
    let matches = |a: &str| accepted.iter().any(|x| x == a);
    let ok = match aud {
        Value::String(a) => matches(a),
        Value::Array(list) => {
            if list.is_empty() {
                return Err(fail(Reason::MissingClaim, "aud is an empty list"));
            }
            let mut any = false;
            for item in list {
                match item {
                    Value::String(a) => any |= matches(a),
                    _ => return Err(fail(Reason::InvalidClaim, "aud holds a non-string")),
                }
            }
            any
        }
        _ => {
            return Err(fail(
                Reason::InvalidClaim,
                "aud is not a string or list of strings",
            ));
        }
    };
    if ok {
        Ok(())
    } else {
        Err(fail(Reason::WrongAudience, "aud does not name this module"))
    }
}

fn reference_claim(
    claims: &Map<String, Value>,
    name: &str,
    resource_type: Option<&str>,
) -> Result<String, ClaimFailure> {
    let value = string_claim(claims, name)?;
    if is_reference(value, resource_type) {
        Ok(value.to_owned())
    } else {
        Err(fail(
            Reason::InvalidClaim,
            match resource_type {
                Some(t) => format!("{name} is not a {t}/<id> reference"),
                None => format!("{name} is not a <ResourceType>/<id> reference"),
            },
        ))
    }
}

/// `<ResourceType>/<id>`: a FHIR type name (capitalised letters) and a FHIR id
/// (1 to 64 of `A-Za-z0-9-.`).
pub fn is_reference(value: &str, resource_type: Option<&str>) -> bool {
    let Some((kind, id)) = value.split_once('/') else {
        return false;
    };
    let kind_ok = match resource_type {
        Some(t) => kind == t,
        None => {
            kind.len() <= 64
                && kind.starts_with(|c: char| c.is_ascii_uppercase())
                && kind.chars().all(|c| c.is_ascii_alphabetic())
        }
    };
    kind_ok
        && (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// The resource types `patient` may name. HTI 2.0 says `Patient`, but the GIDS HTI test
/// portal (GIDS-HTI-TestSuite, the reference producer) puts the launching user there for
/// every user type it offers (`patient` = `sub` = `<UserType>/<id>`), so the person types a
/// `sub` can name are accepted too, and passed on as sent: the app sees the type.
pub const PATIENT_TYPES: [&str; 4] = ["Patient", "Person", "Practitioner", "RelatedPerson"];

/// `<Type>/<id>` with `Type` one of [`PATIENT_TYPES`].
pub fn is_patient_reference(value: &str) -> bool {
    PATIENT_TYPES.iter().any(|t| is_reference(value, Some(t)))
}

/// A canonical URL (optionally `|version`), as visible ASCII.
pub fn is_canonical_url(value: &str) -> bool {
    (value.starts_with("https://") || value.starts_with("http://") || value.starts_with("urn:"))
        && value.len() <= 2048
        && visible_ascii(value)
}

/// Visible ASCII only (no space).
fn visible_ascii(value: &str) -> bool {
    value.bytes().all(|b| (0x21..0x7f).contains(&b))
}

/// Whether `value` can be a header value exactly as it is: visible ASCII and inner spaces
/// (no control character, no CR/LF/NUL, no byte above 0x7e), not empty, and no space at
/// either end (an HTTP parser trims those, so the app would read another value than the
/// one `X-HTI-Claims` holds).
pub fn header_safe(value: &str) -> bool {
    !value.is_empty()
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && value.bytes().all(|b| (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn rules() -> ClaimRules {
        ClaimRules {
            audience: vec!["Device/module".into()],
            max_lifetime: Duration::from_secs(300),
            clock_skew: Duration::from_secs(30),
            hti_versions: vec!["2.0".into()],
        }
    }

    fn good() -> Value {
        json!({
            "iss": "portal", "aud": "Device/module", "sub": "Practitioner/123",
            "resource": "Task/abc-1", "jti": "0123456789abcdef0123",
            "iat": NOW - 10, "exp": NOW + 290,
        })
    }

    fn run(mut edit: impl FnMut(&mut Map<String, Value>)) -> Result<HtiClaims, Reason> {
        let mut claims = good().as_object().unwrap().clone();
        edit(&mut claims);
        check(&claims, NOW, &rules()).map_err(|f| f.reason)
    }

    fn set(name: &'static str, value: Value) -> impl FnMut(&mut Map<String, Value>) {
        move |c| {
            c.insert(name.into(), value.clone());
        }
    }

    fn remove(name: &'static str) -> impl FnMut(&mut Map<String, Value>) {
        move |c| {
            c.remove(name);
        }
    }

    #[test]
    fn a_good_claims_set_passes() {
        let c = run(|_| {}).unwrap();
        assert_eq!(c.sub, "Practitioner/123");
        assert_eq!(c.resource, "Task/abc-1");
        assert_eq!(c.patient, None);
        let c = run(|c| {
            c.insert("patient".into(), json!("Patient/9"));
            c.insert(
                "definition".into(),
                json!("https://x.example/ActivityDefinition/a|1.0"),
            );
            c.insert("intent".into(), json!("plan"));
            c.insert("hti-version".into(), json!("2.0"));
            c.insert("aud".into(), json!(["other", "Device/module"]));
            c.insert("nbf".into(), json!(NOW - 5));
        })
        .unwrap();
        assert_eq!(c.patient.as_deref(), Some("Patient/9"));
        assert_eq!(c.intent.as_deref(), Some("plan"));
    }

    #[test]
    fn each_rule_gives_its_reason() {
        use Reason::*;
        type Edit = Box<dyn FnMut(&mut Map<String, Value>)>;
        let cases: Vec<(&str, Edit, Reason)> = vec![
            ("no exp", Box::new(remove("exp")), MissingClaim),
            ("no iat", Box::new(remove("iat")), MissingClaim),
            ("no jti", Box::new(remove("jti")), MissingClaim),
            ("no sub", Box::new(remove("sub")), MissingClaim),
            ("no resource", Box::new(remove("resource")), MissingClaim),
            ("no aud", Box::new(remove("aud")), MissingClaim),
            ("null aud", Box::new(set("aud", Value::Null)), MissingClaim),
            (
                "empty aud list",
                Box::new(set("aud", json!([]))),
                MissingClaim,
            ),
            (
                "exp as string",
                Box::new(set("exp", json!("1800000290"))),
                InvalidClaim,
            ),
            (
                "iat as bool",
                Box::new(set("iat", json!(true))),
                InvalidClaim,
            ),
            (
                "nbf as string",
                Box::new(set("nbf", json!("0"))),
                InvalidClaim,
            ),
            (
                "aud as number",
                Box::new(set("aud", json!(5))),
                InvalidClaim,
            ),
            (
                "aud list with number",
                Box::new(set("aud", json!(["Device/module", 1]))),
                InvalidClaim,
            ),
            (
                "other aud",
                Box::new(set("aud", json!("Device/other"))),
                WrongAudience,
            ),
            (
                "other aud list",
                Box::new(set("aud", json!(["a", "b"]))),
                WrongAudience,
            ),
            (
                "expired beyond skew",
                Box::new(set("exp", json!(NOW - 30))),
                Expired,
            ),
            (
                "iat beyond skew",
                Box::new(set("iat", json!(NOW + 31))),
                IssuedInFuture,
            ),
            (
                "nbf beyond skew",
                Box::new(set("nbf", json!(NOW + 31))),
                IssuedInFuture,
            ),
            (
                "lifetime 301s",
                Box::new(set("exp", json!(NOW + 291))),
                LifetimeTooLong,
            ),
            (
                "short jti",
                Box::new(set("jti", json!("0123456789abcde"))),
                InvalidClaim,
            ),
            (
                "jti number",
                Box::new(set("jti", json!(1234567890123456789u64))),
                InvalidClaim,
            ),
            (
                "jti with newline",
                Box::new(set("jti", json!("0123456789abcdef\nX"))),
                InvalidClaim,
            ),
            (
                "sub not a reference",
                Box::new(set("sub", json!("123"))),
                InvalidClaim,
            ),
            (
                "sub lower type",
                Box::new(set("sub", json!("practitioner/1"))),
                InvalidClaim,
            ),
            (
                "resource with space",
                Box::new(set("resource", json!("Task/a b"))),
                InvalidClaim,
            ),
            (
                "resource empty id",
                Box::new(set("resource", json!("Task/"))),
                InvalidClaim,
            ),
            (
                "patient a Task",
                Box::new(set("patient", json!("Task/1"))),
                InvalidClaim,
            ),
            (
                "patient lower type",
                Box::new(set("patient", json!("person/1"))),
                InvalidClaim,
            ),
            (
                "iss with newline",
                Box::new(set("iss", json!("https://portal\nX-HTI-Sub: Patient/1"))),
                InvalidClaim,
            ),
            (
                "iss with CR",
                Box::new(set("iss", json!("portal\r"))),
                InvalidClaim,
            ),
            (
                "iss with NUL",
                Box::new(set("iss", json!("po\0rtal"))),
                InvalidClaim,
            ),
            (
                "iss with tab",
                Box::new(set("iss", json!("po\trtal"))),
                InvalidClaim,
            ),
            (
                "iss with DEL",
                Box::new(set("iss", json!("po\u{7f}rtal"))),
                InvalidClaim,
            ),
            (
                "iss not ASCII",
                Box::new(set("iss", json!("pörtal"))),
                InvalidClaim,
            ),
            (
                "iss padded",
                Box::new(set("iss", json!(" portal"))),
                InvalidClaim,
            ),
            (
                "iss trailing space",
                Box::new(set("iss", json!("portal "))),
                InvalidClaim,
            ),
            (
                "definition junk",
                Box::new(set("definition", json!("not a url"))),
                InvalidClaim,
            ),
            (
                "intent unknown",
                Box::new(set("intent", json!("whim"))),
                InvalidClaim,
            ),
            (
                "hti-version 1.0",
                Box::new(set("hti-version", json!("1.0"))),
                InvalidClaim,
            ),
            (
                "hti-version number",
                Box::new(set("hti-version", json!(2.0))),
                InvalidClaim,
            ),
            ("iss number", Box::new(set("iss", json!(1))), InvalidClaim),
        ];
        for (name, edit, want) in cases {
            assert_eq!(run(edit).err(), Some(want), "{name}");
        }
    }

    #[test]
    fn edges_of_the_time_rules() {
        // skew allows up to 29s after exp, not 30s
        assert_eq!(
            run(|c| {
                c.insert("iat".into(), json!(NOW - 200));
                c.insert("exp".into(), json!(NOW - 29));
            })
            .map(|c| c.exp),
            Ok(NOW - 29)
        );
        assert_eq!(
            run(|c| {
                c.insert("iat".into(), json!(NOW - 200));
                c.insert("exp".into(), json!(NOW - 30));
            })
            .err(),
            Some(Reason::Expired)
        );
        // iat exactly at now + skew is allowed; lifetime exactly max is allowed
        assert!(
            run(|c| {
                c.insert("iat".into(), json!(NOW + 30));
                c.insert("exp".into(), json!(NOW + 330));
            })
            .is_ok()
        );
        // fractional NumericDates are numbers
        assert!(run(set("iat", json!((NOW - 10) as f64 + 0.5))).is_ok());
    }

    #[test]
    fn patient_may_name_any_person_type_the_gids_portal_sends() {
        for kind in PATIENT_TYPES {
            let value = format!("{kind}/3f2a9c1e");
            let c = run(set("patient", json!(value))).unwrap();
            assert_eq!(c.patient.as_deref(), Some(value.as_str()), "{kind}");
        }
        assert!(!is_patient_reference("Device/1"));
        assert!(!is_patient_reference("Patient/"));
    }

    #[test]
    fn an_iss_with_inner_spaces_is_header_safe() {
        let c = run(set("iss", json!("Portal A"))).unwrap();
        assert_eq!(c.iss, "Portal A");
    }

    /// Whatever byte a claim holds, a claims set that passes is one every header can carry
    /// exactly: the promise `headers::set_trusted` relies on.
    #[test]
    fn every_value_that_passes_fits_a_header_exactly() {
        let names = ["iss", "jti", "sub", "resource", "patient", "definition"];
        let base = [
            "portal-0123456789abcdef",
            "0123456789abcdef0123",
            "Practitioner/1",
            "Task/1",
            "Patient/1",
            "https://x.example/ActivityDefinition/1",
        ];
        let mut passed = 0;
        for (name, value) in names.iter().zip(base) {
            for c in (0u32..0x250).filter_map(char::from_u32) {
                for at in [0, 5, value.len()] {
                    let mut edited = value.to_owned();
                    edited.insert(at, c);
                    let Ok(claims) = run(set(name, json!(edited))) else {
                        continue;
                    };
                    passed += 1;
                    for (header, v) in claims.header_values() {
                        let hv = http::HeaderValue::from_str(v)
                            .unwrap_or_else(|_| panic!("{header} = {v:?} does not fit"));
                        assert_eq!(hv.to_str().ok(), Some(v), "{header} = {v:?}");
                    }
                }
            }
        }
        assert!(passed > 500, "only {passed} variants passed");
    }

    #[test]
    fn header_safety() {
        for ok in ["a", "a b", "https://x.example/a?b=c|1", "~!"] {
            assert!(header_safe(ok), "{ok:?}");
        }
        for bad in [
            "", " ", " a", "a ", "a\nb", "a\rb", "a\0b", "a\tb", "a\u{7f}", "é",
        ] {
            assert!(!header_safe(bad), "{bad:?}");
        }
    }

    #[test]
    fn references() {
        assert!(is_reference("Task/5f68-a.b", None));
        assert!(is_reference("RelatedPerson/x", None));
        assert!(!is_reference("Task/5/6", None));
        assert!(!is_reference("/5", None));
        assert!(!is_reference(&format!("Task/{}", "a".repeat(65)), None));
        assert!(is_reference("Patient/1", Some("Patient")));
        assert!(!is_reference("Patients/1", Some("Patient")));
    }
}
