//! `[pages]`: what the guard's own pages (an error, no session, signed out) offer a person:
//! a link back to the portal (`portal_url`) and the operator's own templates (`dir`). The
//! templates are read and checked here, at load (and so at each reload and by `check`); a
//! page whose file is absent keeps the built-in one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::{ConfigError, invalid};

/// A page the guard makes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// A rejected request (every reason but `no_session`).
    Error,
    /// No valid session on a protected path (`no_session`): expired, idle or never started.
    Session,
    /// After logout, when `session.logged_out` does not redirect.
    Logout,
}

impl Page {
    pub const ALL: [Page; 3] = [Page::Error, Page::Session, Page::Logout];

    /// The template file's stem: `error`, `session`, `logout`.
    pub fn as_str(self) -> &'static str {
        match self {
            Page::Error => "error",
            Page::Session => "session",
            Page::Logout => "logout",
        }
    }
}

/// A language the pages are written in, chosen by `Accept-Language`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    En,
    Nl,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::Nl];

    /// The language tag (`<html lang>`, the template file's middle part).
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Nl => "nl",
        }
    }
}

/// A value a template can show; each is HTML-escaped when it is put in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Title,
    Message,
    Reference,
    PortalUrl,
    Status,
    Reason,
    Lang,
}

impl Field {
    const ALL: [Field; 7] = [
        Field::Title,
        Field::Message,
        Field::Reference,
        Field::PortalUrl,
        Field::Status,
        Field::Reason,
        Field::Lang,
    ];

    fn name(self) -> &'static str {
        match self {
            Field::Title => "title",
            Field::Message => "message",
            Field::Reference => "reference",
            Field::PortalUrl => "portal_url",
            Field::Status => "status",
            Field::Reason => "reason",
            Field::Lang => "lang",
        }
    }
}

/// One piece of a template: text as written, or a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    Field(Field),
}

/// An operator's page, split at its placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The file it was read from.
    pub path: PathBuf,
    pub parts: Vec<Part>,
}

/// The largest template file read.
const MAX_TEMPLATE: u64 = 256 * 1024;

impl Template {
    /// Split `text` at its `{{name}}` placeholders (spaces inside the braces allowed). An
    /// unknown name or a `{{` without its `}}` is an error; the message says which.
    pub fn parse(text: &str) -> Result<Vec<Part>, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| {
                let line = text[..text.len() - rest.len() + open]
                    .lines()
                    .count()
                    .max(1);
                format!("line {line}: \"{{{{\" without \"}}}}\"")
            })?;
            let name = after[..close].trim();
            let field = Field::ALL
                .into_iter()
                .find(|f| f.name() == name)
                .ok_or_else(|| {
                    let known: Vec<String> = Field::ALL
                        .iter()
                        .map(|f| format!("{{{{{}}}}}", f.name()))
                        .collect();
                    format!(
                        "unknown placeholder {{{{{name}}}}} (known: {})",
                        known.join(", ")
                    )
                })?;
            parts.push(Part::Field(field));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(parts)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPages {
    portal_url: Option<String>,
    dir: Option<String>,
}

/// `[pages]`, validated, the templates read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PagesConfig {
    /// Where "back to your portal" leads; `None`: no such link.
    pub portal_url: Option<String>,
    /// The operator's template directory.
    pub dir: Option<PathBuf>,
    /// The templates found in `dir`, by page and language (absent: the built-in page).
    pub templates: Vec<(Page, Lang, Arc<Template>)>,
}

impl PagesConfig {
    /// The operator's template for `page` in `lang`, if `pages.dir` has one.
    pub fn template(&self, page: Page, lang: Lang) -> Option<&Template> {
        self.templates
            .iter()
            .find(|(p, l, _)| *p == page && *l == lang)
            .map(|(_, _, t)| t.as_ref())
    }
}

/// The longest `pages.portal_url`.
const MAX_URL: usize = 2048;

impl RawPages {
    pub(super) fn validate(self) -> Result<PagesConfig, ConfigError> {
        let portal_url = self.portal_url.map(portal_url).transpose()?;
        let (dir, templates) = match self.dir {
            None => (None, Vec::new()),
            Some(dir) if dir.trim().is_empty() => {
                return Err(invalid("pages.dir", "must not be empty (leave it out)"));
            }
            Some(dir) => {
                let dir = PathBuf::from(dir);
                let templates = read_templates(&dir)?;
                (Some(dir), templates)
            }
        };
        Ok(PagesConfig {
            portal_url,
            dir,
            templates,
        })
    }
}

fn portal_url(url: String) -> Result<String, ConfigError> {
    let key = "pages.portal_url";
    let parsed: http::Uri = url
        .parse()
        .map_err(|e| invalid(key, format!("invalid URL {url:?}: {e}")))?;
    let scheme_ok = matches!(parsed.scheme_str(), Some("https" | "http"));
    if !scheme_ok || parsed.host().is_none_or(str::is_empty) {
        return Err(invalid(
            key,
            format!("{url:?} must be an absolute https:// (or http://) URL"),
        ));
    }
    if url.len() > MAX_URL {
        return Err(invalid(key, format!("must be at most {MAX_URL} bytes")));
    }
    Ok(url)
}

