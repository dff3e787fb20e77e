//! `hti-guard keygen`, `mint` and `jwks`: make signing keys and test launch tokens the way
//! a portal would, so that a guard can be tried without one. Inputs are judged as the guard
//! judges the claims; errors go to stderr as `hti-guard: ...`, exit 2 for bad arguments and
//! 1 for I/O or an unusable key.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde_json::{Map, Value, json};

use crate::config::parse_duration;
use crate::jose::Alg;
use crate::jose::sign::{SignError, SigningKey, random_jti};
use crate::verify::claims::{
    INTENTS, PATIENT_TYPES, is_canonical_url, is_patient_reference, is_reference,
};

/// Options of `hti-guard keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The algorithm the key is for: RS256..RS512, PS256..PS512, ES256, ES384, ES512.
    #[arg(long, value_name = "ALG")]
    pub alg: String,
    /// The key id published in the JWKS; also names the files (letters, digits, `.`, `_`, `-`).
    #[arg(long, value_name = "KID")]
    pub kid: String,
    /// The directory to write `<KID>.key.pem` and `<KID>.jwks.json` to (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// RSA key size: 2048, 3072 or 4096 [default: 2048]. Not for ES* keys.
    #[arg(long, value_name = "BITS")]
    pub bits: Option<usize>,
    /// Replace an existing key file.
    #[arg(long)]
    pub force: bool,
}

/// Options of `hti-guard mint`.
#[derive(Debug, Args)]
pub struct MintArgs {
    /// The private key (PKCS#8 PEM), e.g. from `hti-guard keygen`.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The `kid` header: the key's id in the portal's JWKS.
    #[arg(long, value_name = "KID")]
    pub kid: String,
    /// The signing algorithm; it must fit the key.
    #[arg(long, value_name = "ALG")]
    pub alg: String,
    /// The portal's issuer (Koppeltaal: its client_id).
    #[arg(long, value_name = "ISS")]
    pub iss: String,
    /// The module's audience (Koppeltaal: `Device/<id>`).
    #[arg(long, value_name = "AUD")]
    pub aud: String,
    /// The launching person, `<ResourceType>/<id>` (e.g. `Practitioner/123`).
    #[arg(long, value_name = "REF")]
    pub sub: String,
    /// The task, `<ResourceType>/<id>` (e.g. `Task/5f68`).
    #[arg(long, value_name = "REF")]
    pub resource: String,
    /// The patient, `Patient/<id>`, when `sub` is not the patient (the guard also accepts
    /// `Person`, `Practitioner` and `RelatedPerson`, as the GIDS test portal sends them).
    #[arg(long, value_name = "REF")]
    pub patient: Option<String>,
    /// The ActivityDefinition: a canonical URL or `ActivityDefinition/<id>`.
    #[arg(long, value_name = "REF")]
    pub definition: Option<String>,
    /// A FHIR RequestIntent code, e.g. `plan`.
    #[arg(long, value_name = "CODE")]
    pub intent: Option<String>,
    /// `exp - iat`. HTI allows at most 5m; longer is minted with a warning, for tests.
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub lifetime: String,
    /// How many tokens to print, one per line, each with its own `jti` (for load tests;
    /// signed on every CPU).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub count: u64,
}

/// Options of `hti-guard jwks`.
#[derive(Debug, Args)]
pub struct JwksArgs {
    /// The private key (PKCS#8 PEM).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The key id to publish.
    #[arg(long, value_name = "KID")]
    pub kid: String,
    /// The `alg` to publish. EC keys always get the one of their curve; RSA keys get one
    /// only when it is given.
    #[arg(long, value_name = "ALG")]
    pub alg: Option<String>,
}

/// The longest lifetime HTI allows.
const HTI_MAX_LIFETIME: Duration = Duration::from_secs(300);

/// Why a tool failed, and so its exit status.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// Bad arguments: exit 2.
    Usage(String),
    /// I/O or an unusable key: exit 1.
    Failed(String),
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::Usage(message.into())
}

