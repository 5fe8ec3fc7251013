//! The versions a Rust worker keeps of a document, beside y-redis's items and
//! in a namespace y-redis never lists, reads or deletes (docs/storage.md,
//! "History"), and the retention that thins them out.

use serde::Serialize;

use super::{Storage, StorageError};
use crate::streams::encode_uri_component;

/// One kept version of a document: the whole state a compaction stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Version {
    /// Grows by one with every version of the document.
    pub version: u64,
    /// When it was kept, in milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// A named snapshot's name: kept until deleted, whatever the retention.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// How long versions are kept (`[history]` settings): every version for
/// `keep_all_ms`, then the last of each hour for `hourly_ms` more, then the
/// last of each day for `daily_ms` more (`None`: forever). Named snapshots and
/// the latest version are always kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Milliseconds every version is kept.
    pub keep_all_ms: u64,
    /// Milliseconds, after those, one version an hour is kept.
    pub hourly_ms: u64,
    /// Milliseconds, after those, one version a day is kept; `None` = forever.
    pub daily_ms: Option<u64>,
}

/// Milliseconds of a clock hour.
const HOUR_MS: u64 = 3_600_000;
/// Milliseconds of a UTC day.
const DAY_MS: u64 = 24 * HOUR_MS;

/// The most bytes a snapshot name may have once `encodeURIComponent`-encoded:
/// it is part of an object or file name, which the room and docid parts already
/// fill up to about 800 bytes of the 1024 (objects) or 255 (files) allowed.
pub const MAX_NAME_BYTES: usize = 200;

/// The versions `retention` drops from `versions` at `now_ms`, in ascending
/// order. By age (`now_ms - timestamp`): younger than `keep_all_ms`, every
/// version is kept; up to `hourly_ms` more, the latest version of each UTC clock
/// hour; up to `daily_ms` more (forever when `None`), the latest of each UTC
/// day; older ones are dropped. "Latest of an hour (day)" is among every version
/// of that hour (day), so a version dropped now would be dropped later too.
/// Named versions and the single latest version are always kept.
pub fn to_drop(versions: &[Version], now_ms: u64, retention: &Retention) -> Vec<u64> {
    use std::collections::HashMap;

    let Some(latest) = versions.iter().map(|v| v.version).max() else {
        return Vec::new();
    };
    // The latest version (by timestamp, then number) of each hour and day.
    let mut hour_latest: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut day_latest: HashMap<u64, (u64, u64)> = HashMap::new();
    for v in versions {
        let key = (v.timestamp, v.version);
        for (map, bucket) in [
            (&mut hour_latest, v.timestamp / HOUR_MS),
            (&mut day_latest, v.timestamp / DAY_MS),
        ] {
            let best = map.entry(bucket).or_insert(key);
            if key > *best {
                *best = key;
            }
        }
    }
    let hourly_end = retention.keep_all_ms.saturating_add(retention.hourly_ms);
    let daily_end = retention.daily_ms.map(|d| hourly_end.saturating_add(d));
    let mut dropped: Vec<u64> = versions
        .iter()
        .filter(|v| {
            if v.name.is_some() || v.version == latest {
                return false;
            }
            let age = now_ms.saturating_sub(v.timestamp);
            let key = (v.timestamp, v.version);
            if age < retention.keep_all_ms {
                false
            } else if age < hourly_end {
                hour_latest.get(&(v.timestamp / HOUR_MS)) != Some(&key)
            } else if daily_end.is_none_or(|end| age < end) {
                day_latest.get(&(v.timestamp / DAY_MS)) != Some(&key)
            } else {
                true
            }
        })
        .map(|v| v.version)
        .collect();
    dropped.sort_unstable();
    dropped.dedup();
    dropped
}