/// Every `<page>.<lang>.html` in `dir`, parsed. Another `.html` file there is an error (a
/// misspelt name would otherwise leave the built-in page in place without a word).
fn read_templates(dir: &Path) -> Result<Vec<(Page, Lang, Arc<Template>)>, ConfigError> {
    let key = "pages.dir";
    let entries = std::fs::read_dir(dir)
        .map_err(|e| invalid(key, format!("cannot read directory {}: {e}", dir.display())))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| invalid(key, format!("cannot read directory {}: {e}", dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".html") {
            names.push(name);
        }
    }
    let expected = || {
        let mut all = Vec::new();
        for page in Page::ALL {
            for lang in Lang::ALL {
                all.push(format!("{}.{}.html", page.as_str(), lang.as_str()));
            }
        }
        all.join(", ")
    };
    let mut templates = Vec::new();
    for name in names {
        let found = Page::ALL.into_iter().find_map(|page| {
            Lang::ALL.into_iter().find_map(|lang| {
                (name == format!("{}.{}.html", page.as_str(), lang.as_str()))
                    .then_some((page, lang))
            })
        });
        let path = dir.join(&name);
        let Some((page, lang)) = found else {
            return Err(invalid(
                key,
                format!(
                    "{}: not a page the guard makes (expected one of {})",
                    path.display(),
                    expected()
                ),
            ));
        };
        let text = read_template(&path).map_err(|e| invalid(key, e))?;
        let parts =
            Template::parse(&text).map_err(|e| invalid(key, format!("{}: {e}", path.display())))?;
        templates.push((page, lang, Arc::new(Template { path, parts })));
    }
    Ok(templates)
}

fn read_template(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {shown}: {e}"))?
        .len();
    if size > MAX_TEMPLATE {
        return Err(format!(
            "{shown}: {size} bytes, more than the {MAX_TEMPLATE} a page may have"
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    String::from_utf8(bytes).map_err(|_| format!("{shown}: not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_split_and_unknown_ones_are_refused() {
        let parts = Template::parse("<h1>{{title}}</h1>{{ reference }}!").unwrap();
        assert_eq!(
            parts,
            vec![
                Part::Text("<h1>".into()),
                Part::Field(Field::Title),
                Part::Text("</h1>".into()),
                Part::Field(Field::Reference),
                Part::Text("!".into()),
            ]
        );
        let err = Template::parse("a\n{{titel}}").unwrap_err();
        assert!(err.starts_with("unknown placeholder {{titel}}"), "{err}");
        let err = Template::parse("a\nb {{title").unwrap_err();
        assert_eq!(err, "line 2: \"{{\" without \"}}\"");
        assert_eq!(Template::parse("").unwrap(), vec![]);
    }

    #[test]
    fn portal_url_must_be_absolute_http() {
        let ok = |u: &str| {
            RawPages {
                portal_url: Some(u.into()),
                dir: None,
            }
            .validate()
        };
        assert_eq!(
            ok("https://portal.example/home")
                .unwrap()
                .portal_url
                .as_deref(),
            Some("https://portal.example/home")
        );
        for bad in ["/home", "javascript:alert(1)", "ftp://x/", "https://"] {
            let err = ok(bad).unwrap_err().to_string();
            assert!(err.starts_with("pages.portal_url: "), "{bad}: {err}");
        }
    }

    #[test]
    fn templates_are_read_by_name_and_checked() {
        let dir = std::env::temp_dir().join(format!("hti-pages-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let raw = || RawPages {
            portal_url: None,
            dir: Some(dir.display().to_string()),
        };
        std::fs::write(dir.join("error.nl.html"), "<p>{{message}}</p>").unwrap();
        std::fs::write(dir.join("notes.txt"), "not a page").unwrap();
        let pages = raw().validate().unwrap();
        assert!(pages.template(Page::Error, Lang::Nl).is_some());
        assert!(pages.template(Page::Error, Lang::En).is_none());

        std::fs::write(dir.join("eror.en.html"), "x").unwrap();
        let err = raw().validate().unwrap_err().to_string();
        assert!(
            err.starts_with("pages.dir: ") && err.contains("eror.en.html"),
            "{err}"
        );
        std::fs::remove_file(dir.join("eror.en.html")).unwrap();

        std::fs::write(dir.join("logout.en.html"), "{{portal}}").unwrap();
        let err = raw().validate().unwrap_err().to_string();
        assert!(err.contains("logout.en.html: unknown placeholder"), "{err}");
        std::fs::write(dir.join("logout.en.html"), [0xff, 0xfe]).unwrap();
        let err = raw().validate().unwrap_err().to_string();
        assert!(err.ends_with("logout.en.html: not UTF-8"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();

        let err = raw().validate().unwrap_err().to_string();
        assert!(err.starts_with("pages.dir: cannot read directory"), "{err}");
    }
}
