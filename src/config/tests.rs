//! The configuration's unit tests: defaults, errors that name their key, where values came
//! from. `MINIMAL` is shared with `check`'s tests.

use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use http::Method;

use super::serve::default_max_connections;
use super::sources::env_not_config;
use super::*;
use crate::jose::Alg;
use crate::jose::sign::SigningKey;

/// The smallest valid configuration, for unit tests.
pub(crate) const MINIMAL: &str = r#"
        upstream = "http://127.0.0.1:3000"
        [launch]
        audience = "Device/1"
        [[issuers]]
        iss = "https://portal.example"
        jwks_url = "https://portal.example/jwks"
    "#;

#[test]
fn minimal_config_gets_contract_defaults() {
    let c = Config::from_toml_str(MINIMAL).unwrap();
    assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(c.admin_listen, "0.0.0.0:9090".parse().unwrap());
    assert_eq!(c.launch.paths, vec!["/launch"]);
    assert_eq!(c.launch.token_fields, vec!["token", "launch"]);
    assert_eq!(c.launch.methods, vec![Method::POST]);
    assert_eq!(c.launch.max_lifetime, Duration::from_secs(300));
    assert_eq!(c.launch.clock_skew, Duration::from_secs(30));
    assert_eq!(c.launch.max_body, 64 * 1024);
    assert_eq!(c.issuers[0].algorithms.len(), 9);
    assert_eq!(c.replay.max_entries, 1_000_000);
    assert_eq!(c.keys.refresh_max, Duration::from_secs(3600));
    assert_eq!(c.shutdown_grace, Duration::from_secs(20));
    assert_eq!(
        c.workers,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    assert!(c.tls.is_none());
    let four = Config::from_toml_str(&format!("workers = 4\n{MINIMAL}")).unwrap();
    assert_eq!(four.workers, 4);
}

fn err(text: &str) -> String {
    Config::from_toml_str(text).unwrap_err().to_string()
}

#[test]
fn redirects_stay_on_this_site_and_paths_are_normal() {
    let session = |extra: &str| format!("{MINIMAL}\n[session]\nenabled = true\n{extra}");
    for (extra, key) in [
        ("landing = \"//evil.example/x\"", "session.landing"),
        ("landing = \"/\\\\evil.example\"", "session.landing"),
        ("landing = \"https://evil.example/\"", "session.landing"),
        ("landing = \"evil\"", "session.landing"),
        ("landing = \"/a b\"", "session.landing"),
        ("logged_out = \"//evil.example\"", "session.logged_out"),
        ("logged_out = \"/\\\\evil.example\"", "session.logged_out"),
        (
            "logged_out = \"http://portal.example/\"",
            "session.logged_out",
        ),
        ("logged_out = \"javascript:alert(1)\"", "session.logged_out"),
        ("logged_out = \"https://\"", "session.logged_out"),
        ("protected = [\"/a/../b\"]", "session.protected"),
        ("public = [\"//static/\"]", "session.public"),
        ("logout_path = \"/%6cogout\"", "session.logout_path"),
        (
            "logout_path = \"/LAUNCH\"\ncase_insensitive_paths = true",
            "session.logout_path",
        ),
    ] {
        let e = err(&session(extra));
        assert!(e.starts_with(key), "{extra}: {e}");
    }
    let ok = Config::from_toml_str(&session(
        "landing = \"/task/{resource_id}?p={patient_id}\"\nlogged_out = \"https://portal.example/home\"\ncase_insensitive_paths = true",
    ))
    .unwrap();
    let s = ok.session.unwrap();
    assert!(s.case_insensitive_paths);
    assert_eq!(s.binding, "Device/1");
    let ok = Config::from_toml_str(&session("logged_out = \"/bye\"")).unwrap();
    assert_eq!(ok.session.unwrap().logged_out.as_deref(), Some("/bye"));
    let e = err(&MINIMAL.replace("[launch]", "[launch]\npaths = [\"/a//launch\"]"));
    assert!(e.starts_with("launch.paths"), "{e}");
}

#[test]
fn staying_up_defaults_and_limits() {
    let c = Config::from_toml_str(MINIMAL).unwrap();
    assert_eq!(c.timeouts.idle, Duration::from_secs(60));
    assert_eq!(c.timeouts.request_body, Duration::from_secs(30));
    assert_eq!(
        c.limits.max_connections,
        default_max_connections(super::system::open_files_limit(), c.workers)
    );
    assert_eq!(c.limits.max_memory, super::system::cgroup_memory_max());
    // The open-files limit lowers the default: half of what the reserve and the workers'
    // runtimes (4 descriptors each) leave.
    assert_eq!(default_max_connections(None, 1), 10_000);
    assert_eq!(default_max_connections(Some(1024), 1), 478);
    assert_eq!(default_max_connections(Some(1024), 16), 448);
    assert_eq!(default_max_connections(Some(256), 16), 64);
    assert_eq!(default_max_connections(Some(1_048_576), 64), 10_000);
    assert_eq!(default_max_connections(Some(16), 1), 1);
    assert_eq!(default_max_connections(Some(256), 64), 1);
    let set = Config::from_toml_str(&format!(
        "{MINIMAL}\n[limits]\nmax_connections = 2\nmax_memory = \"1GiB\"\n\
         [timeouts]\nidle = \"5s\"\nrequest_body = \"2s\""
    ))
    .unwrap();
    assert_eq!(set.limits.max_connections, 2);
    assert_eq!(set.limits.max_memory, Some(1 << 30));
    assert_eq!(set.timeouts.idle, Duration::from_secs(5));
    assert_eq!(set.timeouts.request_body, Duration::from_secs(2));
    let off = Config::from_toml_str(&format!("{MINIMAL}\n[limits]\nmax_memory = \"off\""));
    assert_eq!(off.unwrap().limits.max_memory, None);
    for (text, key) in [
        ("[limits]\nmax_connections = 0", "limits.max_connections"),
        (
            "[limits]\nmax_connections = 2000000",
            "limits.max_connections",
        ),
        ("[limits]\nmax_memory = \"0\"", "limits.max_memory"),
        ("[limits]\nmax_memory = \"lots\"", "limits.max_memory"),
        ("[limits]\nmax_memory = \"1TiB\"", "limits.max_memory"),
        ("[limits]\nmax_files = 1", "limits.max_files"),
        ("[timeouts]\nidle = \"0s\"", "timeouts.idle"),
        (
            "[timeouts]\nrequest_body = \"never\"",
            "timeouts.request_body",
        ),
    ] {
        let message = err(&format!("{MINIMAL}\n{text}"));
        assert!(message.contains(key), "{key} not named in: {message}");
    }
}

#[test]
fn errors_name_their_key() {
    let cases = [
        (
            format!("{MINIMAL}\n[keys]\nrefresh_min = \"soon\""),
            "keys.refresh_min",
        ),
        (format!("workers = 0\n{MINIMAL}"), "workers"),
        (format!("workers = 5000\n{MINIMAL}"), "workers"),
        (MINIMAL.replace("Device/1", ""), "launch.audience"),
        (
            MINIMAL.replace("https://portal.example/jwks", "ftp://x"),
            "issuers[0].jwks_url",
        ),
        (
            format!("{MINIMAL}\n[replay]\nstore = \"disk\""),
            "replay.store",
        ),
        (
            format!("{MINIMAL}\n[replay]\nstore = \"redis\""),
            "replay.redis_url",
        ),
        (
            format!("{MINIMAL}\n[replay]\nstore = \"redis\"\nredis_url = \"http://x\""),
            "replay.redis_url",
        ),
        (
            format!("{MINIMAL}\n[replay]\nredis_timeout = \"never\""),
            "replay.redis_timeout",
        ),
        (
            MINIMAL.replace("upstream = \"http://127.0.0.1:3000\"", ""),
            "upstream",
        ),
        (
            format!("{MINIMAL}\nalgorithms = [\"HS256\"]"),
            "issuers[0].algorithms",
        ),
        (
            format!("{MINIMAL}\nalgorithms = [\"none\"]"),
            "issuers[0].algorithms",
        ),
        (format!("{MINIMAL}\n[launch2]\nx = 1"), "launch2"),
        (
            MINIMAL.replace("[launch]", "[launch]\nmax_body = \"lots\""),
            "launch.max_body",
        ),
        (
            MINIMAL.replace("[launch]", "[launch]\nmethods = [\"PUT\"]"),
            "launch.methods",
        ),
        (
            MINIMAL.replace("[launch]", "[launch]\nbogus = 1"),
            "launch.bogus",
        ),
        (
            format!("{MINIMAL}\n[tls]\ncert_file = \"c.pem\""),
            "tls.key_file",
        ),
    ];
    for (text, key) in cases {
        let message = err(&text);
        assert!(message.contains(key), "{key} not named in: {message}");
    }
}

#[test]
fn service_links_and_the_file_variable_are_not_configuration() {
    for key in [
        "config",
        "port",
        "port_8080_tcp_addr",
        "service_host",
        "service_port_http",
        "git_rev",
        "replicas",
    ] {
        assert!(env_not_config(key), "{key}");
    }
    for key in ["listen", "launch__audience", "portal", "services"] {
        assert!(!env_not_config(key), "{key}");
    }
}

#[test]
fn sizes_and_durations() {
    assert_eq!(parse_size("k", "64KiB").unwrap(), 65536);
    assert_eq!(parse_size("k", "1MiB").unwrap(), 1 << 20);
    assert_eq!(parse_size("k", "100").unwrap(), 100);
    assert_eq!(parse_size("k", "1GiB").unwrap(), 1 << 30);
    assert!(parse_size("k", "1TiB").is_err());
    assert_eq!(
        parse_duration("k", "500ms").unwrap(),
        Duration::from_millis(500)
    );
    assert!(parse_duration("k", "30").is_err());
}

#[test]
fn keys_name_every_field() {
    let sections = [
        "launch",
        "keys",
        "replay",
        "timeouts",
        "limits",
        "tls",
        "module",
        "introspection",
        "session",
        "shof",
        "readiness",
        "audit",
        "reload",
        "pages",
    ];
    let mut fields = std::collections::BTreeSet::new();
    for section in std::iter::once("").chain(sections) {
        let text = match section {
            "" => "bogus_key = 1".to_string(),
            s => format!("[{s}]\nbogus_key = 1"),
        };
        let error = Figment::from(Toml::string(&text))
            .extract::<RawConfig>()
            .unwrap_err();
        let expected = error
            .into_iter()
            .find_map(|e| match e.kind {
                figment::error::Kind::UnknownField(_, expected) => Some(expected),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no unknown-field error for [{section}]"));
        for field in expected {
            match section {
                "" if sections.contains(field) => {}
                "" => {
                    fields.insert(field.to_string());
                }
                s => {
                    fields.insert(format!("{s}.{field}"));
                }
            }
        }
    }
    let keys: std::collections::BTreeSet<String> = KEYS.iter().map(|k| k.to_string()).collect();
    assert_eq!(fields, keys);
}

#[test]
fn a_key_may_not_both_sign_and_decrypt() {
    let dir = std::env::temp_dir().join(format!("hti-guard-shared-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, key: &SigningKey| {
        let path = dir.join(name);
        std::fs::write(&path, key.to_pem().unwrap()).unwrap();
        toml_quote(path.to_str().unwrap())
    };
    let shared = SigningKey::generate(Alg::RS256, 2048).unwrap();
    let other = SigningKey::generate(Alg::RS256, 2048).unwrap();
    let enc = SigningKey::generate(Alg::RS256, 2048).unwrap();
    // The same key under two file names: the material decides, not the name.
    let (sign, other, copy, enc) = (
        write("sign.pem", &other),
        write("shared.pem", &shared),
        write("copy-of-shared.pem", &shared),
        write("enc.pem", &enc),
    );
    let config = |decrypt: &str| {
        Config::from_toml_str(&format!(
            "{MINIMAL}\n[module]\nsigning_key_files = [{sign}, {other}]\n\
             decryption_key_files = [{{ file = {enc}, kid = \"e1\" }}, \
             {{ file = {decrypt}, kid = \"e2\" }}]\n"
        ))
    };
    let err = config(&copy).unwrap_err();
    let _ = config(&enc).expect("distinct keys are fine");
    let _ = std::fs::remove_dir_all(&dir);
    match err {
        ConfigError::Invalid { key, message } => {
            assert_eq!(key, "module.decryption_key_files[1]");
            assert!(message.contains("module.signing_key_files[1]"), "{message}");
            assert!(message.contains("copy-of-shared.pem"), "{message}");
            assert!(!message.contains("PRIVATE"), "{message}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn module_keys_are_parsed_once_at_load() {
    let dir = std::env::temp_dir().join(format!("hti-guard-parsed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        toml_quote(path.to_str().unwrap())
    };
    let sign = SigningKey::generate(Alg::ES256, 0).unwrap();
    let enc = SigningKey::generate(Alg::RS256, 2048).unwrap();
    let (sign_file, enc_file, ec_file, junk_file) = (
        write("sign.pem", &sign.to_pem().unwrap()),
        write("enc.pem", &enc.to_pem().unwrap()),
        write("ec.pem", &sign.to_pem().unwrap()),
        write("junk.pem", "not a key"),
    );
    let config = |decrypt: &str| {
        Config::from_toml_str(&format!(
            "{MINIMAL}\n[module]\nsigning_key_files = [{sign_file}]\n\
             decryption_key_files = [{decrypt}]\n"
        ))
    };
    let loaded = config(&enc_file).unwrap();
    let refused = |decrypt: &str| match config(decrypt).unwrap_err() {
        ConfigError::Invalid { key, message } => {
            assert_eq!(key, "module.decryption_key_files[0]");
            message
        }
        other => panic!("{other}"),
    };
    let (ec, junk) = (refused(&ec_file), refused(&junk_file));
    let _ = std::fs::remove_dir_all(&dir);
    // The kept keys are the files' keys; their default kids the thumbprints.
    let module = &loaded.module;
    assert_eq!(module.signing_keys[0].kid, sign.thumbprint());
    assert_eq!(module.signing_keys[0].key.thumbprint(), sign.thumbprint());
    assert_eq!(module.decryption_keys[0].kid, enc.thumbprint());
    assert_eq!(module.decryption_keys[0].key.thumbprint(), enc.thumbprint());
    // A file that is no RSA key is told as before the keys were kept parsed.
    assert!(
        ec.ends_with("JWE decryption keys must be RSA keys (RSA-OAEP)"),
        "{ec}"
    );
    assert!(junk.contains("not a PKCS#8 private key in PEM"), "{junk}");
}

fn toml_quote(value: &str) -> String {
    serde_json::to_string(value).unwrap()
}

#[test]
fn sources_name_the_file_and_default_the_rest() {
    let c = Config::from_toml_str(MINIMAL).unwrap();
    assert_eq!(c.source("upstream"), &Source::Text);
    assert_eq!(c.source("launch.audience"), &Source::Text);
    assert_eq!(c.source("issuers"), &Source::Text);
    assert_eq!(c.source("launch.paths"), &Source::Default);
    assert_eq!(c.source("replay.redis_url"), &Source::Default);

    let dir = std::env::temp_dir().join(format!("hti-guard-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sources.toml");
    std::fs::write(&path, format!("{MINIMAL}\n[keys]\nmax_stale = \"2h\"")).unwrap();
    let loaded = Config::load(Some(&path), true);
    let _ = std::fs::remove_dir_all(&dir);
    let c = loaded.unwrap();
    assert_eq!(c.file.as_deref(), Some(path.as_path()));
    assert_eq!(c.source("keys.max_stale"), &Source::File(path.clone()));
    assert_eq!(c.source("keys.refresh_min"), &Source::Default);
    assert_eq!(
        Source::File(path.clone()).to_string(),
        format!("file {}", path.display())
    );
    assert_eq!(
        Source::Env("HTI_GUARD_LISTEN".into()).to_string(),
        "env HTI_GUARD_LISTEN"
    );
}

#[test]
fn audience_may_be_a_list_and_upstream_a_prefix() {
    let text = MINIMAL
        .replace("\"Device/1\"", "[\"Device/1\", \"Device/2\"]")
        .replace("127.0.0.1:3000", "app:3000/base/");
    let c = Config::from_toml_str(&text).unwrap();
    assert_eq!(c.launch.audience, vec!["Device/1", "Device/2"]);
    assert_eq!(c.upstream.path_prefix, "/base");
}

/// A SHOF deployment: no issuers, sessions on, the module with a client_id and a key.
const SHOF: &str = r#"
        upstream = "http://127.0.0.1:3000"
        [launch]
        audience = "Device/1"
        methods = ["GET", "POST"]
        [module]
        client_id = "module-1"
        generate = true
        [session]
        enabled = true
        [shof]
        enabled = true
        fhir_base = "https://fhir.example/fhir/"
        redirect_uri = "https://module.example/hti-guard/callback"
    "#;

#[test]
fn shof_needs_sessions_and_the_module_but_no_issuers() {
    let c = Config::from_toml_str(SHOF).unwrap();
    assert!(c.issuers.is_empty());
    let shof = c.shof.unwrap();
    assert_eq!(shof.fhir_base, "https://fhir.example/fhir/");
    assert_eq!(shof.callback_path, "/hti-guard/callback");
    assert_eq!(shof.scope, "launch openid fhirUser");
    assert_eq!(shof.timeout, Duration::from_secs(5));
    assert_eq!(shof.login_ttl, Duration::from_secs(600));
    assert!(!shof.nonce);
    assert_eq!(shof.client_id, "module-1");
    assert_eq!(shof.assertion_alg, Alg::RS512);
    // Without shof, issuers stay required; shof off is no section at all.
    let off = SHOF.replace(
        "enabled = true\n        fhir_base",
        "enabled = false\n        fhir_base",
    );
    assert!(err(&off).starts_with("issuers"), "{}", err(&off));
    assert!(Config::from_toml_str(MINIMAL).unwrap().shof.is_none());
}

#[test]
fn shof_errors_name_their_key() {
    let cases = [
        (
            SHOF.replace("fhir_base = \"https://fhir.example/fhir/\"", ""),
            "shof.fhir_base",
        ),
        (
            SHOF.replace("https://fhir.example/fhir/", "fhir.example"),
            "shof.fhir_base",
        ),
        (
            SHOF.replace(
                "redirect_uri = \"https://module.example/hti-guard/callback\"",
                "",
            ),
            "shof.redirect_uri",
        ),
        (
            SHOF.replace("/hti-guard/callback", "/hti-guard/callback?x=1"),
            "shof.redirect_uri",
        ),
        (
            SHOF.replace("/hti-guard/callback", "/hti-guard/callback#f"),
            "shof.redirect_uri",
        ),
        (
            SHOF.replace("/hti-guard/callback", "/launch"),
            "shof.redirect_uri",
        ),
        (
            SHOF.replace("/hti-guard/callback", "/hti-guard/logout"),
            "shof.redirect_uri",
        ),
        (
            SHOF.replace("[session]\n        enabled = true", ""),
            "session.enabled",
        ),
        (
            SHOF.replace("client_id = \"module-1\"", ""),
            "module.client_id",
        ),
        (
            SHOF.replace("generate = true", ""),
            "module.signing_key_files",
        ),
        (format!("{SHOF}\ntimeout = \"0s\""), "shof.timeout"),
        (format!("{SHOF}\nlogin_ttl = \"soon\""), "shof.login_ttl"),
        (format!("{SHOF}\nscope = \" \""), "shof.scope"),
        (format!("{SHOF}\nbogus = 1"), "bogus"),
    ];
    for (text, key) in cases {
        let e = err(&text);
        assert!(e.contains(key), "{key}: {e}");
    }
}

#[test]
fn redis_sentinel_and_cluster_keys_are_checked_and_name_their_key() {
    let sentinel = Config::from_toml_str(&format!(
        "{MINIMAL}\n[replay]\nstore = \"redis\"\nredis_mode = \"sentinel\"\n\
         redis_nodes = [\"redis://:pw@s1:26379/2\", \"redis://:pw@s2:26379\"]\n\
         sentinel_master = \"mymaster\"\nredis_wait_replicas = 1"
    ))
    .unwrap();
    assert_eq!(
        sentinel.replay.redis_mode,
        super::RedisMode::Sentinel {
            master: "mymaster".into()
        }
    );
    assert_eq!(sentinel.replay.redis_nodes.len(), 2);
    assert_eq!(sentinel.replay.redis_wait_replicas, 1);
    let cluster = Config::from_toml_str(&format!(
        "{MINIMAL}\n[replay]\nstore = \"redis\"\nredis_mode = \"cluster\"\n\
         redis_nodes = [\"rediss://u:p@c1:6379\"]"
    ))
    .unwrap();
    assert_eq!(cluster.replay.redis_mode, super::RedisMode::Cluster);
    assert_eq!(
        Config::from_toml_str(MINIMAL).unwrap().replay.redis_mode,
        super::RedisMode::Single
    );

    let redis = format!("{MINIMAL}\n[replay]\nstore = \"redis\"\n");
    let cases = [
        (format!("{redis}redis_mode = \"ring\""), "replay.redis_mode"),
        (
            format!("{redis}redis_mode = \"sentinel\"\nredis_nodes = [\"redis://s:26379\"]"),
            "replay.sentinel_master",
        ),
        (
            format!(
                "{redis}redis_mode = \"sentinel\"\nsentinel_master = \"m\"\n\
                 redis_url = \"redis://r\"\nredis_nodes = [\"redis://s:26379\"]"
            ),
            "replay.redis_url",
        ),
        (
            format!("{redis}redis_mode = \"sentinel\"\nsentinel_master = \"m\""),
            "replay.redis_nodes",
        ),
        (
            format!("{redis}redis_mode = \"cluster\"\nredis_nodes = []"),
            "replay.redis_nodes",
        ),
        (
            format!("{redis}redis_mode = \"cluster\"\nredis_nodes = [\"redis://c:6379/2\"]"),
            "replay.redis_nodes",
        ),
        (
            format!("{redis}redis_mode = \"cluster\"\nredis_nodes = [\"http://c:6379\"]"),
            "replay.redis_nodes",
        ),
        (
            format!(
                "{redis}redis_mode = \"cluster\"\n\
                 redis_nodes = [\"redis://:a@c1:6379\", \"rediss://:a@c2:6379\"]"
            ),
            "replay.redis_nodes",
        ),
        (
            format!(
                "{redis}redis_mode = \"cluster\"\nsentinel_master = \"m\"\n\
                 redis_nodes = [\"redis://c1:6379\"]"
            ),
            "replay.sentinel_master",
        ),
        (
            format!("{redis}redis_url = \"redis://r\"\nredis_nodes = [\"redis://c1:6379\"]"),
            "replay.redis_nodes",
        ),
        (
            format!("{redis}redis_url = \"redis://r\"\nredis_wait_replicas = 17"),
            "replay.redis_wait_replicas",
        ),
    ];
    for (text, key) in cases {
        let message = err(&text);
        assert!(message.contains(key), "{key} not named in: {message}");
    }
}
