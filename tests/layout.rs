//! The house's import rules (../shared/LAYOUT.md), checked on the source text so that an
//! upward import fails CI: the ground (`error.rs`) imports nothing of the crate, and
//! `jose/` (formats and keys) nothing but itself; `config/` imports only itself, `jose/`
//! and `error`; the verifier and the module's keys know nothing of the proxy, the server or
//! the upstream; the module's keys build no HTTP response; only the accept loops and the
//! binary's wiring reach the proxy.

use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file below `dir`, as (path relative to src/, text).
fn files(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(src())
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The `crate::<module>` names a file's code (not its comments) refers to.
fn crate_refs(text: &str) -> Vec<String> {
    let mut refs = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                refs.push(name);
            }
        }
        // `use crate::{a, b}` groups.
        if let Some(group) = code.split("crate::{").nth(1) {
            let group = group.split('}').next().unwrap_or_default();
            for name in group.split(',') {
                let name = name.trim().split("::").next().unwrap_or_default().trim();
                if !name.is_empty() {
                    refs.push(name.to_owned());
                }
            }
        }
    }
    refs
}

fn violations(rule: &str, files: &[(String, String)], forbidden: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in files {
        for name in crate_refs(text) {
            if forbidden.contains(&name.as_str()) || forbidden == ["*"] {
                found.push(format!("{rule}: {path} uses crate::{name}"));
            }
        }
    }
    found
}

/// Every `crate::` name outside `allowed` that a file of `files` uses.
fn outside(rule: &str, files: &[(String, String)], allowed: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in files {
        for name in crate_refs(text) {
            if !allowed.contains(&name.as_str()) {
                found.push(format!("{rule}: {path} uses crate::{name}"));
            }
        }
    }
    found
}

#[test]
fn imports_run_one_way_down() {
    let all = files(&src());
    let pick = |pred: &dyn Fn(&str) -> bool| -> Vec<(String, String)> {
        all.iter().filter(|(p, _)| pred(p)).cloned().collect()
    };
    let mut found = Vec::new();
    found.extend(violations(
        "error.rs is the ground",
        &pick(&|p| p == "error.rs"),
        &["*"],
    ));
    found.extend(outside(
        "jose/ imports nothing of the crate above it",
        &pick(&|p| p.starts_with("jose/")),
        &["jose"],
    ));
    found.extend(outside(
        "config/ imports only config/, jose/ and error.rs",
        &pick(&|p| p.starts_with("config/")),
        &["config", "jose", "error"],
    ));
    found.extend(violations(
        "verify/ and module_keys.rs know nothing of the request path",
        &pick(&|p| p.starts_with("verify/") || p == "module_keys.rs"),
        &["proxy", "server", "upstream", "session", "respond", "admin"],
    ));
    found.extend(violations(
        "respond.rs, pages.rs and headers.rs sit below the proxy",
        &pick(&|p| matches!(p, "respond.rs" | "pages.rs" | "headers.rs")),
        &["proxy", "server", "upstream", "session", "admin"],
    ));
    found.extend(violations(
        "shof/ sits below the proxy and the listeners",
        &pick(&|p| p.starts_with("shof/")),
        &["proxy", "server", "admin", "upstream"],
    ));
    found.extend(violations(
        "audit.rs sits below the proxy: it records decisions, it does not make them",
        &pick(&|p| p == "audit.rs"),
        &[
            "proxy", "server", "admin", "upstream", "session", "respond", "shof", "launch",
        ],
    ));
    found.extend(violations(
        "only the accept loops and the wiring reach the proxy",
        &pick(&|p| !matches!(p, "proxy.rs" | "server.rs" | "lib.rs")),
        &["proxy"],
    ));
    for (path, text) in pick(&|p| p == "module_keys.rs") {
        if text.contains("Response<") || text.contains("StatusCode") {
            found.push(format!("module_keys.rs builds no HTTP response: {path}"));
        }
    }
    assert!(found.is_empty(), "upward imports:\n{}", found.join("\n"));
}

#[test]
fn the_scan_sees_imports() {
    assert_eq!(
        crate_refs(
            "use crate::proxy::Body;\n// crate::server in a comment\nlet x = crate::verify::f();"
        ),
        vec!["proxy", "verify"]
    );
    assert_eq!(
        crate_refs("use crate::{error::Reason, headers};"),
        vec!["error", "headers"]
    );
}
