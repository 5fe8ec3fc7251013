//! Awareness (presence) updates as y-protocols encodes them, and a state table that
//! applies them with y-protocols' rules.

use std::collections::HashMap;

use super::codec::{write_var_bytes, write_var_u64, Reader};
use super::error::ProtocolError;

/// The JSON text y-protocols uses for a client that left.
const NULL_STATE: &str = "null";

/// One client's presence: who, how recent, and its state as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwarenessEntry {
    /// The client's Yjs client id.
    pub client_id: u64,
    /// Incremented by the client on every change; newer wins.
    pub clock: u64,
    /// The state as JSON text, kept as received; `null` means the client left.
    pub state: String,
}

impl AwarenessEntry {
    /// Whether this entry announces that the client left (state `null`).
    pub fn is_removal(&self) -> bool {
        is_null_json(&self.state)
    }
}

/// The payload of an awareness message: a list of client states.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AwarenessUpdate {
    /// The entries in wire order.
    pub entries: Vec<AwarenessEntry>,
}

impl AwarenessUpdate {
    /// The update saying that a client left: its state `null` with a clock one past
    /// `last_clock`, the last clock seen from it, so that it wins over that state.
    pub fn removal(client_id: u64, last_clock: u64) -> Self {
        Self {
            entries: vec![AwarenessEntry {
                client_id,
                clock: last_clock.saturating_add(1),
                state: NULL_STATE.to_owned(),
            }],
        }
    }

    /// Decode an awareness payload (the bytes inside the message's varUint8Array):
    /// `varuint count`, then per entry `varuint client`, `varuint clock`, `varString json`.
    /// Every state must be valid JSON and the payload must be consumed exactly.
    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        let invalid = |e: super::codec::ReadError| ProtocolError::InvalidAwareness(e.to_string());
        let mut r = Reader::new(payload);
        let count = r.read_var_u64().map_err(invalid)?;
        let mut entries = Vec::new();
        for _ in 0..count {
            let client_id = r.read_var_u64().map_err(invalid)?;
            let clock = r.read_var_u64().map_err(invalid)?;
            let state = r.read_var_str().map_err(invalid)?;
            if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(state) {
                return Err(ProtocolError::InvalidAwareness(format!(
                    "state of client {client_id} is not JSON: {e}"
                )));
            }
            entries.push(AwarenessEntry {
                client_id,
                clock,
                state: state.to_owned(),
            });
        }
        if !r.is_empty() {
            return Err(ProtocolError::InvalidAwareness("trailing bytes".into()));
        }
        Ok(AwarenessUpdate { entries })
    }

    /// Decode as y-protocols applies an update it received: entry by entry,
    /// stopping at the first that cannot be read (truncated, or a state that is
    /// not JSON); the entries before it count, bytes after are ignored. For
    /// stream entries, which JavaScript servers store unchecked.
    pub fn decode_prefix(payload: &[u8]) -> Self {
        let mut r = Reader::new(payload);
        let mut entries = Vec::new();
        let Ok(count) = r.read_var_u64() else {
            return AwarenessUpdate { entries };
        };
        for _ in 0..count {
            let (Ok(client_id), Ok(clock), Ok(state)) =
                (r.read_var_u64(), r.read_var_u64(), r.read_var_str())
            else {
                break;
            };
            if serde_json::from_str::<serde::de::IgnoredAny>(state).is_err() {
                break;
            }
            entries.push(AwarenessEntry {
                client_id,
                clock,
                state: state.to_owned(),
            });
        }
        AwarenessUpdate { entries }
    }

    /// Encode the payload only (what goes inside an awareness message).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        write_var_u64(&mut out, self.entries.len() as u64);
        for e in &self.entries {
            write_var_u64(&mut out, e.client_id);
            write_var_u64(&mut out, e.clock);
            write_var_bytes(&mut out, e.state.as_bytes());
        }
        out
    }
}

/// JSON `null`, allowing the whitespace JSON allows around it.
fn is_null_json(text: &str) -> bool {
    text.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r')) == NULL_STATE
}

/// Known awareness states of a room, updated like y-protocols' `applyAwarenessUpdate`.
/// Used to merge awareness messages and to hold the states found in a room's stream.
/// Clients keep the position at which they were first seen; clients that left stay
/// known (with their clock and no state) so that older states of theirs stay refused.
#[derive(Debug, Clone, Default)]
pub struct AwarenessStates {
    /// `(client id, clock, state)` in first-seen order; `None` = the client left.
    clients: Vec<(u64, u64, Option<String>)>,
    index: HashMap<u64, usize>,
}

impl AwarenessStates {
    /// Apply every entry of `u` in order. An entry is accepted when its clock is newer
    /// than the known one (an unknown client counts as clock 0, as in y-protocols, so a
    /// first sight at clock 0 is refused), or equal to it with state `null` while the
    /// client still has a state.
    pub fn apply(&mut self, u: &AwarenessUpdate) {
        for e in &u.entries {
            let state = if e.is_removal() {
                None
            } else {
                Some(e.state.clone())
            };
            match self.index.get(&e.client_id) {
                Some(&i) => {
                    let (_, clock, known) = &mut self.clients[i];
                    if *clock < e.clock || (*clock == e.clock && state.is_none() && known.is_some())
                    {
                        *clock = e.clock;
                        *known = state;
                    }
                }
                None => {
                    if e.clock > 0 {
                        self.index.insert(e.client_id, self.clients.len());
                        self.clients.push((e.client_id, e.clock, state));
                    }
                }
            }
        }
    }

