//! Text in log lines: client-controlled text (room names, stream keys made
//! from them) bounded, so that a client cannot write kilobytes into the logs
//! on every attempt; and the password of a configured URL left out.

use std::fmt;

/// Bytes of client text shown as is.
const SHOWN: usize = 64;

/// Text for a log field: at most [`SHOWN`] bytes of it, then its length;
/// control characters escaped.
pub struct Bounded<'a>(&'a str);

/// Wrap client text for a log field (`room = %log_text::bounded(&room)`).
pub fn bounded(text: &str) -> Bounded<'_> {
    Bounded(text)
}

impl fmt::Display for Bounded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        let mut end = text.len().min(SHOWN);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        for c in text[..end].chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        if end < text.len() {
            write!(f, "…({} bytes)", text.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Bounded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// A secret setting for a debug field: whether it is set, never its value.
pub fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "<redacted>")
}

/// `scheme://user:secret@host` → `scheme://user:***@host`, so logs never show it.
pub fn redact_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_shown_as_is() {
        assert_eq!(bounded("my%20room").to_string(), "my%20room");
    }

    #[test]
    fn long_text_is_cut_with_its_length() {
        let shown = bounded(&"ä".repeat(10_000)).to_string();
        assert!(shown.len() < 100, "{shown}");
        assert!(shown.ends_with("…(20000 bytes)"), "{shown}");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(bounded("a\nb").to_string(), "a\\nb");
    }
}