fn failed(message: impl Into<String>) -> Failure {
    Failure::Failed(message.into())
}

/// Print the failure, if any, and give the exit status.
fn finish(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("hti-guard: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(message)) => {
            eprintln!("hti-guard: {message}");
            ExitCode::from(1)
        }
    }
}

/// `hti-guard keygen`: a new private key and its public JWKS, in `--out`.
pub fn keygen(args: &KeygenArgs) -> ExitCode {
    finish(run_keygen(args))
}

/// `hti-guard mint`: print one signed HTI 2.0 launch token.
pub fn mint(args: &MintArgs) -> ExitCode {
    finish(run_mint(args))
}

/// `hti-guard jwks`: print the public JWKS of a private key.
pub fn jwks(args: &JwksArgs) -> ExitCode {
    finish(run_jwks(args))
}

fn run_keygen(args: &KeygenArgs) -> Result<(), Failure> {
    let alg = parse_alg(&args.alg)?;
    check_file_kid(&args.kid)?;
    let bits = match (alg.curve(), args.bits) {
        (None, None) => 2048,
        (None, Some(bits @ (2048 | 3072 | 4096))) => bits,
        (None, Some(bits)) => {
            return Err(usage(format!(
                "--bits {bits}: RSA keys of 2048, 3072 or 4096 bits only"
            )));
        }
        (Some(_), Some(_)) => {
            return Err(usage(format!(
                "--bits is for RSA keys; an {alg} key's size follows from its curve"
            )));
        }
        (Some(_), None) => 0,
    };
    let key_path = args.out.join(format!("{}.key.pem", args.kid));
    let jwks_path = args.out.join(format!("{}.jwks.json", args.kid));
    if !args.force && fs::symlink_metadata(&key_path).is_ok() {
        return Err(exists(&key_path));
    }
    fs::create_dir_all(&args.out)
        .map_err(|e| failed(format!("cannot create {}: {e}", args.out.display())))?;

    let key = SigningKey::generate(alg, bits).map_err(|e| failed(e.to_string()))?;
    let pem = key.to_pem().map_err(|e| failed(e.to_string()))?;
    write_private(&key_path, pem.as_bytes(), args.force).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            exists(&key_path)
        } else {
            failed(format!("cannot write {}: {e}", key_path.display()))
        }
    })?;
    fs::write(&jwks_path, pretty(&key.jwks(&args.kid, Some(alg))))
        .map_err(|e| failed(format!("cannot write {}: {e}", jwks_path.display())))?;

    println!(
        "wrote {} (private key: {}, PKCS#8 PEM{})",
        key_path.display(),
        key.describe(),
        if cfg!(unix) { ", mode 0600" } else { "" }
    );
    println!(
        "wrote {} (public JWKS: kid {:?}, alg {alg})",
        jwks_path.display(),
        args.kid
    );
    Ok(())
}

fn exists(path: &Path) -> Failure {
    failed(format!(
        "{} already exists; not replacing a key (use --force to replace it)",
        path.display()
    ))
}

/// Write a private key readable by its owner only. Without `force` an existing file is an
/// `AlreadyExists` error, decided by the create itself rather than by an earlier look.
fn write_private(path: &Path, contents: &[u8], force: bool) -> io::Result<()> {
    if force {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let mut file = options.open(path)?;
        // The mode above is narrowed by the umask; make it exactly 0600.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(contents)?;
        file.sync_all()
    }
    #[cfg(not(unix))]
    {
        let mut file = options.open(path)?;
        file.write_all(contents)?;
        file.sync_all()
    }
}

