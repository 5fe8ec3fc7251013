//! y-websocket message framing: strict decoding of client frames, what the server does
//! with them, and encoding of the sync messages the server sends.

use bytes::Bytes;

use super::awareness::AwarenessUpdate;
use super::codec::{write_var_bytes, write_var_u64, Reader};
use super::error::ProtocolError;
use super::update::{check_state_vector_v1, check_update_v1};

/// Message type of sync messages (step1, step2, update).
pub const MESSAGE_SYNC: u64 = 0;
/// Message type of awareness (presence) messages.
pub const MESSAGE_AWARENESS: u64 = 1;
/// Message type of auth messages (permission denied notices).
pub const MESSAGE_AUTH: u64 = 2;
/// Message type a client sends to ask for the current awareness states.
pub const MESSAGE_QUERY_AWARENESS: u64 = 3;

/// Sync subtype: state vector of the sender, asking for what it misses.
pub const SYNC_STEP1: u64 = 0;
/// Sync subtype: an update answering a step1.
pub const SYNC_STEP2: u64 = 1;
/// Sync subtype: an incremental document update.
pub const SYNC_UPDATE: u64 = 2;

/// The body of a sync message, each holding its payload bytes (v1 encoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncMessage {
    /// A state vector: "send me what I miss".
    Step1(Vec<u8>),
    /// An update answering a step1.
    Step2(Vec<u8>),
    /// An incremental update.
    Update(Vec<u8>),
}

/// One decoded y-websocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Document synchronisation.
    Sync(SyncMessage),
    /// Presence states of some clients.
    Awareness(AwarenessUpdate),
    /// An auth message; its body (everything after the type) is kept raw because the
    /// server never acts on it.
    Auth(Vec<u8>),
    /// A request for the current awareness states; it has no body.
    QueryAwareness,
}

/// A message decoded without copying, plus the raw payload bytes the caller may reuse.
pub(crate) enum Decoded<'a> {
    Sync(u64, &'a [u8]),
    Awareness(AwarenessUpdate, &'a [u8]),
    Auth(&'a [u8]),
    QueryAwareness,
}

/// Strict decode of one frame; see [`decode_message`].
pub(crate) fn decode_frame(frame: &[u8]) -> Result<Decoded<'_>, ProtocolError> {
    let (decoded, rest) = decode_first(frame, false)?;
    if rest > 0 {
        return Err(ProtocolError::TrailingBytes);
    }
    Ok(decoded)
}

/// Decode of a stream entry as every y-redis reader decodes it: the first message,
/// strictly, and whatever follows it ignored. Entries are written by JavaScript
/// servers too, which store client frames unchecked; reading them as they do keeps
/// Rust-served and JavaScript-served clients of one room alike.
pub(crate) fn decode_entry(entry: &[u8]) -> Result<Decoded<'_>, ProtocolError> {
    decode_first(entry, true).map(|(decoded, _)| decoded)
}

/// Decode the first message of `frame`; returns it and the number of bytes after it.
/// `entry`: read an awareness payload as y-protocols applies it (the entries
/// before the first unreadable one) instead of refusing it.
fn decode_first(frame: &[u8], entry: bool) -> Result<(Decoded<'_>, usize), ProtocolError> {
    let mut r = Reader::new(frame);
    let decoded = match r.read_var_u64()? {
        MESSAGE_SYNC => {
            let subtype = r.read_var_u64()?;
            if subtype > SYNC_UPDATE {
                return Err(ProtocolError::UnknownSyncType(subtype));
            }
            let payload = r.read_var_bytes()?;
            if subtype == SYNC_STEP1 {
                check_state_vector_v1(payload).map_err(ProtocolError::InvalidStateVector)?;
            } else {
                check_update_v1(payload).map_err(ProtocolError::InvalidUpdate)?;
            }
            Decoded::Sync(subtype, payload)
        }
        MESSAGE_AWARENESS => {
            let payload = r.read_var_bytes()?;
            let update = if entry {
                AwarenessUpdate::decode_prefix(payload)
            } else {
                AwarenessUpdate::decode(payload)?
            };
            Decoded::Awareness(update, payload)
        }
        MESSAGE_AUTH => {
            let body = &frame[frame.len() - r.remaining()..];
            if body.is_empty() {
                return Err(ProtocolError::Truncated);
            }
            return Ok((Decoded::Auth(body), 0));
        }
        MESSAGE_QUERY_AWARENESS => Decoded::QueryAwareness,
        other => return Err(ProtocolError::UnknownMessageType(other)),
    };
    Ok((decoded, r.remaining()))
}

