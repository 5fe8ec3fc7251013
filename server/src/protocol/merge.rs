//! Merging the messages of one stream read before relaying them to a room's connections
//! (y-redis's subscriber merge, without its defects: no phantom awareness entry, client
//! removals kept, one message per frame).

use bytes::Bytes;

use super::awareness::AwarenessStates;
use super::message::{
    decode_entry, encode_awareness_message, encode_sync_update, Decoded, SYNC_UPDATE,
};
use super::update::merge_updates_v1;

/// Merge the `m` values read from one stream in one read, in stream order:
/// - entries that fail strict decoding, and entries that are neither sync updates nor
///   awareness, are skipped (one warning each);
/// - exactly one valid message is returned unchanged (same bytes);
/// - otherwise all update payloads become ONE sync update (yrs `merge_updates_v1`; a
///   single update is kept byte-identical), followed by ONE awareness message with the
///   combined states in first-seen order (later clock wins per client), including
///   clients that left as `null` entries;
/// - if the updates cannot be merged, they are emitted one by one instead.
///
/// Each element of the result is one complete message, to be sent as its own WebSocket
/// frame: y-websocket clients read only the first message of a frame.
pub fn merge_messages<M: AsRef<[u8]>>(messages: &[M]) -> Vec<Bytes> {
    let mut updates: Vec<(&[u8], &[u8])> = Vec::new(); // (message, payload)
    let mut awareness_messages: Vec<&[u8]> = Vec::new();
    let mut awareness = AwarenessStates::default();
    for (i, m) in messages.iter().enumerate() {
        let m = m.as_ref();
        match decode_entry(m) {
            Ok(Decoded::Sync(SYNC_UPDATE, payload)) => updates.push((m, payload)),
            Ok(Decoded::Awareness(u, _)) => {
                awareness.apply(&u);
                awareness_messages.push(m);
            }
            Ok(_) => tracing::warn!(
                entry = i,
                len = m.len(),
                "skipping stream entry that is neither a sync update nor awareness"
            ),
            Err(error) => tracing::warn!(
                entry = i,
                len = m.len(),
                %error,
                "skipping unreadable stream entry"
            ),
        }
    }

    match (updates.as_slice(), awareness_messages.as_slice()) {
        ([], []) => return Vec::new(),
        ([(only, _)], []) | ([], [only]) => return vec![Bytes::copy_from_slice(only)],
        _ => {}
    }

    let mut out = Vec::with_capacity(2);
    match updates.as_slice() {
        [] => {}
        [(only, _)] => out.push(Bytes::copy_from_slice(only)),
        many => {
            let payloads: Vec<&[u8]> = many.iter().map(|(_, p)| *p).collect();
            match merge_updates_v1(&payloads) {
                Ok(merged) => out.push(Bytes::from(encode_sync_update(&merged))),
                Err(error) => {
                    tracing::warn!(
                        updates = many.len(),
                        %error,
                        "could not merge updates; relaying them one by one"
                    );
                    out.extend(many.iter().map(|(m, _)| Bytes::copy_from_slice(m)));
                }
            }
        }
    }
    let combined = awareness.to_update(true);
    if !combined.entries.is_empty() {
        out.push(Bytes::from(encode_awareness_message(&combined)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::test_util::{content, doc_from_v1, fixture, unhex};
    use crate::protocol::{decode_message, AwarenessUpdate, Message, SyncMessage};
    use serde_json::Value;

    /// The update payloads and awareness updates of a list of complete messages.
    fn split<M: AsRef<[u8]>>(messages: &[M]) -> (Vec<Vec<u8>>, Vec<AwarenessUpdate>) {
        let mut updates = Vec::new();
        let mut awareness = Vec::new();
        for m in messages {
            match decode_message(m.as_ref()).unwrap() {
                Message::Sync(SyncMessage::Update(p)) => updates.push(p),
                Message::Awareness(a) => awareness.push(a),
                other => panic!("unexpected message in merge output: {other:?}"),
            }
        }
        (updates, awareness)
    }

    /// Awareness entries as comparable values: (client, clock, parsed state).
    fn entries(updates: &[AwarenessUpdate]) -> Vec<(u64, u64, Value)> {
        updates
            .iter()
            .flat_map(|u| &u.entries)
            .map(|e| {
                let state: Value = serde_json::from_str(&e.state).unwrap();
                (e.client_id, e.clock, state)
            })
            .collect()
    }

    #[test]
    fn merge_messages_fixture() {
        let f = fixture("protocol.json");
        let cases = f["mergeMessages"].as_array().unwrap();
        assert_eq!(cases.len(), 12);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let input: Vec<Vec<u8>> = case["input"]
                .as_array()
                .unwrap()
                .iter()
                .map(unhex)
                .collect();
            let theirs: Vec<Vec<u8>> = case["output"]
                .as_array()
                .unwrap()
                .iter()
                .map(unhex)
                .collect();
            let ours = merge_messages(&input);

            if input.len() == 1 {
                assert_eq!(ours, vec![Bytes::from(input[0].clone())], "{name}");
                assert_eq!(ours[0].as_ref(), theirs[0].as_slice(), "{name}");
                continue;
            }

            // Every element of our output is exactly one message (strict decode).
            let (our_updates, our_awareness) = split(&ours);
            let (their_updates, their_awareness) = split(&theirs);

            // Document content: one merged update holding what y-redis's holds.
            assert_eq!(our_updates.len(), their_updates.len(), "{name}");
            assert!(our_updates.len() <= 1, "{name}");
            if let (Some(ours), Some(theirs)) = (our_updates.first(), their_updates.first()) {
                assert_eq!(
                    content(&doc_from_v1(&[ours])),
                    content(&doc_from_v1(&[theirs])),
                    "{name}"
                );
            }

            // Awareness: y-redis's minus its phantom entry (clock 0, state {}, a client
            // that appears in no input) equals ours minus the removals it loses.
            let input_clients: Vec<u64> = input
                .iter()
                .filter_map(|m| match decode_message(m) {
                    Ok(Message::Awareness(a)) => Some(a),
                    _ => None,
                })
                .flat_map(|a| a.entries.into_iter().map(|e| e.client_id))
                .collect();
            let mut phantoms = 0;
            let theirs: Vec<_> = entries(&their_awareness)
                .into_iter()
                .filter(|(client, clock, state)| {
                    let phantom = *clock == 0
                        && *state == serde_json::json!({})
                        && !input_clients.contains(client);
                    phantoms += usize::from(phantom);
                    !phantom
                })
                .collect();
            assert_eq!(phantoms, 1, "{name}: the fixture should carry one phantom");
            let ours_all = entries(&our_awareness);
            let ours_live: Vec<_> = ours_all
                .iter()
                .filter(|(_, _, s)| !s.is_null())
                .cloned()
                .collect();
            assert_eq!(ours_live, theirs, "{name}");
            if name.contains("null") {
                // The removal that y-redis loses is kept.
                assert_eq!(ours_all, vec![(10, 2, Value::Null)], "{name}");
            } else {
                assert_eq!(ours_all, ours_live, "{name}");
            }

            // One message per element: update first, then one awareness message if any.
            assert!(our_awareness.len() <= 1, "{name}");
            assert_eq!(
                ours.len(),
                our_updates.len() + our_awareness.len(),
                "{name}"
            );
            if !our_updates.is_empty() {
                assert_eq!(ours[0][0], 0, "{name}: the update comes first");
            }
        }
    }

    #[test]
    fn single_valid_message_passes_through() {
        let update = hex::decode("00020f01010100040101740568656c6c6f00").unwrap();
        let awareness = hex::decode("0110010a010c7b2275736572223a2261227d").unwrap();
        for m in [&update, &awareness] {
            assert_eq!(merge_messages(&[m]), vec![Bytes::from(m.clone())]);
            // Invalid or non-relayable neighbours do not count.
            let noise: [&[u8]; 3] = [&[0, 0, 1, 0], &[7, 1, 2], &[0, 2, 1, 0]];
            let mut input: Vec<&[u8]> = noise.to_vec();
            input.insert(1, m);
            assert_eq!(merge_messages(&input), vec![Bytes::from(m.clone())]);
        }
        assert!(merge_messages::<&[u8]>(&[]).is_empty());
        assert!(merge_messages(&[[7u8, 1, 2]]).is_empty());
    }

    #[test]
    fn one_update_with_awareness_keeps_update_bytes() {
        let update = hex::decode("00020f01010100040101740568656c6c6f00").unwrap();
        let a1 = hex::decode("0110010a010c7b2275736572223a2261227d").unwrap();
        let removal = crate::protocol::encode_awareness_removal(10, 1);
        let out = merge_messages(&[&update, &a1, &removal]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].as_ref(), update.as_slice());
        assert_eq!(out[1].as_ref(), removal.as_slice());
    }

    #[test]
    fn awareness_only_merges_into_one_message() {
        let a = hex::decode("0110010a010c7b2275736572223a2261227d").unwrap();
        let b = hex::decode("0110010b050c7b2275736572223a2262227d").unwrap();
        let out = merge_messages(&[&a, &b]);
        assert_eq!(
            hex::encode(&out[0]),
            "011f020a010c7b2275736572223a2261227d0b050c7b2275736572223a2262227d"
        );
        assert_eq!(out.len(), 1);
    }
}

#[cfg(test)]
mod entry_tests {
    use super::*;
    use crate::protocol::{decode_stream_entry, Message, SyncMessage};

    #[test]
    fn bytes_after_an_entrys_first_message_are_ignored_as_y_redis_does() {
        let update = hex::decode("00020f01010100040101740568656c6c6f00").unwrap();
        let mut entry = update.clone();
        entry.extend_from_slice(&[0xff, 0x00]);
        assert!(matches!(
            decode_stream_entry(&entry),
            Ok(Message::Sync(SyncMessage::Update(_)))
        ));
        assert!(
            crate::protocol::decode_message(&entry).is_err(),
            "clients stay strict"
        );
        let other = hex::decode("00020f010101058401040620776f726c6400").unwrap();
        let merged = merge_messages(&[entry.clone(), other]);
        assert_eq!(merged.len(), 1, "both updates merged: {merged:?}");
        assert_eq!(merge_messages(&[entry.clone()]), vec![Bytes::from(entry)]);
    }
}

#[cfg(test)]
mod awareness_entry_tests {
    use super::*;
    use crate::protocol::{decode_message, decode_stream_entry, Message};

    /// `01 len [2 entries: (10, 1, {"a":1}), (11, 1, not json)]`.
    fn half_bad() -> Vec<u8> {
        let mut payload = vec![2u8, 10, 1];
        payload.push(7);
        payload.extend_from_slice(br#"{"a":1}"#);
        payload.extend_from_slice(&[11, 1, 3]);
        payload.extend_from_slice(b"no!");
        let mut m = vec![1u8, payload.len() as u8];
        m.extend_from_slice(&payload);
        m
    }

    #[test]
    fn awareness_entries_before_a_bad_one_count_as_y_protocols_applies_them() {
        let entry = half_bad();
        assert!(decode_message(&entry).is_err(), "clients stay strict");
        let Ok(Message::Awareness(update)) = decode_stream_entry(&entry) else {
            panic!("readable as a stream entry");
        };
        assert_eq!(update.entries.len(), 1);
        assert_eq!(update.entries[0].client_id, 10);
        let other = crate::protocol::encode_awareness_removal(12, 0);
        let merged = merge_messages(&[entry, other]);
        assert_eq!(merged.len(), 1);
        let Ok(Message::Awareness(states)) = decode_message(&merged[0]) else {
            panic!("one awareness message");
        };
        let ids: Vec<u64> = states.entries.iter().map(|e| e.client_id).collect();
        assert_eq!(ids, [10, 12]);
    }
}
