//! Key names of the Redis Cluster layout (docs/protocol.md, "Redis Cluster
//! layout"): every key of a room carries its shard's hash tag, so that the
//! room's stream, its shard's worker queue and the shard's epoch marker live
//! in one hash slot, and an append with its compaction task stays one atomic
//! script on one node.

use std::collections::HashMap;

use crate::streams::keys::{encode_uri_component, parse_stream_key, stream_key, KeyError};

/// The number of hash slots of a Redis Cluster.
pub const SLOTS: u32 = 16_384;

/// The keys of one fleet on a cluster: its prefix and its shards' tags.
#[derive(Debug, Clone)]
pub struct ClusterKeys {
    prefix: String,
    /// The tag of shard `i` at index `i`.
    tags: Vec<String>,
    /// Shard index by tag.
    by_tag: HashMap<String, usize>,
}

impl ClusterKeys {
    /// The layout of `shards` shards (at least 1) under `prefix`.
    pub fn new(prefix: &str, shards: u16) -> Self {
        let shards = shards.max(1);
        let tags: Vec<String> = (0..shards).map(|i| shard_tag(i, shards)).collect();
        let by_tag = tags
            .iter()
            .enumerate()
            .map(|(i, tag)| (tag.clone(), i))
            .collect();
        Self {
            prefix: prefix.to_string(),
            tags,
            by_tag,
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How many shards there are.
    pub fn shards(&self) -> usize {
        self.tags.len()
    }

    /// The hash tag of shard `shard` (without its braces).
    pub fn tag(&self, shard: usize) -> &str {
        &self.tags[shard % self.tags.len()]
    }

    /// The shard of a room's document: FNV-1a of its y-redis stream key, modulo
    /// the shard count, so that every instance puts a room in the same shard.
    pub fn shard_of(&self, room: &str, docid: &str) -> usize {
        let key = stream_key(&self.prefix, room, docid);
        (fnv1a(key.as_bytes()) % self.tags.len() as u32) as usize
    }

    /// The stream of a document: `{prefix}:{tag}:room:{enc(room)}:{enc(docid)}`
    /// with literal braces around the shard's tag.
    pub fn stream_key(&self, room: &str, docid: &str) -> String {
        let tag = self.tag(self.shard_of(room, docid));
        format!(
            "{}:{{{tag}}}:room:{}:{}",
            self.prefix,
            encode_uri_component(room),
            encode_uri_component(docid)
        )
    }

    /// The shard a key of this layout belongs to (by its tag); `None` for a
    /// key of another prefix or without a known tag.
    pub fn shard_of_key(&self, key: &str) -> Option<usize> {
        let rest = key.strip_prefix(self.prefix.as_str())?.strip_prefix(":{")?;
        let (tag, _) = rest.split_once('}')?;
        self.by_tag.get(tag).copied()
    }

    /// `(room, docid)` of a stream key of this layout: y-redis's parse of the
    /// key without its tag, and the tag must be the room's own shard's.
    pub fn parse_stream_key(&self, key: &str) -> Result<(String, String), KeyError> {
        let malformed = || KeyError::InvalidStreamKey(key.to_owned());
        let Some(rest) = key
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix(":{"))
        else {
            return match key.split_once(":{") {
                Some((found, _)) => Err(KeyError::WrongPrefix {
                    key: key.to_owned(),
                    found: found.to_owned(),
                    expected: self.prefix.clone(),
                }),
                None => Err(malformed()),
            };
        };
        let (tag, rest) = rest.split_once('}').ok_or_else(malformed)?;
        let shard = *self.by_tag.get(tag).ok_or_else(malformed)?;
        if !rest.starts_with(":room:") {
            return Err(malformed());
        }
        let untagged = format!("{}{rest}", self.prefix);
        let (room, docid) = parse_stream_key(&self.prefix, &untagged).map_err(|err| match err {
            KeyError::WrongPrefix { .. } => malformed(),
            other => other,
        })?;
        if self.shard_of(&room, &docid) != shard {
            return Err(malformed());
        }
        Ok((room, docid))
    }

    /// The worker queue of a shard, `{prefix}:{tag}:worker`; its consumer
    /// group has the same name.
    pub fn worker_key(&self, shard: usize) -> String {
        format!("{}:{{{}}}:worker", self.prefix, self.tag(shard))
    }

    /// The epoch marker of a shard, `{prefix}:{tag}:epoch`: a random value set
    /// when missing, so that a node losing its data (FLUSHALL) is noticed.
    pub fn epoch_key(&self, shard: usize) -> String {
        format!("{}:{{{}}}:epoch", self.prefix, self.tag(shard))
    }
}

/// The tag of shard `shard` of `shards`: the smallest non-negative integer,
/// in decimal, whose hash slot lies in the shard's share
/// `[shard * 16384 / shards, (shard + 1) * 16384 / shards)` of the slot space.
pub fn shard_tag(shard: u16, shards: u16) -> String {
    let shards = u32::from(shards.max(1));
    let shard = u32::from(shard) % shards;
    let low = shard * SLOTS / shards;
    let high = (shard + 1) * SLOTS / shards;
    // Every range holds at least 16 slots, and the slots of the integers cover
    // them all long before u32 runs out.
    (0u32..)
        .map(|n| n.to_string())
        .find(|tag| (low..high).contains(&u32::from(crc16(tag.as_bytes()) % SLOTS as u16)))
        .unwrap_or_default()
}

/// The hash slot of a key as a Redis Cluster computes it: CRC16 of its hash
/// tag (what lies between the first `{` and the first `}` after it, when that
/// is not empty) or of the whole key, modulo 16384.
pub fn hash_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS as u16
}