fn run_mint(args: &MintArgs) -> Result<(), Failure> {
    let alg = parse_alg(&args.alg)?;
    if args.kid.is_empty() {
        return Err(usage("--kid must not be empty"));
    }
    let (spec, warning) = launch_spec(args)?;
    let key = load_key(&args.key)?;
    check_fit(&key, alg, &args.key)?;
    if let Some(warning) = warning {
        eprintln!("hti-guard: warning: {warning}");
    }
    if args.count == 0 {
        return Err(usage("--count must be at least 1"));
    }
    let now = SystemTime::now();
    let mint_one = || -> Result<String, Failure> {
        let claims = spec.claims(now).map_err(|e| failed(e.to_string()))?;
        key.sign_jws(alg, &args.kid, &claims)
            .map_err(|e| failed(e.to_string()))
    };
    if args.count == 1 {
        println!("{}", mint_one()?);
        return Ok(());
    }
    // Each thread signs its share and writes it in batches; lines never interleave.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let stdout = io::stdout();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|i| args.count / threads + u64::from(i < args.count % threads))
            .map(|share| {
                let stdout = &stdout;
                scope.spawn(move || -> Result<(), Failure> {
                    let mut batch = String::new();
                    for done in 1..=share {
                        batch.push_str(&mint_one()?);
                        batch.push('\n');
                        if done % 1000 == 0 || done == share {
                            stdout
                                .lock()
                                .write_all(batch.as_bytes())
                                .map_err(|e| failed(format!("cannot write the tokens: {e}")))?;
                            batch.clear();
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(failed("a signing thread failed")))
        })
    })
}

/// What an HTI 2.0 launch token says.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub resource: String,
    pub patient: Option<String>,
    pub definition: Option<String>,
    pub intent: Option<String>,
    pub lifetime: Duration,
}

impl LaunchSpec {
    /// The claims set issued at `now`, with a fresh random `jti`.
    pub fn claims(&self, now: SystemTime) -> Result<Value, SignError> {
        let iat = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.iss));
        claims.insert("aud".into(), json!(self.aud));
        claims.insert("sub".into(), json!(self.sub));
        claims.insert("resource".into(), json!(self.resource));
        for (name, value) in [
            ("patient", &self.patient),
            ("definition", &self.definition),
            ("intent", &self.intent),
        ] {
            if let Some(value) = value {
                claims.insert(name.into(), json!(value));
            }
        }
        claims.insert("jti".into(), json!(random_jti()?));
        claims.insert("iat".into(), json!(iat));
        claims.insert("exp".into(), json!(iat + self.lifetime.as_secs()));
        claims.insert("hti-version".into(), json!("2.0"));
        Ok(Value::Object(claims))
    }
}

/// The launch the arguments describe, judged as the guard judges its claims, and a warning
/// for a lifetime the guard refuses by default.
fn launch_spec(args: &MintArgs) -> Result<(LaunchSpec, Option<String>), Failure> {
    for (name, value) in [("--iss", &args.iss), ("--aud", &args.aud)] {
        if value.trim().is_empty() {
            return Err(usage(format!("{name} must not be empty")));
        }
    }
    for (name, value) in [("--sub", &args.sub), ("--resource", &args.resource)] {
        if !is_reference(value, None) {
            return Err(usage(format!(
                "{name} {value:?} is not a <ResourceType>/<id> reference (e.g. Practitioner/123)"
            )));
        }
    }
    if let Some(patient) = &args.patient
        && !is_patient_reference(patient)
    {
        return Err(usage(format!(
            "--patient {patient:?} is not a {}/<id> reference",
            PATIENT_TYPES.join("|")
        )));
    }
    if let Some(definition) = &args.definition
        && !(is_reference(definition, Some("ActivityDefinition")) || is_canonical_url(definition))
    {
        return Err(usage(format!(
            "--definition {definition:?} is neither a canonical URL nor ActivityDefinition/<id>"
        )));
    }
    if let Some(intent) = &args.intent
        && !INTENTS.contains(&intent.as_str())
    {
        return Err(usage(format!(
            "--intent {intent:?} is not a FHIR RequestIntent code; use one of {}",
            INTENTS.join(", ")
        )));
    }
    let lifetime =
        parse_duration("--lifetime", &args.lifetime).map_err(|e| usage(e.to_string()))?;
    if lifetime < Duration::from_secs(1) {
        return Err(usage("--lifetime must be at least 1s"));
    }
    let lifetime = Duration::from_secs(lifetime.as_secs());
    let warning = (lifetime > HTI_MAX_LIFETIME).then(|| {
        format!(
            "--lifetime {} is longer than the 5 minutes HTI allows; a guard with the default \
             launch.max_lifetime refuses this token (lifetime_too_long)",
            args.lifetime.trim()
        )
    });
    let spec = LaunchSpec {
        iss: args.iss.clone(),
        aud: args.aud.clone(),
        sub: args.sub.clone(),
        resource: args.resource.clone(),
        patient: args.patient.clone(),
        definition: args.definition.clone(),
        intent: args.intent.clone(),
        lifetime,
    };
    Ok((spec, warning))
}

