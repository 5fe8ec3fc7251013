//! Reading what servers send the way a client would, independently of the
//! server's own protocol code: frames split into messages, messages classified,
//! and awareness applied with y-protocols' acceptance rule.

use std::collections::BTreeMap;

use serde_json::Value;
use testkit::client::Reader;

/// One awareness entry: client id, clock, parsed state (`Null` = the client left).
pub type AwarenessEntry = (u64, u64, Value);

/// A message, as far as a client cares.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    /// A sync step 2 or update: the v1 update payload.
    Update(Vec<u8>),
    /// Sync step 1 (a state vector).
    Step1(Vec<u8>),
    /// Awareness entries in wire order.
    Awareness(Vec<AwarenessEntry>),
}

/// One whole message (sync, awareness, auth, query-awareness) at the reader's
/// position in `bytes`; `None` if the bytes there do not hold one.
fn message<'a>(r: &mut Reader<'a>, bytes: &'a [u8]) -> Option<&'a [u8]> {
    let start = r.position();
    match r.var().ok()? {
        0 | 2 => {
            r.var().ok()?;
            r.bytes().ok()?;
        }
        1 => {
            r.bytes().ok()?;
        }
        3 => {}
        _ => return None,
    }
    bytes.get(start..r.position())
}

/// Split a frame into its messages, stopping at the first bytes that do not form
/// a whole message: y-redis 0.1.6 concatenates merged messages into one frame.
pub fn split_frame(frame: &[u8]) -> Vec<Vec<u8>> {
    let mut reader = Reader::new(frame);
    let mut out = Vec::new();
    while !reader.done() {
        match message(&mut reader, frame) {
            Some(message) => out.push(message.to_vec()),
            None => break,
        }
    }
    out
}

/// What a message is; `None` when it does not decode (a client would throw and
/// drop it) or is of no interest (auth, query-awareness).
pub fn classify(message: &[u8]) -> Option<Msg> {
    let mut r = Reader::new(message);
    match r.var().ok()? {
        0 => {
            let sub = r.var().ok()?;
            let payload = r.bytes().ok()?.to_vec();
            match sub {
                0 => Some(Msg::Step1(payload)),
                1 | 2 => Some(Msg::Update(payload)),
                _ => None,
            }
        }
        1 => {
            let payload = r.bytes().ok()?;
            let mut p = Reader::new(payload);
            let count = p.var().ok()?;
            let mut entries = Vec::new();
            for _ in 0..count {
                let client = p.var().ok()?;
                let clock = p.var().ok()?;
                let json = std::str::from_utf8(p.bytes().ok()?).ok()?;
                entries.push((client, clock, serde_json::from_str::<Value>(json).ok()?));
            }
            Some(Msg::Awareness(entries))
        }
        _ => None,
    }
}

/// Every message of every frame, classified (undecodable ones left out).
pub fn messages_of(frames: &[Vec<u8>]) -> Vec<Msg> {
    frames
        .iter()
        .flat_map(|f| split_frame(f))
        .filter_map(|m| classify(&m))
        .collect()
}

/// Awareness as a client ends up knowing it: per client the accepted clock and
/// state (`Null` once removed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AwarenessTable(pub BTreeMap<u64, (u64, Value)>);

impl AwarenessTable {
    /// Apply entries in order with y-protocols' rule: accept a newer clock (an
    /// unknown client counts as clock 0), or the same clock carrying `null` while
    /// the client still has a state.
    pub fn apply(&mut self, entries: &[AwarenessEntry]) {
        for (client, clock, state) in entries {
            let accept = match self.0.get(client) {
                None => *clock > 0,
                Some((known, known_state)) => {
                    known < clock || (known == clock && state.is_null() && !known_state.is_null())
                }
            };
            if accept {
                self.0.insert(*client, (*clock, state.clone()));
            }
        }
    }

    /// Clients with a state.
    pub fn live(&self) -> BTreeMap<u64, (u64, Value)> {
        self.0
            .iter()
            .filter(|(_, (_, s))| !s.is_null())
            .map(|(c, v)| (*c, v.clone()))
            .collect()
    }

    /// Clients known to have left.
    pub fn removed(&self) -> BTreeMap<u64, u64> {
        self.0
            .iter()
            .filter(|(_, (_, s))| s.is_null())
            .map(|(c, (clock, _))| (*c, *clock))
            .collect()
    }
}
