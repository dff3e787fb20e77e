//! Request path normalisation, the path grammar that config validation and the router share,
//! applied before any path is matched, the way Envoy's `normalize_path` and `merge_slashes`
//! do it: percent-encoded unreserved characters are decoded (`%61dmin` is `/admin`), other
//! escapes keep their bytes with upper-case hex, repeated slashes become one, and
//! dot-segments are removed (RFC 3986 5.2.4). The normalised path is the one that goes
//! upstream, so the app routes exactly what the guard matched. Paths that servers read in
//! ways a normaliser cannot follow are refused: an encoded `/` or `\` (some servers decode it
//! into a separator after routing), a literal `\` (read as `/` by some), `;` parameters on a
//! dot-segment (`/..;/admin`, which Tomcat and Spring treat as `..`), a broken escape, and
//! control bytes. Pure: it imports nothing.

use std::borrow::Cow;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not an origin-form path (no leading `/`).
    NotAbsolute,
    /// `%2F` or `%5C`: a separator hidden from the router.
    EncodedSeparator,
    /// A literal backslash.
    Backslash,
    /// `.;x` or `..;x`: a dot-segment with path parameters.
    DotSegmentParameters,
    /// `%` not followed by two hex digits.
    BadEscape,
    /// A control byte or a byte outside ASCII (the URI parser should have refused it).
    BadByte,
}

