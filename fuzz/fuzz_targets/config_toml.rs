//! The configuration file through the path `hti-guard check --offline` takes: written to a
//! file, `Config::load` (figment: the TOML file, then `HTI_GUARD_*` variables, then every
//! section's validation), then `check::check(offline)` and the report as text and JSON.
//! The environment must hold no `HTI_GUARD_*` variable (fuzz/run.sh clears them), so that
//! an input means the same on every machine.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use hti_guard::Config;
use hti_guard::check;
use libfuzzer_sys::fuzz_target;

static FILE: LazyLock<PathBuf> = LazyLock::new(|| {
    if let Some((name, _)) = std::env::vars().find(|(k, _)| {
        k.to_ascii_uppercase()
            .starts_with(hti_guard::config::ENV_PREFIX)
    }) {
        panic!("{name} is set: run the config target in a clean environment (fuzz/run.sh)");
    }
    let dir = std::env::temp_dir().join(format!("hti-guard-fuzz-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("config.toml")
});

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
});

fuzz_target!(|data: &[u8]| {
    std::fs::write(&*FILE, data).unwrap();
    let Ok(config) = Config::load(Some(&FILE), true) else {
        return;
    };
    let report = RUNTIME
        .block_on(check::check(&config, true))
        .expect("an offline check builds no client");
    assert!(report.offline);
    let _ = report.text();
    let _ = serde_json::to_string(&report).unwrap();
});
