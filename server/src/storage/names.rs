//! Bounded storage names for rooms of any length.
//!
//! A room name is whatever path segment a client sends, but every backend limits
//! names: a file name has at most 255 bytes, an S3 or GCS object name at most
//! 1024, and a PostgreSQL index row about 2700. A name within the backend's
//! bound is stored as is (y-redis's layout, so JavaScript instances share it);
//! a longer one becomes its first bytes, the marker `%h` and the SHA-256 of the
//! whole name in hex. The marker never occurs in an `encodeURIComponent`
//! encoding (a `%` is always followed by two hex digits there), so a shortened
//! name never equals a stored name of another room.

use ring::digest::{digest, SHA256};

/// `%h` plus 64 hex digits.
const HASH_PART: usize = 2 + 64;

/// `name` if it has at most `max` bytes; otherwise a name of at most `max`
/// bytes made of its start and its hash. `max` must leave room for the hash
/// (at least 66 bytes); a smaller bound still yields the hash part alone.
pub fn bounded(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let mut keep = max.saturating_sub(HASH_PART);
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!(
        "{}%h{}",
        &name[..keep],
        hex::encode(digest(&SHA256, name.as_bytes()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept() {
        assert_eq!(bounded("room", 255), "room");
        let exact = "a".repeat(255);
        assert_eq!(bounded(&exact, 255), exact);
    }

    #[test]
    fn long_names_are_bounded_distinct_and_stable() {
        let a = format!("{}a", "x".repeat(10_000));
        let b = format!("{}b", "x".repeat(10_000));
        assert_eq!(bounded(&a, 255).len(), 255);
        assert_ne!(bounded(&a, 255), bounded(&b, 255));
        assert_eq!(bounded(&a, 255), bounded(&a, 255));
        assert!(bounded(&a, 255).starts_with("xxx"));
    }

    /// The hash is part of stored names, so it must never change.
    #[test]
    fn long_names_keep_their_start_and_the_sha256_of_the_whole() {
        assert_eq!(
            bounded(&"x".repeat(300), 255),
            format!(
                "{}%h0d4e2ca9e9cbced7a7a5380eb29e1a3783b9b6d0db72de36a1051038e1c1fbc7",
                "x".repeat(189)
            )
        );
    }

    #[test]
    fn multibyte_names_are_cut_at_a_character() {
        let name = "ä".repeat(1000);
        let short = bounded(&name, 1024);
        assert!(short.len() <= 1024);
        assert!(short.starts_with("ää"));
    }
}