impl PathError {
    /// A short text for the log.
    pub fn detail(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "request target is not an absolute path",
            PathError::EncodedSeparator => "path holds an encoded '/' or '\\'",
            PathError::Backslash => "path holds a backslash",
            PathError::DotSegmentParameters => "path has ';' parameters on a dot-segment",
            PathError::BadEscape => "path has a broken percent escape",
            PathError::BadByte => "path has a control or non-ASCII byte",
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether `path` is already in normal form, checked in one pass without allocating: the
/// common case (`/`, `/api/tasks/12`), which then costs no copy.
fn is_normal(path: &[u8]) -> bool {
    if path.first() != Some(&b'/') {
        return false;
    }
    // Every segment starts after a '/': refuse empty, '.', '..' (with or without ';')
    // segments, escapes, backslashes and odd bytes; the slow path sorts them out.
    let mut segment_start = 1;
    for (i, &b) in path.iter().enumerate().skip(1) {
        match b {
            b'/' => {
                if !plain_segment(&path[segment_start..i]) {
                    return false;
                }
                segment_start = i + 1;
            }
            b'%' | b'\\' => return false,
            0..=0x20 | 0x7f..=0xff => return false,
            _ => {}
        }
    }
    let last = &path[segment_start..];
    // The last segment may be empty (a trailing slash), never a dot-segment.
    last.is_empty() || plain_segment(last)
}

/// A segment that is neither empty nor a dot-segment (also not `.;x` or `..;x`).
fn plain_segment(segment: &[u8]) -> bool {
    let name = match memchr::memchr(b';', segment) {
        Some(i) => &segment[..i],
        None => segment,
    };
    !segment.is_empty() && name != b"." && name != b".."
}

/// Normalise an origin-form request path (the query is not part of it).
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if is_normal(bytes) {
        return Ok(Cow::Borrowed(path));
    }
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // 1. Decode unreserved escapes, upper-case the others, refuse what cannot be followed.
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let value = hi << 4 | lo;
                if value == b'/' || value == b'\\' {
                    return Err(PathError::EncodedSeparator);
                }
                if is_unreserved(value) {
                    decoded.push(value);
                } else {
                    decoded.push(b'%');
                    decoded.extend_from_slice(format!("{value:02X}").as_bytes());
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            0..=0x20 | 0x7f..=0xff => return Err(PathError::BadByte),
            _ => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    // 2. Segments: merge slashes, remove dot-segments.
    let mut out: Vec<&[u8]> = Vec::new();
    let ends_with_slash_or_dot = {
        let last = decoded.rsplit(|&b| b == b'/').next().unwrap_or_default();
        last.is_empty() || last == b"." || last == b".."
    };
    for segment in decoded.split(|&b| b == b'/') {
        if let Some(at) = memchr::memchr(b';', segment) {
            let name = &segment[..at];
            if name == b"." || name == b".." {
                return Err(PathError::DotSegmentParameters);
            }
        }
        match segment {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            _ => out.push(segment),
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for segment in &out {
        normal.push('/');
        // Only ASCII went in (step 1 refused the rest).
        normal.push_str(std::str::from_utf8(segment).map_err(|_| PathError::BadByte)?);
    }
    if out.is_empty() || ends_with_slash_or_dot {
        normal.push('/');
    }
    Ok(Cow::Owned(normal))
}

/// Whether `path` is `prefix` or lies under it, with `case_insensitive` for apps that route
/// that way (ASCII only: the path is ASCII after normalisation).
pub fn has_prefix(path: &str, prefix: &str, case_insensitive: bool) -> bool {
    path.len() >= prefix.len()
        && if case_insensitive {
            path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        } else {
            path.as_bytes().starts_with(prefix.as_bytes())
        }
}

/// Whether two paths are the same, with `case_insensitive` as in [`has_prefix`].
pub fn same(path: &str, other: &str, case_insensitive: bool) -> bool {
    if case_insensitive {
        path.eq_ignore_ascii_case(other)
    } else {
        path == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(path: &str) -> String {
        normalize(path)
            .unwrap_or_else(|e| panic!("{path}: {e:?}"))
            .into_owned()
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for path in [
            "/",
            "/launch",
            "/api/tasks/12",
            "/a/b/",
            "/a;v=1/b",
            "/a.b/..c/.d",
        ] {
            assert!(
                matches!(normalize(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
    }

    #[test]
    fn dot_segments_and_slashes_are_resolved() {
        let cases = [
            ("/static/../tasks/1", "/tasks/1"),
            ("/static/%2e%2e/tasks/1", "/tasks/1"),
            ("/static/%2E%2E/tasks/1", "/tasks/1"),
            ("/static/.%2e/tasks/1", "/tasks/1"),
            ("//admin", "/admin"),
            ("///admin//x", "/admin/x"),
            ("/./admin", "/admin"),
            ("/x/../admin", "/admin"),
            ("/../admin", "/admin"),
            ("/../../..", "/"),
            ("/admin/.", "/admin/"),
            ("/admin/x/..", "/admin/"),
            ("/admin/", "/admin/"),
            ("/a/./b/../c/", "/a/c/"),
        ];
        for (input, want) in cases {
            assert_eq!(ok(input), want, "{input}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_kept_upper_case() {
        assert_eq!(ok("/%61dmin"), "/admin");
        assert_eq!(ok("/%41%7e%2D%5f"), "/A~-_");
        assert_eq!(ok("/a%20b"), "/a%20b");
        assert_eq!(ok("/a%3fb"), "/a%3Fb");
        assert_eq!(ok("/a%00b"), "/a%00b");
        assert_eq!(ok("/%C3%A9"), "/%C3%A9");
    }

    #[test]
    fn what_cannot_be_followed_is_refused() {
        let cases = [
            ("/a%2fb", PathError::EncodedSeparator),
            ("/a%2Fb", PathError::EncodedSeparator),
            ("/a%5cb", PathError::EncodedSeparator),
            ("/a%5Cb", PathError::EncodedSeparator),
            ("/a\\b", PathError::Backslash),
            ("/static/..;/admin", PathError::DotSegmentParameters),
            ("/static/.;x/admin", PathError::DotSegmentParameters),
            ("/static/%2e%2e;/admin", PathError::DotSegmentParameters),
            ("/..;", PathError::DotSegmentParameters),
            ("/a%zz", PathError::BadEscape),
            ("/a%4", PathError::BadEscape),
            ("/a%", PathError::BadEscape),
            ("/a b", PathError::BadByte),
            ("/a\u{e9}", PathError::BadByte),
            ("*", PathError::NotAbsolute),
            ("admin", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input), Err(want), "{input:?}");
        }
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for path in [
            "/static/../tasks/1",
            "/%61dmin",
            "//a//b/./c/..",
            "/a%20b/%7E",
            "/a/b;c=d/",
        ] {
            let once = ok(path);
            assert_eq!(ok(&once), once, "{path}");
        }
    }

    #[test]
    fn prefixes_and_case() {
        assert!(has_prefix("/admin/x", "/admin", false));
        assert!(!has_prefix("/ADMIN/x", "/admin", false));
        assert!(has_prefix("/ADMIN/x", "/admin", true));
        assert!(!has_prefix("/adm", "/admin", true));
        assert!(same("/Logout", "/logout", true));
        assert!(!same("/Logout", "/logout", false));
    }
}
