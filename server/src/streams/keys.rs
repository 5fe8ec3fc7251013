//! Redis key names of document streams, byte-compatible with y-redis 0.1.6 so that every
//! instance of a fleet, in any language, finds the same room under the same key.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Why a stream key, or a room or document name inside one, could not be read.
/// A worker drops a task whose key fails, so the reason is only ever logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A percent-encoded component is malformed or does not decode to UTF-8.
    #[error("malformed URI component {0:?}")]
    InvalidUriComponent(String),
    /// A Redis key does not have the shape `{prefix}:room:{room}:{docid}`.
    #[error("malformed stream key {0:?}")]
    InvalidStreamKey(String),
    /// A Redis key has the stream shape but another prefix.
    #[error("stream key {key:?} has prefix {found:?}, expected {expected:?}")]
    WrongPrefix {
        /// The whole key.
        key: String,
        /// The prefix found in the key.
        found: String,
        /// The prefix this instance uses.
        expected: String,
    },
}

/// What JavaScript's `encodeURIComponent` escapes: everything but A–Z a–z 0–9 and
/// `- _ . ! ~ * ' ( )`.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// JavaScript's `encodeURIComponent`: A–Z a–z 0–9 and `- _ . ! ~ * ' ( )` stay, every
/// other UTF-8 byte becomes `%XX` with uppercase hex. Room and document names are encoded
/// this way inside stream keys and storage object names.
pub fn encode_uri_component(s: &str) -> String {
    utf8_percent_encode(s, URI_COMPONENT).to_string()
}

/// JavaScript's `decodeURIComponent`: every `%XX` is decoded (hex digits of either
/// case), everything else is kept. A `%` not followed by two hex digits, or escapes that
/// do not form UTF-8, are an error, as JavaScript's `URIError`.
pub fn decode_uri_component(s: &str) -> Result<String, KeyError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).and_then(|&b| char::from(b).to_digit(16));
            let lo = bytes.get(i + 2).and_then(|&b| char::from(b).to_digit(16));
            match (hi, lo) {
                (Some(hi), Some(lo)) => {
                    // Two hex digits: at most 0xff.
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                }
                _ => return Err(KeyError::InvalidUriComponent(s.to_owned())),
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| KeyError::InvalidUriComponent(s.to_owned()))
}

/// The document id of every WebSocket connection (as y-redis): a room holds
/// one document, and its stream key ends in `:index`.
pub const DOC_ID: &str = "index";

/// The Redis stream of a document: `{prefix}:room:{enc(room)}:{enc(docid)}`.
pub fn stream_key(prefix: &str, room: &str, docid: &str) -> String {
    format!(
        "{prefix}:room:{}:{}",
        encode_uri_component(room),
        encode_uri_component(docid)
    )
}

const ROOM_MARK: &str = ":room:";

/// Parse a stream key back into `(room, docid)` with y-redis's greedy pattern
/// `^(.*):room:(.*):(.*)$` (JavaScript regex semantics: `.` matches no line terminator),
/// then percent-decode both parts. A key whose prefix is not `prefix` is an error, so a
/// worker never compacts another fleet's streams.
pub fn parse_stream_key(prefix: &str, key: &str) -> Result<(String, String), KeyError> {
    let malformed = || KeyError::InvalidStreamKey(key.to_owned());
    if key.contains(['\n', '\r', '\u{2028}', '\u{2029}']) {
        return Err(malformed());
    }
    // Greedy first group: the last ":room:" that still has a ':' after it.
    let split = key
        .match_indices(':')
        .map(|(i, _)| i)
        .filter(|&i| key[i..].starts_with(ROOM_MARK))
        .rfind(|&i| key[i + ROOM_MARK.len()..].contains(':'))
        .ok_or_else(malformed)?;
    let found = &key[..split];
    if found != prefix {
        return Err(KeyError::WrongPrefix {
            key: key.to_owned(),
            found: found.to_owned(),
            expected: prefix.to_owned(),
        });
    }
    let rest = &key[split + ROOM_MARK.len()..];
    let (room, docid) = rest.rsplit_once(':').ok_or_else(malformed)?;
    Ok((decode_uri_component(room)?, decode_uri_component(docid)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn fixtures() -> Value {
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/yredis-0.1.6/protocol.json"
        ));
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn stream_keys_fixture_both_ways() {
        let f = fixtures();
        let cases = f["streamKeys"].as_array().unwrap();
        assert_eq!(cases.len(), 14);
        for case in cases {
            let room = case["room"].as_str().unwrap();
            let docid = case["docid"].as_str().unwrap();
            let prefix = case.get("prefix").and_then(Value::as_str).unwrap_or("y");
            let key = case["key"].as_str().unwrap();
            assert_eq!(stream_key(prefix, room, docid), key, "{case}");
            assert_eq!(
                parse_stream_key(prefix, key).unwrap(),
                (room.to_owned(), docid.to_owned()),
                "{case}"
            );
        }
    }

    #[test]
    fn wrong_prefix_is_an_error() {
        assert!(matches!(
            parse_stream_key("y", "custom-prefix:room:r:index"),
            Err(KeyError::WrongPrefix { .. })
        ));
        assert!(matches!(
            parse_stream_key("custom-prefix", "y:room:r:index"),
            Err(KeyError::WrongPrefix { .. })
        ));
        let e = parse_stream_key("x", "y:room:r:index").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"stream key "y:room:r:index" has prefix "y", expected "x""#
        );
    }

    #[test]
    fn malformed_keys_are_errors() {
        for key in [
            "",
            "y:worker",
            "y:room:index",
            "y:room:",
            "y\n:room:a:b",
            "y:room:%ZZ:index",
            "y:room:%C3:index",
        ] {
            assert!(parse_stream_key("y", key).is_err(), "{key:?}");
        }
    }

    #[test]
    fn greedy_groups() {
        // The first group is greedy: the prefix may itself contain ":room:".
        assert_eq!(
            parse_stream_key("a:room:b", "a:room:b:room:r:index").unwrap(),
            ("r".to_owned(), "index".to_owned())
        );
        // The last ':' separates the doc id; raw ':' in the middle stays in the room.
        assert_eq!(
            parse_stream_key("y", "y:room:a:b:c").unwrap(),
            ("a:b".to_owned(), "c".to_owned())
        );
        // Overlapping marks: ":room:room:x" reads as room "room", doc "x".
        assert_eq!(
            parse_stream_key("y", "y:room:room:x").unwrap(),
            ("room".to_owned(), "x".to_owned())
        );
        assert_eq!(
            parse_stream_key("y:room", "y:room:room:a:b").unwrap(),
            ("a".to_owned(), "b".to_owned())
        );
    }

    #[test]
    fn uri_component_javascript_semantics() {
        assert_eq!(encode_uri_component("a b/ä"), "a%20b%2F%C3%A4");
        assert_eq!(decode_uri_component("a%20b%2f%C3%a4").unwrap(), "a b/ä");
        assert!(decode_uri_component("100%").is_err());
        assert!(decode_uri_component("%4").is_err());
        assert!(decode_uri_component("%+1").is_err());
        assert!(decode_uri_component("%FF").is_err());
        assert_eq!(decode_uri_component("plain+text").unwrap(), "plain+text");
        for s in ["", "x%20y", "日本", "emoji😀", "#?&=+", "a-_.!~*'()"] {
            assert_eq!(decode_uri_component(&encode_uri_component(s)).unwrap(), s);
        }
    }
}