/// Strict decode of exactly one message occupying the whole frame (trailing bytes are an
/// error). Sync step2 and update payloads must be readable Yjs v1 updates, a step1
/// payload a v1 state vector, and an awareness payload must decode fully with valid JSON
/// states. This is the gate that keeps unreadable bytes out of Redis, where every
/// instance of the fleet, JavaScript ones included, would fail to load the room.
pub fn decode_message(frame: &[u8]) -> Result<Message, ProtocolError> {
    Ok(to_message(decode_frame(frame)?))
}

fn to_message(decoded: Decoded<'_>) -> Message {
    match decoded {
        Decoded::Sync(SYNC_STEP1, p) => Message::Sync(SyncMessage::Step1(p.to_vec())),
        Decoded::Sync(SYNC_STEP2, p) => Message::Sync(SyncMessage::Step2(p.to_vec())),
        Decoded::Sync(_, p) => Message::Sync(SyncMessage::Update(p.to_vec())),
        Decoded::Awareness(u, _) => Message::Awareness(u),
        Decoded::Auth(body) => Message::Auth(body.to_vec()),
        Decoded::QueryAwareness => Message::QueryAwareness,
    }
}

/// Decode a stream entry: its first message, strictly (see [`decode_message`]);
/// bytes after it are ignored, as y-redis's readers ignore them.
pub fn decode_stream_entry(entry: &[u8]) -> Result<Message, ProtocolError> {
    Ok(to_message(decode_entry(entry)?))
}

/// What the server does with a frame received from a client with write access, as
/// y-redis 0.1.6 does, except that unreadable payloads are refused instead of stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAction {
    /// Append these exact bytes to the room's stream (field `m`). For sync updates and
    /// awareness it is the frame itself; for step2 it is the frame with its second byte
    /// set to 2, i.e. the same payload as an update. (A frame whose framing varuints are
    /// over-long is re-encoded in the canonical form, so that every reader of the stream,
    /// including ones that test the leading bytes, sees what we saw.)
    Append {
        /// The complete message to store.
        message: Bytes,
        /// `(client id, clock)` of an awareness message with exactly one entry; the
        /// connection remembers it to announce the client's departure on close.
        awareness: Option<(u64, u64)>,
        /// What an awareness message carries, for per-connection limits.
        awareness_size: Option<AwarenessSize>,
    },
    /// Valid but not stored: sync step1 (the server already sent the whole state), a
    /// step2 shorter than 4 bytes, query-awareness and auth messages.
    Ignore,
}

/// The size of an awareness message's content: how many client entries, and
/// the longest state's JSON text in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AwarenessSize {
    /// Client entries in the message.
    pub clients: usize,
    /// Bytes of the longest state.
    pub largest_state: usize,
}

/// Decide what to do with a frame from a client with write access: strict decode (see
/// [`decode_message`]), then store updates, step2 answers (as updates) and awareness.
pub fn client_action(frame: &[u8]) -> Result<ClientAction, ProtocolError> {
    // y-redis drops a step2 shorter than 4 bytes by its first two bytes, without
    // reading it (no update fits: an empty one takes 2 bytes); ignore it likewise
    // instead of refusing the connection over it.
    if frame.len() < 4 && frame.starts_with(&[MESSAGE_SYNC as u8, SYNC_STEP2 as u8]) {
        return Ok(ClientAction::Ignore);
    }
    Ok(match decode_frame(frame)? {
        Decoded::Sync(SYNC_STEP1, _) => ClientAction::Ignore,
        Decoded::Sync(SYNC_STEP2, _) if frame.len() < 4 => ClientAction::Ignore,
        Decoded::Sync(_, payload) => {
            let canonical_len = 2 + var_u64_len(payload.len() as u64) + payload.len();
            let message = if frame.len() == canonical_len && frame[0] == 0 {
                let mut m = frame.to_vec();
                m[1] = 2;
                m
            } else {
                encode_sync_update(payload)
            };
            ClientAction::Append {
                message: Bytes::from(message),
                awareness: None,
                awareness_size: None,
            }
        }
        Decoded::Awareness(update, payload) => {
            let canonical_len = 1 + var_u64_len(payload.len() as u64) + payload.len();
            let message = if frame.len() == canonical_len {
                Bytes::copy_from_slice(frame)
            } else {
                Bytes::from(encode_message(MESSAGE_AWARENESS, None, payload))
            };
            let awareness = match update.entries.as_slice() {
                [only] => Some((only.client_id, only.clock)),
                _ => None,
            };
            let awareness_size = Some(AwarenessSize {
                clients: update.entries.len(),
                largest_state: update
                    .entries
                    .iter()
                    .map(|e| e.state.len())
                    .max()
                    .unwrap_or(0),
            });
            ClientAction::Append {
                message,
                awareness,
                awareness_size,
            }
        }
        Decoded::Auth(_) | Decoded::QueryAwareness => ClientAction::Ignore,
    })
}

