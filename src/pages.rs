//! The words and the frame of the guard's own pages (an error, no session, signed out) in
//! English and Dutch, the language chosen by `Accept-Language`, and the operator's
//! templates (`pages.dir`) filled in where they replace a page. The JSON error body keeps
//! `Reason::message`, in English, as the contract says; `respond` builds the responses.

use http::HeaderValue;

use crate::config::{Field, Lang, Page, PagesConfig, Part};
use crate::error::Reason;

/// The language of a page for a request's `Accept-Language`: the one of ours (Dutch or
/// English) with the highest q-value (`nl`, `nl-NL`, `nl-BE`: Dutch; `en*`: English; `*`:
/// both, unless named); on a tie the first listed; English when neither is asked for.
pub(crate) fn lang(accept_language: Option<&HeaderValue>) -> Lang {
    let Some(value) = accept_language.and_then(|v| v.to_str().ok()) else {
        return Lang::En;
    };
    // (q in thousandths, position) per language named, and for `*`.
    let mut named: [Option<(u16, usize)>; 2] = [None, None];
    let mut star: Option<(u16, usize)> = None;
    for (at, entry) in value.split(',').enumerate().take(64) {
        let mut params = entry.split(';');
        let tag = params.next().unwrap_or_default().trim();
        let q = params
            .find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("q")
                    .then(|| quality(v.trim()))
            })
            .unwrap_or(Some(1000));
        let Some(q) = q else { continue };
        let primary = tag.split('-').next().unwrap_or_default();
        let slot = if tag == "*" {
            &mut star
        } else if primary.eq_ignore_ascii_case("nl") {
            &mut named[1]
        } else if primary.eq_ignore_ascii_case("en") {
            &mut named[0]
        } else {
            continue;
        };
        // The highest q a language is given counts; its first mention at that q.
        if slot.is_none_or(|(best, _)| q > best) {
            *slot = Some((q, at));
        }
    }
    let en = named[0].or(star).unwrap_or((0, usize::MAX));
    let nl = named[1].or(star).unwrap_or((0, usize::MAX));
    if nl.0 > 0 && (nl.0 > en.0 || (nl.0 == en.0 && nl.1 < en.1)) {
        Lang::Nl
    } else {
        Lang::En
    }
}

/// A q-value (`0` to `1`, at most three decimals) in thousandths; `None` when malformed.
fn quality(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{fraction:0<3}").parse().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// What a page says: its title and a sentence, both plain text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Words {
    pub(crate) title: &'static str,
    pub(crate) message: &'static str,
}

/// The page a rejection with `reason` shows.
pub(crate) fn page_of(reason: Reason) -> Page {
    match reason {
        Reason::NoSession => Page::Session,
        _ => Page::Error,
    }
}

/// The title and sentence for `reason` in `lang`. English sentences are the reason's own
/// message (the one in the JSON body).
pub(crate) fn words(reason: Reason, lang: Lang) -> Words {
    let (title_en, title_nl) = title(reason);
    match lang {
        Lang::En => Words {
            title: title_en,
            message: reason.message(),
        },
        Lang::Nl => Words {
            title: title_nl,
            message: message_nl(reason),
        },
    }
}

/// What a signed-out page says.
pub(crate) fn logout_words(lang: Lang) -> Words {
    match lang {
        Lang::En => Words {
            title: "You have been signed out",
            message: "You have left the module. To use it again, start it from your portal.",
        },
        Lang::Nl => Words {
            title: "U bent afgemeld",
            message: "U heeft de module verlaten. Wilt u haar opnieuw gebruiken, start haar dan vanuit uw portaal.",
        },
    }
}