fn run_jwks(args: &JwksArgs) -> Result<(), Failure> {
    let alg = args.alg.as_deref().map(parse_alg).transpose()?;
    if args.kid.is_empty() {
        return Err(usage("--kid must not be empty"));
    }
    let key = load_key(&args.key)?;
    if let Some(alg) = alg {
        check_fit(&key, alg, &args.key)?;
    }
    let alg = key.natural_alg().or(alg);
    print!("{}", pretty(&key.jwks(&args.kid, alg)));
    Ok(())
}

/// Pretty JSON with a final newline.
fn pretty(value: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

fn alg_list() -> String {
    Alg::ALL.map(Alg::name).join(", ")
}

/// An algorithm name as the guard reads it (case-sensitive, as in JOSE).
fn parse_alg(name: &str) -> Result<Alg, Failure> {
    if let Some(alg) = Alg::from_name(name) {
        return Ok(alg);
    }
    let upper = name.to_ascii_uppercase();
    let why = if upper.starts_with("HS") {
        "shared-secret (HMAC) algorithms are never accepted for HTI launches".to_string()
    } else if upper == "NONE" {
        "unsigned tokens are never accepted for HTI launches".to_string()
    } else if let Some(alg) = Alg::from_name(&upper) {
        format!("algorithm names are case-sensitive; did you mean {alg}?")
    } else {
        "not a known algorithm".to_string()
    };
    Err(usage(format!(
        "--alg {name:?}: {why}; use one of {}",
        alg_list()
    )))
}

/// A kid that can name files in `--out` without leaving it.
fn check_file_kid(kid: &str) -> Result<(), Failure> {
    let ok = !kid.is_empty()
        && kid.len() <= 128
        && !kid.starts_with('.')
        && kid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(usage(format!(
            "--kid {kid:?}: keygen names its files after the kid, so use 1 to 128 letters, \
             digits, '.', '_' or '-', not starting with '.'"
        )))
    }
}

fn load_key(path: &Path) -> Result<SigningKey, Failure> {
    let pem = fs::read(path).map_err(|e| failed(format!("cannot read {}: {e}", path.display())))?;
    SigningKey::from_pem(&pem).map_err(|e| {
        let text = String::from_utf8_lossy(&pem);
        let hint = match e {
            SignError::Pem(_)
                if text.contains("BEGIN RSA PRIVATE KEY")
                    || text.contains("BEGIN EC PRIVATE KEY") =>
            {
                "; convert it with: openssl pkcs8 -topk8 -nocrypt -in OLD -out NEW"
            }
            _ => "",
        };
        failed(format!("{}: {e}{hint}", path.display()))
    })
}