/// Number of bytes of the canonical varuint encoding of `v`.
fn var_u64_len(v: u64) -> usize {
    let bits = 64 - v.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

fn encode_message(kind: u64, subtype: Option<u64>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    write_var_u64(&mut out, kind);
    if let Some(subtype) = subtype {
        write_var_u64(&mut out, subtype);
    }
    write_var_bytes(&mut out, payload);
    out
}

/// The bytes of a sync message of `subtype` before its payload of
/// `payload_len` bytes: for writing a large message straight into its frame
/// instead of copying its payload twice.
pub fn sync_message_prefix(subtype: u64, payload_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    write_var_u64(&mut out, MESSAGE_SYNC);
    write_var_u64(&mut out, subtype);
    write_var_u64(&mut out, payload_len as u64);
    out
}

/// Sync step1 carrying a v1 state vector; the server sends it on open so the client
/// answers with what the server misses.
pub fn encode_sync_step1(state_vector_v1: &[u8]) -> Vec<u8> {
    encode_message(MESSAGE_SYNC, Some(SYNC_STEP1), state_vector_v1)
}

/// Sync step2 carrying a v1 update; the server sends the whole document this way on open.
pub fn encode_sync_step2(update_v1: &[u8]) -> Vec<u8> {
    encode_message(MESSAGE_SYNC, Some(SYNC_STEP2), update_v1)
}

/// Sync update carrying a v1 update; the form in which updates are stored and relayed.
pub fn encode_sync_update(update_v1: &[u8]) -> Vec<u8> {
    encode_message(MESSAGE_SYNC, Some(SYNC_UPDATE), update_v1)
}

/// A complete awareness message (`01` + varUint8Array(payload)) for `update`.
pub fn encode_awareness_message(update: &AwarenessUpdate) -> Vec<u8> {
    encode_message(MESSAGE_AWARENESS, None, &update.encode())
}

/// The message announcing that a client left: its state set to `null` with a clock one
/// past `last_clock`, the last clock seen from it, so that it wins over that state.
/// `(10, 4)` gives `01 08 01 0a 05 04 6e 75 6c 6c`.
pub fn encode_awareness_removal(client_id: u64, last_clock: u64) -> Vec<u8> {
    encode_awareness_message(&AwarenessUpdate::removal(client_id, last_clock))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::test_util::{content, doc_from_v1, fixture, unhex, Content};
    use crate::protocol::AwarenessEntry;
    use serde_json::Value;
    use yrs::updates::decoder::Decode;
    use yrs::updates::encoder::Encode;
    use yrs::{Doc, ReadTxn, StateVector, Transact};

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    /// Deterministic pseudo-random numbers (xorshift64*), so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn expected_content(encodes: &Value) -> Content {
        Content {
            text: encodes["doc_text_t"].as_str().unwrap().to_owned(),
            map: encodes["doc_map_m"].clone(),
            array: encodes["doc_array_a"].clone(),
        }
    }

    fn fixture_doc(encodes: &Value) -> Doc {
        let updates: Vec<Vec<u8>> = encodes["updates_client1_v1"]
            .as_array()
            .unwrap()
            .iter()
            .chain(encodes["updates_client2_v1"].as_array().unwrap())
            .map(unhex)
            .collect();
        doc_from_v1(&updates)
    }

    fn sync_payload(frame: &[u8]) -> SyncMessage {
        match decode_message(frame).unwrap() {
            Message::Sync(s) => s,
            other => panic!("not a sync message: {other:?}"),
        }
    }

    #[test]
    fn encodes_empty_doc() {
        let f = fixture("protocol.json");
        let e = &f["encodes"];
        let doc = Doc::new();
        let txn = doc.transact();
        let step1 = encode_sync_step1(&txn.state_vector().encode_v1());
        let step2 = encode_sync_step2(&txn.encode_state_as_update_v1(&StateVector::default()));
        assert_eq!(step1, unhex(&e["syncStep1_emptyDoc"]));
        assert_eq!(step2, unhex(&e["syncStep2_emptyDoc"]));
        assert_eq!(hex::encode(encode_sync_update(&[0, 0])), "0002020000");
    }

    #[test]
    fn encodes_fixture_doc() {
        let f = fixture("protocol.json");
        let e = &f["encodes"];
        let doc = fixture_doc(e);
        let expected = expected_content(e);
        assert_eq!(content(&doc), expected);

        let txn = doc.transact();
        // Step1: same state vector as y-redis sent.
        let step1 = encode_sync_step1(&txn.state_vector().encode_v1());
        let (SyncMessage::Step1(ours), SyncMessage::Step1(theirs)) = (
            sync_payload(&step1),
            sync_payload(&unhex(&e["syncStep1_doc"])),
        ) else {
            panic!("not step1 messages");
        };
        assert_eq!(
            StateVector::decode_v1(&ours).unwrap(),
            StateVector::decode_v1(&theirs).unwrap()
        );

        // Step2: the whole document; decodes back to the same content.
        let step2 = encode_sync_step2(&txn.encode_state_as_update_v1(&StateVector::default()));
        let SyncMessage::Step2(payload) = sync_payload(&step2) else {
            panic!("not a step2 message");
        };
        assert_eq!(content(&doc_from_v1(&[payload])), expected);

        // The fixture's full state and merge hold the same content.
        for key in ["encodeStateAsUpdate_doc", "mergeUpdates_v1_all"] {
            assert_eq!(content(&doc_from_v1(&[unhex(&e[key])])), expected, "{key}");
        }
        let v2 = yrs::Update::decode_v2(&unhex(&e["encodeStateAsUpdateV2_doc"])).unwrap();
        let from_v2 = Doc::new();
        from_v2.transact_mut().apply_update(v2).unwrap();
        assert_eq!(content(&from_v2), expected);
    }

    #[test]
    fn encodes_awareness_removals() {
        let f = fixture("protocol.json");
        let e = &f["encodes"];
        assert_eq!(
            encode_awareness_removal(10, 4),
            unhex(&e["awarenessUserDisconnected_10_4"])
        );
        assert_eq!(
            encode_awareness_removal(300, 128),
            unhex(&e["awarenessUserDisconnected_300_128"])
        );
    }

    #[test]
    fn decodes_each_message_type() {
        assert_eq!(
            decode_message(&h("00000100")).unwrap(),
            Message::Sync(SyncMessage::Step1(vec![0]))
        );
        assert_eq!(
            decode_message(&h("0001020000")).unwrap(),
            Message::Sync(SyncMessage::Step2(vec![0, 0]))
        );
        assert_eq!(
            decode_message(&h("0002020000")).unwrap(),
            Message::Sync(SyncMessage::Update(vec![0, 0]))
        );
        let Message::Awareness(a) =
            decode_message(&h("0110010a010c7b2275736572223a2261227d")).unwrap()
        else {
            panic!("not awareness");
        };
        assert_eq!(
            a.entries,
            vec![AwarenessEntry {
                client_id: 10,
                clock: 1,
                state: r#"{"user":"a"}"#.into()
            }]
        );
        assert_eq!(
            decode_message(&h("0200 0568656c6c6f")).unwrap(),
            Message::Auth(h("000568656c6c6f"))
        );
        assert_eq!(decode_message(&h("03")).unwrap(), Message::QueryAwareness);
    }

    #[test]
    fn rejects_invalid_frames() {
        let cases: &[(&str, &str)] = &[
            ("", "truncated message"),
            ("00", "truncated message"),
            ("0002", "truncated message"),
            ("00020f0101010004", "truncated message"),
            ("0002020000 00", "trailing bytes"),
            ("0110010a010c7b2275736572223a2261227d 00", "trailing bytes"),
            ("03 00", "trailing bytes"),
            ("07", "unknown message type 7"),
            ("070102", "unknown message type 7"),
            ("0003020000", "unknown sync message type 3"),
            ("00010100", "invalid update: "),
            ("00020100", "invalid update: "),
            ("000100", "invalid update: "),
            ("00020401020304", "invalid update: "),
            ("000001ff", "invalid state vector: "),
            ("00000200 00", "invalid state vector: "),
            ("0110010a010c7b227573", "truncated message"),
            ("0106010a0104 7b227573", "invalid awareness update: "),
            ("0106010a01027b7d 00", "trailing bytes"),
            ("0106010a01027b78", "invalid awareness update: "),
            ("0107010a01027b7d 00", "invalid awareness update: "),
            ("02", "truncated message"),
            ("ffffffffffffffffffff7f", "integer out of range"),
            ("deadbeef", "truncated message"),
            ("deadbeef01", "unknown message type"),
        ];
        for (frame, message) in cases {
            let err = decode_message(&h(frame)).unwrap_err();
            assert!(
                err.to_string().starts_with(message),
                "{frame}: got {err:?} ({err}), want {message}"
            );
            let bytes = h(frame);
            if bytes.len() < 4 && bytes.starts_with(&[0, 1]) {
                // A client's short step2 is dropped unread, as y-redis does.
                assert_eq!(client_action(&bytes).unwrap(), ClientAction::Ignore);
            } else {
                assert!(client_action(&bytes).is_err(), "{frame}");
            }
        }
    }

    #[test]
    fn valid_empty_updates() {
        for frame in ["0001020000", "0002020000"] {
            assert!(decode_message(&h(frame)).is_ok(), "{frame}");
        }
    }

    #[test]
    fn never_panics_on_random_or_truncated_input() {
        let f = fixture("protocol.json");
        let mut valid: Vec<Vec<u8>> = Vec::new();
        for case in f["mergeMessages"].as_array().unwrap() {
            for m in case["input"].as_array().unwrap() {
                let m = unhex(m);
                // The merge fixtures include deliberately invalid entries.
                if decode_message(&m).is_ok() {
                    valid.push(m);
                }
            }
        }
        assert_eq!(valid.len(), 30);
        let e = &f["encodes"];
        for u in e["updates_client1_v1"]
            .as_array()
            .unwrap()
            .iter()
            .chain(e["updates_client2_v1"].as_array().unwrap())
            .chain([&e["mergeUpdates_v1_all"], &e["encodeStateAsUpdate_doc"]])
        {
            valid.push(encode_sync_update(&unhex(u)));
        }
        valid.push(unhex(&e["syncStep1_doc"]));

        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut accepted = 0;
        for _ in 0..4000 {
            let len = rng.below(64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Bias towards known message types so deeper paths are reached.
            if let Some(first) = bytes.first_mut() {
                *first %= 4;
            }
            if bytes.len() > 1 && rng.below(2) == 0 {
                bytes[1] %= 3;
            }
            if decode_message(&bytes).is_ok() {
                accepted += 1;
            }
            let _ = client_action(&bytes);
            let _ = crate::protocol::merge_messages(&[bytes.clone(), bytes]);
        }
        for m in &valid {
            assert!(decode_message(m).is_ok(), "{}", hex::encode(m));
            for cut in 0..m.len() {
                // A strict prefix of a valid message never decodes.
                assert!(
                    decode_message(&m[..cut]).is_err(),
                    "{}",
                    hex::encode(&m[..cut])
                );
                let _ = client_action(&m[..cut]);
            }
            // Single-byte corruptions: may or may not decode, must not panic.
            for _ in 0..50 {
                let mut c = m.clone();
                let i = rng.below(c.len() as u64) as usize;
                c[i] = rng.next() as u8;
                let _ = decode_message(&c);
                let _ = crate::protocol::merge_messages(&[m.clone(), c]);
            }
        }
        // Sanity: random input is mostly rejected.
        assert!(accepted < 4000, "{accepted}");
    }

    #[test]
    fn client_actions_of_the_session_fixture() {
        let s = fixture("session.json");
        let log = s["log"].as_array().unwrap();
        // What client A sent, in order (the session's step 2 also sent a step1 first).
        let mut sent: Vec<Vec<u8>> = vec![h("00000100")];
        sent.extend(log[1]["sent"].as_array().unwrap().iter().map(unhex));
        sent.push(unhex(&log[3]["sent"]));
        sent.push(h("0001020000"));
        sent.push(h("00010100"));

        let mut appended: Vec<Vec<u8>> = Vec::new();
        let mut remembered: Option<(u64, u64)> = None;
        for frame in &sent {
            match client_action(frame) {
                Ok(ClientAction::Append {
                    message, awareness, ..
                }) => {
                    appended.push(message.to_vec());
                    if let Some((client, clock)) = awareness {
                        if remembered.is_none_or(|(c, _)| c == client) {
                            remembered = Some((client, clock));
                        }
                    }
                }
                Ok(ClientAction::Ignore) => {}
                Err(e) => {
                    // Only the poison message is refused.
                    assert_eq!(hex::encode(frame), "00010100", "{e}");
                }
            }
        }
        let (client, clock) = remembered.unwrap();
        appended.push(encode_awareness_removal(client, clock));

        let stream = s["redis"]["y:room:fixture%2520room:index"]
            .as_array()
            .unwrap();
        let mut expected: Vec<Vec<u8>> = stream
            .iter()
            .map(|e| {
                assert_eq!(e["fields"][0], "m");
                unhex(&e["fields"][1])
            })
            .collect();
        // y-redis stored the poison message; we refuse it.
        let poison = expected.iter().position(|m| hex::encode(m) == "00020100");
        expected.remove(poison.unwrap());
        assert_eq!(
            appended.iter().map(hex::encode).collect::<Vec<_>>(),
            expected.iter().map(hex::encode).collect::<Vec<_>>()
        );
        assert!(client_action(&h("00010100")).is_err());
        assert_eq!(
            client_action(&h("0001020000")).unwrap(),
            ClientAction::Append {
                message: Bytes::from(h("0002020000")),
                awareness: None,
                awareness_size: None
            }
        );
    }

    #[test]
    fn client_action_kinds() {
        assert_eq!(client_action(&h("00000100")).unwrap(), ClientAction::Ignore);
        assert_eq!(client_action(&h("03")).unwrap(), ClientAction::Ignore);
        assert_eq!(client_action(&h("020000")).unwrap(), ClientAction::Ignore);
        // A step2 shorter than 4 bytes is dropped unread, as y-redis does.
        for short in ["000100", "0001", "000101"] {
            assert_eq!(
                client_action(&h(short)).unwrap(),
                ClientAction::Ignore,
                "{short}"
            );
        }
        // Awareness with two entries: appended as is, nothing remembered.
        let two = h("010b020a01027b7d0b01027b7d");
        assert_eq!(
            client_action(&two).unwrap(),
            ClientAction::Append {
                message: Bytes::from(two.clone()),
                awareness: None,
                awareness_size: Some(AwarenessSize {
                    clients: 2,
                    largest_state: 2
                })
            }
        );
    }

    #[test]
    fn client_action_canonicalises_overlong_framing() {
        // Type 0 written as 80 00, subtype as 82 00: stored in the canonical form.
        assert_eq!(
            client_action(&h("8000 8200 02 0000")).unwrap(),
            ClientAction::Append {
                message: Bytes::from(h("0002020000")),
                awareness: None,
                awareness_size: None
            }
        );
        // Over-long payload length of a step2.
        assert_eq!(
            client_action(&h("00 01 8200 0000")).unwrap(),
            ClientAction::Append {
                message: Bytes::from(h("0002020000")),
                awareness: None,
                awareness_size: None
            }
        );
        assert_eq!(
            client_action(&h("01 8600 01 0a 01 02 7b7d")).unwrap(),
            ClientAction::Append {
                message: Bytes::from(h("0106010a01027b7d")),
                awareness: Some((10, 1)),
                awareness_size: Some(AwarenessSize {
                    clients: 1,
                    largest_state: 2
                })
            }
        );
    }

    #[test]
    fn awareness_message_frames_the_payload() {
        let u = AwarenessUpdate {
            entries: vec![AwarenessEntry {
                client_id: 10,
                clock: 1,
                state: r#"{"user":"a"}"#.to_owned(),
            }],
        };
        let payload = u.encode();
        let msg = encode_awareness_message(&u);
        assert_eq!(msg[0], 1);
        assert_eq!(&msg[2..], &payload[..]);
    }

    #[test]
    fn removal_bytes() {
        assert_eq!(
            hex::encode(encode_awareness_removal(10, 4)),
            "0108010a05046e756c6c"
        );
        assert_eq!(
            hex::encode(encode_awareness_removal(300, 128)),
            "010a01ac028101046e756c6c"
        );
    }
}