/// A page's title in (English, Dutch): what happened, in words a patient understands.
fn title(reason: Reason) -> (&'static str, &'static str) {
    const NOT_STARTED: (&str, &str) = (
        "The module could not be started",
        "De module kon niet worden gestart",
    );
    const UNAVAILABLE: (&str, &str) = (
        "The module is temporarily unavailable",
        "De module is tijdelijk niet beschikbaar",
    );
    const LOGIN_FAILED: (&str, &str) = ("Signing in did not succeed", "Inloggen is niet gelukt");
    match reason {
        Reason::MissingToken
        | Reason::ConflictingTokens
        | Reason::MalformedToken
        | Reason::UnsupportedAlgorithm
        | Reason::UnknownIssuer
        | Reason::UnknownKey
        | Reason::BadSignature
        | Reason::IssuedInFuture
        | Reason::LifetimeTooLong
        | Reason::WrongAudience
        | Reason::MissingClaim
        | Reason::InvalidClaim
        | Reason::IntrospectionInactive
        | Reason::Undecryptable
        | Reason::SessionTooLarge
        | Reason::UnknownFhirBase
        | Reason::BodyTooLarge
        | Reason::MethodNotAllowed => NOT_STARTED,
        Reason::Expired => ("This start link has expired", "Deze startlink is verlopen"),
        Reason::Replayed => (
            "This start link has already been used",
            "Deze startlink is al gebruikt",
        ),
        Reason::KeysUnavailable
        | Reason::ReplayStoreUnavailable
        | Reason::IntrospectionUnavailable
        | Reason::UpstreamUnavailable
        | Reason::UpstreamTimeout
        | Reason::Overloaded
        | Reason::LoginUnavailable => UNAVAILABLE,
        Reason::NoSession => ("Your session has expired", "Uw sessie is verlopen"),
        Reason::InvalidPath => ("This address is not valid", "Dit adres is niet geldig"),
        Reason::CrossSiteRequest => (
            "This action is not allowed from here",
            "Deze actie is hier niet toegestaan",
        ),
        Reason::RequestTimeout => ("The request took too long", "Het verzoek duurde te lang"),
        Reason::LoginDenied => ("Signing in was refused", "Inloggen is geweigerd"),
        Reason::LoginStateMismatch | Reason::LoginFailed | Reason::InvalidIdToken => LOGIN_FAILED,
    }
}

/// `Reason::message` in Dutch.
fn message_nl(reason: Reason) -> &'static str {
    const TOKEN: &str = "De start van de module kon niet worden gecontroleerd. Start de module opnieuw vanuit uw portaal.";
    const LATER: &str =
        "De start kan nu niet worden gecontroleerd. Probeer het over een ogenblik opnieuw.";
    match reason {
        Reason::MissingToken => {
            "Dit adres verwacht een start vanuit uw portaal, maar er is geen startgegeven meegestuurd."
        }
        Reason::ConflictingTokens => {
            "De start bevatte twee verschillende startgegevens. Start de module opnieuw vanuit uw portaal."
        }
        Reason::MalformedToken
        | Reason::UnsupportedAlgorithm
        | Reason::UnknownKey
        | Reason::BadSignature
        | Reason::LifetimeTooLong
        | Reason::MissingClaim
        | Reason::InvalidClaim
        | Reason::IntrospectionInactive
        | Reason::Undecryptable => TOKEN,
        Reason::UnknownIssuer => {
            "Het portaal dat deze start stuurde, is bij deze module niet bekend."
        }
        Reason::Expired => "De start is verlopen. Start de module opnieuw vanuit uw portaal.",
        Reason::IssuedInFuture => {
            "De start is nog niet geldig. Controleer de klok en start de module opnieuw."
        }
        Reason::WrongAudience => "De start was bedoeld voor een andere module.",
        Reason::Replayed => {
            "Deze start is al eerder gebruikt. Start de module opnieuw vanuit uw portaal."
        }
        Reason::KeysUnavailable
        | Reason::ReplayStoreUnavailable
        | Reason::IntrospectionUnavailable => LATER,
        Reason::UpstreamUnavailable => {
            "De module is nu niet bereikbaar. Probeer het over een ogenblik opnieuw."
        }
        Reason::UpstreamTimeout => {
            "De module antwoordde niet op tijd. Probeer het over een ogenblik opnieuw."
        }
        Reason::BodyTooLarge => "Het startverzoek is te groot.",
        Reason::MethodNotAllowed => "Dit adres accepteert alleen een start vanuit een portaal.",
        Reason::NoSession => {
            "Start deze module vanuit uw portaal: open daar de taak en kies ervoor om te starten."
        }
        Reason::SessionTooLarge => {
            "De start bevat meer gegevens dan een sessie kan bewaren. Neem contact op met de aanbieder van de module."
        }
        Reason::InvalidPath => "Dit adres is niet geldig.",
        Reason::CrossSiteRequest => "Deze actie kan alleen vanuit de module zelf worden gestart.",
        Reason::RequestTimeout => {
            "Het verzoek is niet op tijd volledig verstuurd. Probeer het opnieuw."
        }
        Reason::Overloaded => "De module is nu erg druk. Probeer het over een ogenblik opnieuw.",
        Reason::UnknownFhirBase => "Deze start komt van een domein dat deze module niet kent.",
        Reason::LoginStateMismatch => {
            "Deze aanmelding is niet in deze browser begonnen, of duurde te lang. Start de module opnieuw vanuit uw portaal."
        }
        Reason::LoginDenied => {
            "De aanmelding is geweigerd. Start de module opnieuw vanuit uw portaal."
        }
        Reason::LoginFailed => {
            "De aanmelding kon niet worden afgerond. Start de module opnieuw vanuit uw portaal."
        }
        Reason::LoginUnavailable => {
            "De aanmeldservice is nu niet bereikbaar. Probeer het over een ogenblik opnieuw."
        }
        Reason::InvalidIdToken => {
            "De aanmelding kon niet worden gecontroleerd. Start de module opnieuw vanuit uw portaal."
        }
    }
}

