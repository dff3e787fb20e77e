//! Sets `HTI_GUARD_GIT_REV` for `hti-guard --version`: the short git revision of the tree
//! being built, with `-dirty` when tracked files differ from it; `HTI_GUARD_GIT_REV` from
//! the environment when set (a build from a source archive can pass it); `unknown` when
//! there is no git or no repository of this crate (a Docker build copies no `.git`).
//! Reruns when HEAD moves (HEAD, the ref it points to, packed refs): `-dirty` says how the
//! tree was then, not after later edits (rerunning on every edit would rebuild the crate).
//!
//! Also hands `symbol-order.txt` to the linker (`--symbol-ordering-file`), so that the
//! functions a running guard executes sit together at the start of its code and the rest
//! is never paged in: about 3.5 MiB less resident memory (benches/load/symbol_order.sh
//! writes the file and says why; its names are v0-mangled, as .cargo/config.toml asks).
//! Only where the linker is LLD, Rust's default on x86_64-unknown-linux-gnu since 1.90,
//! and nobody chose another: no `linker` in Cargo's configuration, nothing about linking
//! in RUSTFLAGS. `HTI_GUARD_SYMBOL_ORDER=off` leaves the default layout.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=HTI_GUARD_GIT_REV");
    let rev = match std::env::var("HTI_GUARD_GIT_REV") {
        Ok(rev) if !rev.trim().is_empty() => rev.trim().to_owned(),
        _ => from_git().unwrap_or_else(|| "unknown".to_owned()),
    };
    println!("cargo:rustc-env=HTI_GUARD_GIT_REV={rev}");
    symbol_order();
}

fn symbol_order() {
    println!("cargo:rerun-if-changed=symbol-order.txt");
    println!("cargo:rerun-if-env-changed=HTI_GUARD_SYMBOL_ORDER");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("symbol-order.txt");
    let off = std::env::var("HTI_GUARD_SYMBOL_ORDER").is_ok_and(|v| v == "off");
    let lld = std::env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu")
        && std::env::var_os("RUSTC_LINKER").is_none()
        && !std::env::var("CARGO_ENCODED_RUSTFLAGS").is_ok_and(|f| f.contains("link"));
    if off || !lld || !order.is_file() {
        return;
    }
    // A name the binary no longer defines (code since removed or renamed) is not an error.
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}

/// `git args...` in the crate's directory: its trimmed output, when it ran and succeeded.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8(output.stdout).ok()?.trim().to_owned())
}

fn from_git() -> Option<String> {
    // Only this crate's own repository: a crate unpacked inside another one (a vendored
    // copy, a source archive in someone's checkout) must not take that one's revision.
    let top = git(&["rev-parse", "--show-toplevel"])?;
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).canonicalize().ok()?;
    if Path::new(&top).canonicalize().ok()? != here {
        return None;
    }
    let rev = git(&["rev-parse", "--short=12", "HEAD"]).filter(|r| !r.is_empty())?;
    // HEAD, and the ref it points to when on a branch; `--git-path` finds them in a linked
    // worktree too (its HEAD is its own, its refs are the main repository's).
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(reference);
    }
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            let path = here.join(path);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|changes| !changes.is_empty());
    Some(if dirty { format!("{rev}-dirty") } else { rev })
}