    /// Whether no client currently has a state (clients that left do not count).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of clients that currently have a state (clients that left do not count).
    pub fn len(&self) -> usize {
        self.clients.iter().filter(|(_, _, s)| s.is_some()).count()
    }

    /// The known states as one update, in first-seen order; with `include_removed`,
    /// clients that left are included with state `null` so receivers forget them too.
    pub fn to_update(&self, include_removed: bool) -> AwarenessUpdate {
        let entries = self
            .clients
            .iter()
            .filter_map(|(client_id, clock, state)| match state {
                Some(s) => Some(AwarenessEntry {
                    client_id: *client_id,
                    clock: *clock,
                    state: s.clone(),
                }),
                None if include_removed => Some(AwarenessEntry {
                    client_id: *client_id,
                    clock: *clock,
                    state: NULL_STATE.to_owned(),
                }),
                None => None,
            })
            .collect();
        AwarenessUpdate { entries }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(client_id: u64, clock: u64, state: &str) -> AwarenessEntry {
        AwarenessEntry {
            client_id,
            clock,
            state: state.to_owned(),
        }
    }

    fn update(entries: &[(u64, u64, &str)]) -> AwarenessUpdate {
        AwarenessUpdate {
            entries: entries.iter().map(|&(c, k, s)| entry(c, k, s)).collect(),
        }
    }

    #[test]
    fn round_trip() {
        let u = update(&[(10, 1, r#"{"user":"a"}"#), (300, 129, "null")]);
        let payload = u.encode();
        assert_eq!(AwarenessUpdate::decode(&payload), Ok(u.clone()));
    }

    #[test]
    fn decode_rejects_bad_payloads() {
        // Truncated JSON text: length says 12, 5 bytes follow.
        let bad = hex::decode("01 0a 01 0c 7b 22 75 73 65".replace(' ', "")).unwrap();
        assert!(matches!(
            AwarenessUpdate::decode(&bad),
            Err(ProtocolError::InvalidAwareness(_))
        ));
        // Complete but not JSON.
        let mut bad = vec![1, 10, 1, 3];
        bad.extend_from_slice(b"{x}");
        assert!(AwarenessUpdate::decode(&bad).is_err());
        // Not UTF-8.
        assert!(AwarenessUpdate::decode(&[1, 10, 1, 1, 0xff]).is_err());
        // Trailing bytes.
        let mut bad = update(&[(1, 1, "{}")]).encode();
        bad.push(0);
        assert!(AwarenessUpdate::decode(&bad).is_err());
        // Count larger than the content.
        assert!(AwarenessUpdate::decode(&[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        assert!(AwarenessUpdate::decode(&[]).is_err());
        // Zero entries is a valid (if useless) update.
        assert_eq!(
            AwarenessUpdate::decode(&[0]),
            Ok(AwarenessUpdate::default())
        );
    }

    #[test]
    fn deeply_nested_json_does_not_overflow() {
        for depth in [10usize, 200_000] {
            let state = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let payload = update(&[(1, 1, &state)]).encode();
            // Deep nesting may be refused; returning a verdict is what matters.
            let verdict = AwarenessUpdate::decode(&payload);
            if depth == 10 {
                assert!(verdict.is_ok());
            }
        }
    }

    #[test]
    fn apply_follows_y_protocols() {
        let mut s = AwarenessStates::default();
        assert!(s.is_empty());
        s.apply(&update(&[(10, 1, r#"{"a":1}"#), (11, 5, r#"{"b":1}"#)]));
        assert_eq!(s.len(), 2);
        // Older or equal clock with a state: refused.
        s.apply(&update(&[
            (10, 0, r#"{"old":1}"#),
            (11, 5, r#"{"same":1}"#),
        ]));
        assert_eq!(
            s.to_update(false),
            update(&[(10, 1, r#"{"a":1}"#), (11, 5, r#"{"b":1}"#)])
        );
        // Equal clock with null while a state is known: accepted.
        s.apply(&update(&[(11, 5, "null")]));
        assert_eq!(s.len(), 1);
        assert_eq!(s.to_update(false), update(&[(10, 1, r#"{"a":1}"#)]));
        assert_eq!(
            s.to_update(true),
            update(&[(10, 1, r#"{"a":1}"#), (11, 5, "null")])
        );
        // The removed client is still known: an older state stays refused, a newer one
        // comes back at its first-seen position.
        s.apply(&update(&[(11, 4, r#"{"b":0}"#)]));
        assert_eq!(s.len(), 1);
        s.apply(&update(&[(11, 6, r#"{"b":2}"#)]));
        assert_eq!(
            s.to_update(true),
            update(&[(10, 1, r#"{"a":1}"#), (11, 6, r#"{"b":2}"#)])
        );
        // Unknown client at clock 0: refused, as y-protocols does.
        s.apply(&update(&[(12, 0, "{}")]));
        assert_eq!(s.to_update(true).entries.len(), 2);
        // A newer clock with null on a known client removes it.
        s.apply(&update(&[(10, 2, " null ")]));
        assert_eq!(s.len(), 1);
        assert!(!s.is_empty());
        s.apply(&update(&[(11, 7, "null")]));
        assert!(s.is_empty());
        assert_eq!(
            s.to_update(true),
            update(&[(10, 2, "null"), (11, 7, "null")])
        );
    }
}
