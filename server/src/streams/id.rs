//! Redis stream ids (`<ms>-<seq>`), compared the way y-redis compares them.

use std::fmt;
use std::str::FromStr;

/// A Redis stream id that is neither `ms` nor `ms-seq`: the one way reading an
/// id fails, so callers can log it or skip the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed stream id {0:?}")]
pub struct InvalidStreamId(pub String);

/// A Redis stream entry id. Ordering is Redis's: by milliseconds, then sequence. Used to
/// track how far a room's stream has been read and to compute trim points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    /// Milliseconds part (the entry's creation time on the Redis server).
    pub ms: u64,
    /// Sequence number within that millisecond.
    pub seq: u64,
}

impl StreamId {
    /// `0-0`, the id before every entry (`XREAD` from here returns the whole stream).
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    /// The smallest id after this one (an inclusive range start that skips
    /// this id, also on Redis versions without exclusive ranges).
    pub fn next(self) -> StreamId {
        match self.seq.checked_add(1) {
            Some(seq) => StreamId { ms: self.ms, seq },
            None => StreamId {
                ms: self.ms.saturating_add(1),
                seq: 0,
            },
        }
    }
}

impl FromStr for StreamId {
    type Err = InvalidStreamId;

    /// Parse `ms-seq`, or `ms` alone meaning `ms-0` (as y-redis reads ids without a
    /// sequence).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidStreamId(s.to_owned());
        let number = |part: &str| {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            part.parse::<u64>().map_err(|_| invalid())
        };
        match s.split_once('-') {
            Some((ms, seq)) => Ok(StreamId {
                ms: number(ms)?,
                seq: number(seq)?,
            }),
            None => Ok(StreamId {
                ms: number(s)?,
                seq: 0,
            }),
        }
    }
}

impl fmt::Display for StreamId {
    /// Redis's form, `ms-seq`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// y-redis's `isSmallerRedisId`: whether stream id `a` comes before `b`, ids without a
/// sequence counting as `-0`. Like the JavaScript original (whose `NaN` comparisons are
/// false), an id that cannot be parsed is never smaller nor larger.
pub fn is_smaller_redis_id(a: &str, b: &str) -> bool {
    match (a.parse::<StreamId>(), b.parse::<StreamId>()) {
        (Ok(a), Ok(b)) => a < b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn is_smaller_redis_id_fixture() {
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/yredis-0.1.6/protocol.json"
        ));
        let f: Value = serde_json::from_str(text).unwrap();
        let cases = f["isSmallerRedisId"].as_array().unwrap();
        assert_eq!(cases.len(), 6);
        for case in cases {
            let a = case["a"].as_str().unwrap();
            let b = case["b"].as_str().unwrap();
            let expected = case["aSmaller"].as_bool().unwrap();
            assert_eq!(is_smaller_redis_id(a, b), expected, "{case}");
        }
    }

    #[test]
    fn parse_and_display() {
        assert_eq!("123".parse::<StreamId>(), Ok(StreamId { ms: 123, seq: 0 }));
        assert_eq!(
            "1795627746827-2".parse::<StreamId>(),
            Ok(StreamId {
                ms: 1795627746827,
                seq: 2
            })
        );
        assert_eq!(StreamId { ms: 5, seq: 7 }.to_string(), "5-7");
        assert_eq!(StreamId::ZERO.to_string(), "0-0");
        assert_eq!("0".parse::<StreamId>(), Ok(StreamId::ZERO));
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "a-1",
            "1-b",
            "+1",
            "1-2-3",
            " 1",
            "99999999999999999999",
        ] {
            assert!(bad.parse::<StreamId>().is_err(), "{bad:?}");
        }
        assert!(!is_smaller_redis_id("x", "1-0"));
        assert!(!is_smaller_redis_id("1-0", "x"));
        assert!(StreamId { ms: 1, seq: 9 } < StreamId { ms: 2, seq: 0 });
    }
}
