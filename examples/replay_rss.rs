//! The memory replay store's footprint: insert N unique jtis (uuid strings, one portal iss)
//! into a `MemoryStore` bounded at max(N, 1,000,000) and print the process's VmRSS before and
//! after. `cargo run --release --example replay_rss -- 1000000`

use std::time::{SystemTime, UNIX_EPOCH};

use hti_guard::replay::{Freshness, MemoryStore};

/// VmRSS of this process in KiB, from /proc/self/status.
fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

fn main() {
    let n: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse().expect("N is a count"),
        None => 1_000_000,
    };
    let iss = "https://portal.example.com";
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    let store = MemoryStore::new(n.max(1_000_000));
    let mut jti = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let before = vm_rss_kib();
    for _ in 0..n {
        let jti = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut jti);
        let fresh = store.check(iss, jti, now, now + 330);
        assert_eq!(fresh, Ok(Freshness::Fresh), "jti {jti}");
    }
    let after = vm_rss_kib();
    assert_eq!(store.len(), n);
    println!("entries       {n}");
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("VmRSS before  {before} KiB ({:.1} MiB)", mib(before));
    println!("VmRSS after   {after} KiB ({:.1} MiB)", mib(after));
    if n > 0 {
        let per_entry = (after.saturating_sub(before) * 1024) as f64 / n as f64;
        println!("per entry     {per_entry:.1} bytes");
    }
}
