//! The process limits the defaults of `[limits]` come from: the open files limit and the
//! cgroup v2 memory limit. Reads `/proc` and `/sys/fs/cgroup` only; elsewhere there is no
//! limit to read, and the defaults fall back.

/// The soft limit on open files (`RLIMIT_NOFILE`), from `/proc/self/limits`; `None` when
/// unlimited or unknown.
pub(crate) fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    soft_limit(&limits, "Max open files")
}

fn soft_limit(limits: &str, name: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// The cgroup v2 `memory.max` of this process's cgroup, when one is set.
pub(crate) fn cgroup_memory_max() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = unified_cgroup(&cgroup)?;
    let file = format!("/sys/fs/cgroup{}/memory.max", path.trim_end_matches('/'));
    parse_memory_max(&std::fs::read_to_string(file).ok()?)
}

/// The path of the cgroup v2 (unified) hierarchy: the `0::<path>` line.
fn unified_cgroup(cgroup: &str) -> Option<&str> {
    cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// `memory.max` holds a byte count, or `max` for none.
fn parse_memory_max(text: &str) -> Option<u64> {
    text.trim().parse().ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_limits_and_cgroup_formats() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(soft_limit(limits, "Max open files"), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(soft_limit(unlimited, "Max open files"), None);
        assert_eq!(
            unified_cgroup("12:cpu:/x\n0::/kubepods/pod1/c1\n"),
            Some("/kubepods/pod1/c1")
        );
        assert_eq!(parse_memory_max("536870912\n"), Some(536_870_912));
        assert_eq!(parse_memory_max("max\n"), None);
    }
}
