//! Small values tests share: bytes written as hex in fixtures and assertions, and
//! the clock in milliseconds (what y-redis compares a token's `exp` with).

use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes from hex text (fixtures, expected frames); panics on bad hex, since the
/// text is the test's own.
pub fn hex(text: &str) -> Vec<u8> {
    let text: String = text.split_whitespace().collect();
    assert!(
        text.len().is_multiple_of(2),
        "odd number of hex digits: {text}"
    );
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16).unwrap_or_else(|_| panic!("not hex: {text}"))
        })
        .collect()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_reads_fixture_text() {
        assert_eq!(hex("00 01 02 00 00"), [0, 1, 2, 0, 0]);
        assert_eq!(hex("ff0A"), [255, 10]);
        assert!(std::panic::catch_unwind(|| hex("0")).is_err());
    }
}