/// `alg` must suit the key: an error that says which algorithms would.
fn check_fit(key: &SigningKey, alg: Alg, path: &Path) -> Result<(), Failure> {
    if key.fits(alg) {
        return Ok(());
    }
    let fitting = match key.natural_alg() {
        Some(natural) => natural.to_string(),
        None => Alg::ALL
            .into_iter()
            .filter(|a| key.fits(*a))
            .map(Alg::name)
            .collect::<Vec<_>>()
            .join(", "),
    };
    Err(usage(format!(
        "--alg {alg} does not fit the key in {} ({}); that key signs {fitting}",
        path.display(),
        key.describe()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mint_args() -> MintArgs {
        MintArgs {
            key: PathBuf::from("unused.pem"),
            kid: "k1".into(),
            alg: "RS512".into(),
            iss: "https://portal.example".into(),
            aud: "Device/1".into(),
            sub: "Practitioner/1".into(),
            resource: "Task/1".into(),
            patient: None,
            definition: None,
            intent: None,
            lifetime: "5m".into(),
            count: 1,
        }
    }

    fn is_usage(result: Result<impl std::fmt::Debug, Failure>) -> bool {
        matches!(result, Err(Failure::Usage(_)))
    }

    #[test]
    fn algorithms_are_read_as_the_guard_reads_them() {
        assert_eq!(parse_alg("ES512"), Ok(Alg::ES512));
        for bad in ["HS256", "hs512", "none", "None", "rs256", "EdDSA", ""] {
            assert!(is_usage(parse_alg(bad)), "{bad}");
        }
        let Err(Failure::Usage(message)) = parse_alg("rs256") else {
            unreachable!()
        };
        assert!(message.contains("RS256?"), "{message}");
    }

    #[test]
    fn kids_that_name_files_stay_in_the_directory() {
        for good in ["portal-1", "k.2024_01", "A"] {
            assert!(check_file_kid(good).is_ok(), "{good}");
        }
        for bad in ["", "../x", "a/b", ".hidden", "a b", "é"] {
            assert!(check_file_kid(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn launch_arguments_are_judged_like_claims() {
        let (spec, warning) = launch_spec(&mint_args()).unwrap();
        assert_eq!(spec.lifetime, Duration::from_secs(300));
        assert!(warning.is_none());

        type Edit = fn(&mut MintArgs);
        let edits: Vec<(&str, Edit)> = vec![
            ("sub", |a| a.sub = "123".into()),
            ("resource", |a| a.resource = "Task/".into()),
            ("patient", |a| a.patient = Some("Task/1".into())),
            ("definition", |a| a.definition = Some("not a url".into())),
            ("intent", |a| a.intent = Some("whim".into())),
            ("lifetime", |a| a.lifetime = "forever".into()),
            ("zero lifetime", |a| a.lifetime = "0s".into()),
            ("iss", |a| a.iss = " ".into()),
        ];
        for (name, edit) in edits {
            let mut args = mint_args();
            edit(&mut args);
            assert!(is_usage(launch_spec(&args)), "{name}");
        }

        let mut args = mint_args();
        args.patient = Some("Patient/2".into());
        args.definition = Some("https://x.example/ActivityDefinition/a|1".into());
        args.intent = Some("plan".into());
        args.lifetime = "15m".into();
        let (spec, warning) = launch_spec(&args).unwrap();
        assert_eq!(spec.lifetime, Duration::from_secs(900));
        assert!(warning.unwrap().contains("15m"));
    }

    #[test]
    fn launch_claims_are_hti_2() {
        let spec = LaunchSpec {
            iss: "portal".into(),
            aud: "Device/1".into(),
            sub: "Practitioner/1".into(),
            resource: "Task/1".into(),
            patient: Some("Patient/2".into()),
            definition: None,
            intent: Some("plan".into()),
            lifetime: Duration::from_secs(300),
        };
        let claims = spec.claims(UNIX_EPOCH + Duration::from_secs(1000)).unwrap();
        assert_eq!(claims["exp"], 1300);
        assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
        assert_eq!(claims["hti-version"], "2.0");
        assert!(claims.get("definition").is_none());
    }
}