/// Apply `retention` to the versions of (room, docid) at `now_ms`: delete what
/// [`to_drop`] names and return those version numbers.
pub async fn apply_retention(
    storage: &dyn Storage,
    room: &str,
    docid: &str,
    retention: &Retention,
    now_ms: u64,
) -> Result<Vec<u64>, StorageError> {
    let versions = storage.versions(room, docid).await?;
    let dropped = to_drop(&versions, now_ms, retention);
    if !dropped.is_empty() {
        storage.delete_versions(room, docid, &dropped).await?;
    }
    Ok(dropped)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Refuse a snapshot name that is empty or too long to be part of a stored name.
pub(super) fn check_name(name: &str) -> Result<(), StorageError> {
    let encoded = encode_uri_component(name).len();
    if name.is_empty() || encoded > MAX_NAME_BYTES {
        return Err(StorageError::Config(format!(
            "a snapshot name must have 1 to {MAX_NAME_BYTES} bytes once encoded, not {encoded}"
        )));
    }
    Ok(())
}

/// The top-level name of the history namespace in object stores and the fs
/// directory. `$` is escaped by `encodeURIComponent`, so no y-redis room
/// encodes to it.
pub(super) const HISTORY_ROOT: &str = "$history";

/// The file or object leaf name of a version:
/// `{version:020}-{timestamp:013}`, and `-{enc(name)}` for a named snapshot.
pub(super) fn leaf_name(version: &Version) -> String {
    let plain = format!("{:020}-{:013}", version.version, version.timestamp);
    match &version.name {
        Some(name) => format!("{plain}-{}", encode_uri_component(name)),
        None => plain,
    }
}

/// The version a leaf name describes; `None` for names of any other shape.
pub(super) fn parse_leaf(leaf: &str) -> Option<Version> {
    let mut parts = leaf.splitn(3, '-');
    let number = parts.next()?;
    let timestamp = parts.next()?;
    let digits = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(number, 20) || !digits(timestamp, 13) {
        return None;
    }
    let name = match parts.next() {
        None => None,
        Some("") => return None,
        Some(encoded) => Some(decode_component(encoded)?),
    };
    Some(Version {
        version: number.parse().ok()?,
        timestamp: timestamp.parse().ok()?,
        name,
    })
}

/// The text an `encodeURIComponent` encoding stands for; `None` when it is not
/// one (a name shortened with its hash, `names`, or invalid UTF-8).
pub(super) fn decode_component(encoded: &str) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .ok()?
        .into_owned();
    (encode_uri_component(&decoded) == encoded).then_some(decoded)
}