/// What fills a page.
pub(crate) struct Values<'a> {
    pub(crate) words: Words,
    pub(crate) reference: &'a str,
    pub(crate) status: u16,
    /// The reason's stable string; empty on the signed-out page.
    pub(crate) reason: &'a str,
}

/// `page` in `lang`: the operator's template when `pages.dir` has one, else the built-in
/// page. Every value is HTML-escaped.
pub(crate) fn render(pages: &PagesConfig, page: Page, lang: Lang, values: &Values<'_>) -> String {
    let portal = pages.portal_url.as_deref();
    let Some(template) = pages.template(page, lang) else {
        return builtin(lang, portal, values);
    };
    let mut out = String::with_capacity(2048);
    for part in &template.parts {
        match part {
            Part::Text(text) => out.push_str(text),
            Part::Field(field) => {
                let status;
                let value = match field {
                    Field::Title => values.words.title,
                    Field::Message => values.words.message,
                    Field::Reference => values.reference,
                    Field::PortalUrl => portal.unwrap_or_default(),
                    Field::Status => {
                        status = values.status.to_string();
                        &status
                    }
                    Field::Reason => values.reason,
                    Field::Lang => lang.as_str(),
                };
                push_escaped(&mut out, value);
            }
        }
    }
    out
}

/// The built-in page: one frame for every page and language.
fn builtin(lang: Lang, portal: Option<&str>, values: &Values<'_>) -> String {
    let (back, reference, mention) = match lang {
        Lang::En => (
            "Back to your portal",
            "Reference",
            "Mention this reference if you contact support.",
        ),
        Lang::Nl => (
            "Terug naar uw portaal",
            "Referentie",
            "Noem deze referentie als u contact opneemt met de helpdesk.",
        ),
    };
    let mut out = String::with_capacity(2048);
    out.push_str("<!doctype html>\n<html lang=\"");
    out.push_str(lang.as_str());
    out.push_str(
        "\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>",
    );
    push_escaped(&mut out, values.words.title);
    out.push_str(
        "</title><style>\
         body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;\
         color:#222;line-height:1.5}\
         h1{font-size:1.6rem}\
         a.portal{display:inline-block;margin:1rem 0;padding:.6rem 1.2rem;background:#154273;\
         color:#fff;border-radius:.3rem;text-decoration:none}\
         a.portal:focus,a.portal:hover{background:#0b2a4a}\
         .ref{color:#555;font-size:.9rem}</style></head><body><main><h1>",
    );
    push_escaped(&mut out, values.words.title);
    out.push_str("</h1><p>");
    push_escaped(&mut out, values.words.message);
    out.push_str("</p>");
    if let Some(portal) = portal {
        out.push_str("<p><a class=\"portal\" href=\"");
        push_escaped(&mut out, portal);
        out.push_str("\">");
        out.push_str(back);
        out.push_str("</a></p>");
    }
    if !values.reference.is_empty() {
        out.push_str("<p class=\"ref\">");
        out.push_str(reference);
        out.push_str(": <code>");
        push_escaped(&mut out, values.reference);
        out.push_str("</code><br>");
        out.push_str(mention);
        out.push_str("</p>");
    }
    out.push_str("</main></body></html>\n");
    out
}

/// Escape text for HTML content and attribute values.
pub(crate) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    push_escaped(&mut out, text);
    out
}

fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Template;
    use std::sync::Arc;

    fn pick(value: &str) -> Lang {
        lang(Some(&HeaderValue::from_str(value).unwrap()))
    }

    #[test]
    fn the_language_follows_accept_language() {
        assert_eq!(lang(None), Lang::En);
        assert_eq!(pick("nl"), Lang::Nl);
        assert_eq!(pick("nl-NL,nl;q=0.9,en-US;q=0.8,en;q=0.7"), Lang::Nl);
        assert_eq!(pick("NL-be"), Lang::Nl);
        assert_eq!(pick("en-GB,en;q=0.9,nl;q=0.8"), Lang::En);
        assert_eq!(pick("en;q=0.5, nl;q=0.8"), Lang::Nl);
        assert_eq!(pick("de-DE,de;q=0.9,nl;q=0.5"), Lang::Nl);
        assert_eq!(pick("de-DE,fr"), Lang::En);
        assert_eq!(pick("nl;q=0, en;q=0.1"), Lang::En);
        assert_eq!(pick("nl;q=0"), Lang::En);
        assert_eq!(pick("nl, en"), Lang::Nl);
        assert_eq!(pick("en, nl"), Lang::En);
        assert_eq!(pick("*;q=0.9, en;q=0.5"), Lang::Nl);
        assert_eq!(pick("*"), Lang::En);
        assert_eq!(
            pick("nl;q=2, en;q=0.3"),
            Lang::En,
            "a malformed q is ignored"
        );
        assert_eq!(pick("nld"), Lang::En);
        assert_eq!(pick(""), Lang::En);
    }

    #[test]
    fn q_values_parse_as_the_rfc_writes_them() {
        assert_eq!(quality("1"), Some(1000));
        assert_eq!(quality("1.000"), Some(1000));
        assert_eq!(quality("0.8"), Some(800));
        assert_eq!(quality("0.125"), Some(125));
        assert_eq!(quality("0"), Some(0));
        for bad in ["1.5", "0.1234", "2", "-0.5", "x", "0.a"] {
            assert_eq!(quality(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_reason_has_its_own_words_in_both_languages() {
        for reason in Reason::ALL {
            let en = words(reason, Lang::En);
            let nl = words(reason, Lang::Nl);
            assert_ne!(en.title, nl.title, "{reason}");
            assert_ne!(en.message, nl.message, "{reason}");
            for said in [en.title, nl.title] {
                let status = reason.status();
                assert_ne!(Some(said), status.canonical_reason(), "{reason}");
            }
        }
        assert_eq!(
            words(Reason::NoSession, Lang::Nl).title,
            "Uw sessie is verlopen"
        );
    }

    #[test]
    fn the_builtin_page_escapes_and_links_the_portal() {
        let values = Values {
            words: words(Reason::Expired, Lang::Nl),
            reference: "<script>",
            status: 401,
            reason: "expired",
        };
        let none = PagesConfig::default();
        let page = render(&none, Page::Error, Lang::Nl, &values);
        assert!(
            page.starts_with("<!doctype html>\n<html lang=\"nl\">"),
            "{page}"
        );
        assert!(page.contains("&lt;script&gt;") && !page.contains("<script>"));
        assert!(
            !page.contains("href"),
            "no portal link without pages.portal_url"
        );
        let with = PagesConfig {
            portal_url: Some("https://portal.example/?a=1&b=\"2\"".into()),
            ..PagesConfig::default()
        };
        let page = render(&with, Page::Error, Lang::Nl, &values);
        assert!(
            page.contains(
                "href=\"https://portal.example/?a=1&amp;b=&quot;2&quot;\">Terug naar uw portaal</a>"
            ),
            "{page}"
        );
    }

    #[test]
    fn a_template_gets_every_value_escaped() {
        let text =
            "{{lang}}|{{title}}|{{message}}|{{reference}}|{{portal_url}}|{{status}}|{{reason}}";
        let template = Template {
            path: "error.en.html".into(),
            parts: Template::parse(text).unwrap(),
        };
        let pages = PagesConfig {
            portal_url: None,
            dir: Some("/x".into()),
            templates: vec![(Page::Error, Lang::En, Arc::new(template))],
        };
        let values = Values {
            words: Words {
                title: "T&",
                message: "M<",
            },
            reference: "r\"1",
            status: 503,
            reason: "overloaded",
        };
        assert_eq!(
            render(&pages, Page::Error, Lang::En, &values),
            "en|T&amp;|M&lt;|r&quot;1||503|overloaded"
        );
        // The other language and the other pages stay built in.
        assert!(render(&pages, Page::Error, Lang::Nl, &values).starts_with("<!doctype html>"));
        assert!(render(&pages, Page::Logout, Lang::En, &values).starts_with("<!doctype html>"));
    }
}