/// CRC16-XMODEM (polynomial 0x1021, initial value 0), the cluster's key hash.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// FNV-1a, 32 bits.
fn fnv1a(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |hash, &byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_and_slots_match_redis() {
        // The check value of CRC16-XMODEM, and slots that `CLUSTER KEYSLOT` gives.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(hash_slot(b"foo"), 12182);
        assert_eq!(hash_slot(b"{user1000}.following"), hash_slot(b"user1000"));
        assert_eq!(hash_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(hash_slot(b"y:{7}:room:a:index"), hash_slot(b"7"));
    }

    #[test]
    fn fnv1a_matches_its_reference_values() {
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn shard_tags_lie_in_their_share_of_the_slots() {
        for shards in [1u16, 2, 3, 16, 100, 1024] {
            let mut seen = std::collections::HashSet::new();
            for shard in 0..shards {
                let tag = shard_tag(shard, shards);
                let slot = u32::from(hash_slot(tag.as_bytes()));
                let low = u32::from(shard) * SLOTS / u32::from(shards);
                let high = (u32::from(shard) + 1) * SLOTS / u32::from(shards);
                assert!(
                    (low..high).contains(&slot),
                    "{shards}/{shard}: {tag} → {slot}"
                );
                assert!(seen.insert(tag), "tags differ");
            }
        }
        // Deterministic: the smallest integer of the range, the same every time.
        assert_eq!(shard_tag(0, 1), "0");
        assert_eq!(shard_tag(5, 16), shard_tag(5, 16));
        let tag = shard_tag(3, 16);
        let n: u32 = tag.parse().unwrap();
        for smaller in 0..n {
            let slot = u32::from(hash_slot(smaller.to_string().as_bytes()));
            assert!(!(3 * 1024..4 * 1024).contains(&slot));
        }
    }

    #[test]
    fn stream_keys_round_trip() {
        let keys = ClusterKeys::new("y", 16);
        for (room, docid) in [
            ("plain", "index"),
            ("with space/and:colon", "index"),
            ("ünï{c}ode", "doc:2"),
            ("", "index"),
        ] {
            let key = keys.stream_key(room, docid);
            let shard = keys.shard_of(room, docid);
            assert!(key.starts_with(&format!("y:{{{}}}:room:", keys.tag(shard))));
            assert_eq!(keys.shard_of_key(&key), Some(shard));
            assert_eq!(
                keys.parse_stream_key(&key),
                Ok((room.to_string(), docid.to_string()))
            );
            assert_eq!(
                u32::from(hash_slot(key.as_bytes())),
                u32::from(hash_slot(keys.worker_key(shard).as_bytes()))
            );
            assert_eq!(
                hash_slot(key.as_bytes()),
                hash_slot(keys.epoch_key(shard).as_bytes())
            );
        }
    }

    #[test]
    fn rooms_spread_over_every_shard() {
        let keys = ClusterKeys::new("y", 16);
        let mut per_shard = [0usize; 16];
        for i in 0..1600 {
            per_shard[keys.shard_of(&format!("room-{i}"), "index")] += 1;
        }
        assert!(per_shard.iter().all(|&n| n > 50), "{per_shard:?}");
    }

    #[test]
    fn foreign_keys_are_refused() {
        let keys = ClusterKeys::new("y", 16);
        // y-redis's own layout, another prefix, an unknown tag, a tag that is
        // not the room's shard.
        assert!(keys.parse_stream_key("y:room:a:index").is_err());
        let other = ClusterKeys::new("z", 16).stream_key("a", "index");
        assert!(matches!(
            keys.parse_stream_key(&other),
            Err(KeyError::WrongPrefix { .. })
        ));
        assert!(keys.parse_stream_key("y:{nope}:room:a:index").is_err());
        let shard = keys.shard_of("a", "index");
        let wrong = keys.tag((shard + 1) % 16);
        assert!(keys
            .parse_stream_key(&format!("y:{{{wrong}}}:room:a:index"))
            .is_err());
        assert!(keys
            .parse_stream_key(&format!("y:{{{}}}:worker", keys.tag(shard)))
            .is_err());
        assert_eq!(keys.shard_of_key("y:room:a:index"), None);
    }
}