/// Versions from a listing of leaf names, oldest first, one per number: when a
/// version is listed twice (naming it was interrupted between writing the named
/// object and deleting the plain one) the named one wins. Each version comes
/// with the leaf names it is stored under.
pub(super) fn versions_of_leaves<'a>(
    leaves: impl IntoIterator<Item = &'a str>,
) -> Vec<(Version, Vec<String>)> {
    let mut by_number: std::collections::BTreeMap<u64, (Version, Vec<String>)> =
        std::collections::BTreeMap::new();
    for leaf in leaves {
        let Some(version) = parse_leaf(leaf) else {
            continue;
        };
        match by_number.entry(version.version) {
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert((version, vec![leaf.to_string()]));
            }
            std::collections::btree_map::Entry::Occupied(mut slot) => {
                let (kept, leaves) = slot.get_mut();
                leaves.push(leaf.to_string());
                if kept.name.is_none() && version.name.is_some() {
                    *kept = version;
                }
            }
        }
    }
    by_number.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-03-10 00:00:00 UTC.
    const DAY0: u64 = 1_710_028_800_000;
    const MINUTE: u64 = 60_000;

    fn v(version: u64, timestamp: u64) -> Version {
        Version {
            version,
            timestamp,
            name: None,
        }
    }

    fn retention(keep_all_h: u64, hourly_d: u64, daily_d: Option<u64>) -> Retention {
        Retention {
            keep_all_ms: keep_all_h * HOUR_MS,
            hourly_ms: hourly_d * DAY_MS,
            daily_ms: daily_d.map(|d| d * DAY_MS),
        }
    }

    #[test]
    fn nothing_to_drop_without_versions() {
        assert!(to_drop(&[], DAY0, &retention(1, 1, Some(1))).is_empty());
    }

    #[test]
    fn young_versions_are_all_kept() {
        let versions: Vec<Version> = (1..=10).map(|i| v(i, DAY0 + i * MINUTE)).collect();
        let now = DAY0 + 11 * MINUTE;
        assert!(to_drop(&versions, now, &retention(1, 0, Some(0))).is_empty());
    }

    #[test]
    fn the_latest_of_each_hour_is_kept_in_the_hourly_band() {
        // Three versions in hour 0, two in hour 1, one in hour 2.
        let versions = [
            v(1, DAY0 + 5 * MINUTE),
            v(2, DAY0 + 30 * MINUTE),
            v(3, DAY0 + 59 * MINUTE),
            v(4, DAY0 + HOUR_MS),
            v(5, DAY0 + HOUR_MS + 10 * MINUTE),
            v(6, DAY0 + 2 * HOUR_MS + 10 * MINUTE),
        ];
        // Ten hours later: all past keep-all (1 h), all within a day of hourly.
        let now = DAY0 + 10 * HOUR_MS;
        assert_eq!(
            to_drop(&versions, now, &retention(1, 1, None)),
            vec![1, 2, 4]
        );
    }

    #[test]
    fn the_latest_of_each_day_is_kept_in_the_daily_band_then_all_go() {
        let versions = [
            v(1, DAY0 + HOUR_MS),
            v(2, DAY0 + 5 * HOUR_MS),
            v(3, DAY0 + DAY_MS + HOUR_MS),
            v(4, DAY0 + DAY_MS + 23 * HOUR_MS),
            v(5, DAY0 + 10 * DAY_MS),
        ];
        // Daily band forever: the latest of day 0 and of day 1 stay.
        let now = DAY0 + 10 * DAY_MS + MINUTE;
        assert_eq!(to_drop(&versions, now, &retention(0, 0, None)), vec![1, 3]);
        // A daily band of five days: days 0 and 1 are more than five days old.
        assert_eq!(
            to_drop(&versions, now, &retention(0, 0, Some(5))),
            vec![1, 2, 3, 4]
        );
    }

    #[test]
    fn named_and_latest_versions_are_always_kept() {
        let mut named = v(1, DAY0);
        named.name = Some("release".into());
        let versions = [named, v(2, DAY0 + MINUTE), v(3, DAY0 + 2 * MINUTE)];
        let far = DAY0 + 1000 * DAY_MS;
        assert_eq!(to_drop(&versions, far, &retention(0, 0, Some(0))), vec![2]);
        assert!(to_drop(&[v(7, DAY0)], far, &retention(0, 0, Some(0))).is_empty());
    }

    #[test]
    fn band_edges_are_exact() {
        // keep-all 1 h, hourly 1 day, daily 1 day.
        let r = retention(1, 1, Some(1));
        let hourly_end = HOUR_MS + DAY_MS;
        let daily_end = hourly_end + DAY_MS;
        let now = DAY0 + 50 * DAY_MS + 12 * HOUR_MS;
        // Version 1's age, how much later version 2 was kept (if at all), and
        // what is dropped.
        let table: [(u64, Option<u64>, &[u64]); 6] = [
            // Same hour: version 1 is kept only while younger than keep-all.
            (HOUR_MS - 1, Some(1), &[]),
            (HOUR_MS, Some(1), &[1]),
            // The latest of its hour, not of its day: kept in the hourly band.
            (hourly_end - 1, Some(HOUR_MS), &[]),
            (hourly_end, Some(HOUR_MS), &[1]),
            // Alone in its day: kept until the daily band ends.
            (daily_end - 1, None, &[]),
            (daily_end, None, &[1]),
        ];
        for (age, later, expected) in table {
            let mut versions = vec![v(1, now - age), v(100, now)];
            if let Some(later) = later {
                versions.push(v(2, now - age + later));
            }
            assert_eq!(to_drop(&versions, now, &r), expected, "age {age}");
        }
    }

    /// Random version sets: the result is stable over time (what is dropped
    /// now is dropped at any later time too), never names the latest or a
    /// named version, and keeps at least one version per hour (day) in the
    /// hourly (daily) band.
    #[test]
    fn random_histories_keep_the_invariants() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..300 {
            let r = retention(
                next() % 48,
                next() % 5,
                (next() % 3 > 0).then(|| next() % 10),
            );
            let count = 1 + next() % 60;
            let mut timestamp = DAY0;
            let versions: Vec<Version> = (1..=count)
                .map(|number| {
                    timestamp += next() % (6 * HOUR_MS);
                    Version {
                        version: number,
                        timestamp,
                        name: (next() % 10 == 0).then(|| format!("n{number}")),
                    }
                })
                .collect();
            let now = timestamp + next() % (20 * DAY_MS);
            let dropped = to_drop(&versions, now, &r);
            assert!(!dropped.contains(&count), "latest dropped");
            for version in &versions {
                if version.name.is_some() {
                    assert!(!dropped.contains(&version.version), "named dropped");
                }
            }
            let later = to_drop(&versions, now + next() % (5 * DAY_MS), &r);
            assert!(
                dropped.iter().all(|n| later.contains(n)),
                "{dropped:?} not within {later:?}"
            );
            let kept: Vec<&Version> = versions
                .iter()
                .filter(|v| !dropped.contains(&v.version))
                .collect();
            for version in &versions {
                let age = now - version.timestamp;
                let hourly_end = r.keep_all_ms + r.hourly_ms;
                let same = |width: u64| {
                    kept.iter()
                        .any(|k| k.timestamp / width == version.timestamp / width)
                };
                if age < r.keep_all_ms {
                    assert!(!dropped.contains(&version.version));
                } else if age < hourly_end {
                    assert!(same(HOUR_MS), "an hour lost all its versions");
                } else if r.daily_ms.is_none_or(|d| age < hourly_end + d) {
                    assert!(same(DAY_MS), "a day lost all its versions");
                }
            }
        }
    }

    #[test]
    fn leaf_names_round_trip() {
        let plain = v(3, 1_700_000_000_123);
        assert_eq!(leaf_name(&plain), "00000000000000000003-1700000000123");
        assert_eq!(parse_leaf(&leaf_name(&plain)), Some(plain));
        let named = Version {
            version: 12,
            timestamp: 5,
            name: Some("v1 - ä/b%".into()),
        };
        assert_eq!(
            leaf_name(&named),
            "00000000000000000012-0000000000005-v1%20-%20%C3%A4%2Fb%25"
        );
        assert_eq!(parse_leaf(&leaf_name(&named)), Some(named));
        for foreign in [
            "",
            "5b7e0f1c-1b0e-4a55-9a43-2f5d1f1a2b3c",
            "00000000000000000003-170000000012",
            "00000000000000000003-1700000000123-",
            "00000000000000000003-1700000000123-%zz",
            "0000000000000000000a-1700000000123",
        ] {
            assert_eq!(parse_leaf(foreign), None, "{foreign:?}");
        }
    }

    #[test]
    fn shortened_names_do_not_decode() {
        assert_eq!(decode_component("a%20b").as_deref(), Some("a b"));
        assert_eq!(decode_component("abc%h0123"), None);
        assert_eq!(decode_component("%C3"), None);
    }

    #[test]
    fn a_named_copy_wins_over_the_plain_one() {
        let listed = versions_of_leaves([
            "00000000000000000002-0000000000005",
            "00000000000000000002-0000000000005-keep",
            "00000000000000000001-0000000000004",
            "junk",
        ]);
        let versions: Vec<(u64, Option<&str>, usize)> = listed
            .iter()
            .map(|(v, leaves)| (v.version, v.name.as_deref(), leaves.len()))
            .collect();
        assert_eq!(versions, [(1, None, 1), (2, Some("keep"), 2)]);
    }

    #[test]
    fn snapshot_names_are_bounded() {
        assert!(check_name("release 1").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name(&"ä".repeat(40)).is_err());
        assert!(check_name(&"a".repeat(MAX_NAME_BYTES)).is_ok());
    }
}
