//! The report for people: aligned columns, problems marked with `!`, a verdict last.

use std::fmt::Write as _;

use super::{Problem, Report};

impl Problem {
    /// `! key "k2" (RSA, alg RS256, use sig): RSA key of 1024 bits is too weak ...`
    fn text(&self) -> String {
        if !self.about_key {
            return format!("! {}", self.message);
        }
        let who = match &self.kid {
            Some(kid) => format!("key {kid:?}"),
            None => "key without kid".to_string(),
        };
        let mut said = Vec::new();
        if let Some(kty) = &self.kty {
            said.push(kty.clone());
        }
        if let Some(alg) = &self.alg {
            said.push(format!("alg {alg}"));
        }
        if let Some(key_use) = &self.key_use {
            said.push(format!("use {key_use}"));
        }
        if said.is_empty() {
            format!("! {who}: {}", self.message)
        } else {
            format!("! {who} ({}): {}", said.join(", "), self.message)
        }
    }
}

impl Report {
    /// The report for people: aligned columns, problems marked with `!`, a verdict last.
    pub fn text(&self) -> String {
        let mut out = String::new();
        match &self.config.file {
            Some(file) => writeln!(out, "configuration (file {file})"),
            None => writeln!(
                out,
                "configuration (no file read: environment and defaults)"
            ),
        }
        .ok();
        let rows: Vec<[&str; 3]> = self
            .config
            .order
            .iter()
            .filter_map(|key| {
                let s = self.config.values.get(key)?;
                Some([*key, s.text.as_str(), s.source_text.as_str()])
            })
            .collect();
        table(&mut out, "  ", &rows, 40);

        for issuer in &self.issuers {
            let verdict = match issuer.usable {
                Some(true) => "  (usable)",
                Some(false) => "  (NOT usable)",
                None => "",
            };
            writeln!(out, "\nissuer {}{verdict}", issuer.iss).ok();
            let mut rows: Vec<[String; 2]> = vec![
                ["jwks_url".into(), issuer.jwks_url.clone()],
                ["algorithms".into(), issuer.algorithms.join(" ")],
            ];
            if self.offline {
                rows.push(["keys".into(), "not fetched (--offline)".into()]);
            } else {
                let status = issuer.status.map_or("(no response)".to_string(), |s| {
                    http::StatusCode::from_u16(s).map_or(s.to_string(), |c| c.to_string())
                });
                rows.push(["status".into(), status]);
                if issuer.status.is_some() {
                    let cache = issuer.cache_control.as_deref().unwrap_or("(none)");
                    rows.push(["cache-control".into(), cache.to_string()]);
                }
                if let Some(refresh) = &issuer.refresh_text {
                    rows.push(["refresh".into(), refresh.clone()]);
                }
                if issuer.fetched {
                    let usable = issuer
                        .keys
                        .iter()
                        .filter(|k| !k.verifies.is_empty())
                        .count();
                    let skipped = issuer.problems.iter().filter(|p| p.about_key).count();
                    rows.push([
                        "keys".into(),
                        format!("{usable} usable, {skipped} with problems"),
                    ]);
                }
            }
            for [label, value] in &rows {
                // One width for every issuer, so that the sections line up.
                writeln!(out, "  {label:<13}  {value}").ok();
            }
            if !issuer.keys.is_empty() {
                let mut keys: Vec<[String; 6]> = vec![[
                    "kid".into(),
                    "kty".into(),
                    "size".into(),
                    "alg".into(),
                    "use".into(),
                    "verifies".into(),
                ]];
                for key in &issuer.keys {
                    keys.push([
                        key.kid.clone(),
                        key.kty.into(),
                        match (key.bits, key.curve) {
                            (Some(bits), _) => bits.to_string(),
                            (None, Some(curve)) => curve.into(),
                            (None, None) => "-".into(),
                        },
                        key.alg.unwrap_or("-").into(),
                        key.key_use.clone().unwrap_or_else(|| "-".into()),
                        if key.verifies.is_empty() {
                            "(nothing)".into()
                        } else {
                            key.verifies.join(" ")
                        },
                    ]);
                }
                let keys: Vec<[&str; 6]> = keys
                    .iter()
                    .map(|row| std::array::from_fn(|i| row[i].as_str()))
                    .collect();
                table(&mut out, "    ", &keys, 0);
            }
            for problem in &issuer.problems {
                writeln!(out, "  {}", problem.text()).ok();
            }
        }

        if let Some(i) = &self.introspection {
            let verdict = match (i.usable, i.answered) {
                (false, _) => "NOT usable",
                (true, false) => "did not answer: see the warnings",
                (true, true) => "usable",
            };
            writeln!(out, "\nintrospection  ({verdict})").ok();
            let none = "(none)".to_string();
            let mut rows: Vec<[&str; 2]> = Vec::new();
            if let Some(url) = &i.discovery_url {
                rows.push(["discovery", url]);
            }
            rows.push([
                "endpoint",
                i.introspection_endpoint.as_ref().unwrap_or(&none),
            ]);
            rows.push(["token_endpoint", i.token_endpoint.as_ref().unwrap_or(&none)]);
            if let Some(answer) = &i.answer {
                rows.push(["answer", answer]);
            }
            for [label, value] in &rows {
                writeln!(out, "  {label:<13}  {value}").ok();
            }
            for problem in &i.problems {
                writeln!(out, "  {}", problem.text()).ok();
            }
        }

        if let Some(shof) = &self.shof {
            let verdict = match (shof.usable, shof.answered) {
                (false, _) => "NOT usable",
                (true, false) => "did not answer: see the warnings",
                (true, true) => "usable",
            };
            writeln!(out, "\nshof auth server  ({verdict})").ok();
            let none = "(none)".to_string();
            let keys = shof.keys.map_or(none.clone(), |n| n.to_string());
            let rows: [[&str; 2]; 6] = [
                ["discovery", &shof.discovery_url],
                ["issuer", shof.issuer.as_ref().unwrap_or(&none)],
                [
                    "authorization",
                    shof.authorization_endpoint.as_ref().unwrap_or(&none),
                ],
                ["token", shof.token_endpoint.as_ref().unwrap_or(&none)],
                ["jwks_uri", shof.jwks_uri.as_ref().unwrap_or(&none)],
                ["keys", &keys],
            ];
            for [label, value] in &rows {
                writeln!(out, "  {label:<13}  {value}").ok();
            }
            for problem in &shof.problems {
                writeln!(out, "  {}", problem.text()).ok();
            }
        }

        if !self.warnings.is_empty() {
            writeln!(out, "\nwarnings (they do not change the exit code)").ok();
            for warning in &self.warnings {
                writeln!(out, "  ~ {}: {}", warning.kind, warning.message).ok();
            }
        }
        let mut verdict = match (self.usable, self.offline, self.problems) {
            (true, true, _) => "configuration valid (--offline: key sets not fetched)".into(),
            (true, false, 0) => "usable".to_string(),
            (true, false, n) => format!("usable ({n} {}, see above)", plural(n)),
            (false, _, n) => format!("NOT usable ({n} {})", plural(n)),
        };
        match self.warnings.len() {
            0 => {}
            1 => verdict.push_str("; 1 warning"),
            n => verdict.push_str(&format!("; {n} warnings")),
        }
        writeln!(out, "\nresult: {verdict}").ok();
        out
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "problem" } else { "problems" }
}

/// Write rows with columns padded to the widest cell (at most `cap` wide when `cap` > 0;
/// a longer cell pushes the rest of its row only). The last column is not padded.
fn table<const N: usize>(out: &mut String, indent: &str, rows: &[[&str; N]], cap: usize) {
    let mut widths = [0usize; N];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let len = cell.chars().count();
            widths[i] = widths[i].max(if cap > 0 { len.min(cap) } else { len });
        }
    }
    for row in rows {
        let mut line = indent.to_string();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
            }
        }
        writeln!(out, "{}", line.trim_end()).ok();
    }
}
