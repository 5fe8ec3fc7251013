//! Group b, merging: random stream reads (updates from several yrs clients,
//! awareness sets, updates and removals, entries no reader can use) merged by
//! `websocket::protocol::merge_messages` and by y-redis 0.1.6's `mergeMessages`
//! (through the sidecar) carry the same document content and the same awareness,
//! once the reference's phantom entry is left out. The one documented deviation:
//! removals (`null`) inside a merged batch are kept by the Rust merge and lost by
//! the reference, and this test asserts exactly that difference.

mod common;

use std::collections::BTreeSet;

use anyhow::{bail, ensure, Context, Result};
use common::op;
use conformance::content;
use conformance::wire::{self, AwarenessEntry, AwarenessTable, Msg};
use conformance::{edit, EditOp, Sidecar};
use proptest::prelude::*;
use serde_json::{json, Value};
use testkit::client::{awareness_message, sync_message};
use yrs::{Doc, ReadTxn, Transact, Update};

/// Client ids of the yrs docs that make updates.
const DOC_CLIENTS: [u64; 3] = [1, 2, 3];
/// Client ids used in awareness entries (one needs a multi-byte varuint).
const AWARENESS_CLIENTS: [u64; 4] = [10, 11, 12, 70_000];

/// A stream entry no reader can use; both merges must skip it.
#[derive(Debug, Clone)]
enum Malformed {
    /// A prefix of an earlier entry (`which`-th, modulo), `cut` bytes long (modulo).
    Truncated { which: usize, cut: usize },
    /// A message type that does not exist.
    UnknownType(u8),
    /// Query-awareness and auth messages: valid, but not for relaying.
    NotRelayed,
    /// Sync step 1 and step 2 entries: only updates are merged.
    NotAnUpdate,
    /// A single-entry awareness message whose state is not JSON.
    BadJson,
    /// `00 02 01 00`, y-redis's poison entry (defect 4): the reference throws on it
    /// when it has another update to merge with.
    Poison,
}

/// One thing that happens before the stream read.
#[derive(Debug, Clone)]
enum Item {
    /// Client `client` edits its doc; its update is appended.
    Edit { client: usize, ops: Vec<EditOp> },
    /// Client `to` receives client `from`'s state (nothing is appended), so later
    /// edits depend on other clients' items.
    Sync { from: usize, to: usize },
    /// An awareness message with these (client, clock, state-or-null) entries.
    Awareness(Vec<(usize, u64, Option<Value>)>),
    /// A malformed entry.
    Malformed(Malformed),
}

/// A generated stream read: items in order, of which the first `skip` entries
/// were read before (their updates are already known to the reader, and the
/// merged updates may build on them).
#[derive(Debug, Clone)]
struct Batch {
    items: Vec<Item>,
    skip: usize,
}

fn state() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        3 => ("[a-z]{1,5}", 0u32..100)
            .prop_map(|(user, n)| Some(json!({ "user": user, "cursor": n }))),
        1 => Just(Some(json!({}))),
        1 => "[a-zé✓]{0,4}".prop_map(|s| Some(json!({ "name": s, "nested": { "list": [1, 2] } }))),
        2 => Just(None),
    ]
}

fn malformed() -> impl Strategy<Value = Malformed> {
    prop_oneof![
        (any::<usize>(), any::<usize>())
            .prop_map(|(which, cut)| Malformed::Truncated { which, cut }),
        (4u8..=127).prop_map(Malformed::UnknownType),
        Just(Malformed::NotRelayed),
        Just(Malformed::NotAnUpdate),
        Just(Malformed::BadJson),
        Just(Malformed::Poison),
    ]
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        5 => (0..DOC_CLIENTS.len(), prop::collection::vec(op(), 1..4))
            .prop_map(|(client, ops)| Item::Edit { client, ops }),
        1 => (0..DOC_CLIENTS.len(), 0..DOC_CLIENTS.len())
            .prop_map(|(from, to)| Item::Sync { from, to }),
        4 => prop::collection::vec((0..AWARENESS_CLIENTS.len(), 0u64..6, state()), 1..4)
            .prop_map(Item::Awareness),
        1 => malformed().prop_map(Item::Malformed),
    ]
}

fn batch() -> impl Strategy<Value = Batch> {
    (
        prop::collection::vec(item(), 1..14),
        prop_oneof![4 => Just(0usize), 1 => 1usize..4],
    )
        .prop_map(|(items, skip)| Batch { items, skip })
}

/// What an entry means for a reader of the stream.
#[derive(Debug, Clone)]
enum Meaning {
    /// A sync update with this v1 payload.
    Update(Vec<u8>),
    /// Awareness entries.
    Awareness(Vec<AwarenessEntry>),
    /// Nothing (skipped by every merge).
    Nothing,
    /// The poison entry.
    Poison,
}

/// Turn the items into stream entries (`m` values), with what each means.
/// Stream entries with what they mean.
type Entries = Vec<(Vec<u8>, Meaning)>;

/// Also returns the updates of the skipped entries, which a reader already has.
fn build(batch: &Batch) -> (Vec<Vec<u8>>, Entries) {
    let docs: Vec<Doc> = DOC_CLIENTS
        .iter()
        .map(|id| Doc::with_client_id(*id))
        .collect();
    let mut entries: Entries = Vec::new();
    for item in &batch.items {
        match item {
            Item::Edit { client, ops } => {
                let doc = &docs[*client];
                let before = doc.transact().state_vector();
                edit::apply_ops(doc, ops);
                let update = doc.transact().encode_state_as_update_v1(&before);
                entries.push((sync_message(2, &update), Meaning::Update(update)));
            }
            Item::Sync { from, to } => {
                let state = content::state_v1(&docs[*from]);
                if let Ok(update) = <Update as yrs::updates::decoder::Decode>::decode_v1(&state) {
                    let _ = docs[*to].transact_mut().apply_update(update);
                }
            }
            Item::Awareness(list) => {
                let texts: Vec<(u64, u64, String)> = list
                    .iter()
                    .map(|(c, clock, s)| {
                        let text = s.as_ref().map_or("null".to_string(), Value::to_string);
                        (AWARENESS_CLIENTS[*c], *clock, text)
                    })
                    .collect();
                let refs: Vec<(u64, u64, &str)> =
                    texts.iter().map(|(c, k, s)| (*c, *k, s.as_str())).collect();
                let parsed = list
                    .iter()
                    .map(|(c, clock, s)| {
                        (
                            AWARENESS_CLIENTS[*c],
                            *clock,
                            s.clone().unwrap_or(Value::Null),
                        )
                    })
                    .collect();
                entries.push((awareness_message(&refs), Meaning::Awareness(parsed)));
            }
            Item::Malformed(kind) => {
                let bytes = match kind {
                    Malformed::Truncated { which, cut } => {
                        let source = match entries.len() {
                            0 => Vec::new(),
                            n => entries[which % n].0.clone(),
                        };
                        let source = if source.is_empty() {
                            awareness_message(&[(10, 1, r#"{"user":"x"}"#)])
                        } else {
                            source
                        };
                        source[..cut % source.len()].to_vec()
                    }
                    Malformed::UnknownType(t) => vec![*t, 1, 2, 3],
                    Malformed::NotRelayed => {
                        if entries.len().is_multiple_of(2) {
                            vec![3]
                        } else {
                            vec![2, 0, 0]
                        }
                    }
                    Malformed::NotAnUpdate => {
                        if entries.len().is_multiple_of(2) {
                            sync_message(0, &[0])
                        } else {
                            let state = content::state_v1(&docs[0]);
                            sync_message(1, &state)
                        }
                    }
                    Malformed::BadJson => awareness_message(&[(11, 9, "{oops")]),
                    Malformed::Poison => vec![0, 2, 1, 0],
                };
                let meaning = if matches!(kind, Malformed::Poison) {
                    Meaning::Poison
                } else {
                    Meaning::Nothing
                };
                entries.push((bytes, meaning));
            }
        }
    }
    let skip = batch.skip.min(entries.len().saturating_sub(1));
    let known = entries
        .drain(..skip)
        .filter_map(|(_, m)| match m {
            Meaning::Update(u) => Some(u),
            _ => None,
        })
        .collect();
    (known, entries)
}

/// What a reader makes of merged output: content (by yrs and by yjs) of the
/// updates it already had (`known`) plus the merged ones, and the awareness
/// table, with the reference's phantom entries counted and taken out.
struct Reading {
    content_yrs: Value,
    content_yjs: Value,
    awareness: AwarenessTable,
    phantoms: usize,
    messages: Vec<Msg>,
}

fn read(
    sidecar: &Sidecar,
    known: &[Vec<u8>],
    frames: &[Vec<u8>],
    input_clients: &BTreeSet<u64>,
) -> Result<Reading> {
    let messages = wire::messages_of(frames);
    let mut updates = known.to_vec();
    let merged: Vec<Vec<u8>> = messages
        .iter()
        .filter_map(|m| match m {
            Msg::Update(u) if content::is_update_v1(u) && is_applicable(u) => Some(u.clone()),
            _ => None,
        })
        .collect();
    updates.extend(merged);
    let mut awareness = AwarenessTable::default();
    let mut phantoms = 0;
    for m in &messages {
        if let Msg::Awareness(entries) = m {
            let kept: Vec<AwarenessEntry> = entries
                .iter()
                .filter(|(client, clock, state)| {
                    let phantom =
                        *clock == 0 && *state == json!({}) && !input_clients.contains(client);
                    phantoms += usize::from(phantom);
                    !phantom
                })
                .cloned()
                .collect();
            awareness.apply(&kept);
        }
    }
    Ok(Reading {
        content_yrs: content::of_updates(&updates)?,
        content_yjs: content::normalize(&sidecar.content(&updates)?),
        awareness,
        phantoms,
        messages,
    })
}

/// Whether yrs can apply the update (the poison payload `00` decodes as nothing
/// useful in some versions and fails in others; readers skip it either way).
fn is_applicable(update: &[u8]) -> bool {
    content::doc_from_updates(&[update.to_vec()]).is_ok()
}

fn check_batch(sidecar: &Sidecar, batch: &Batch) -> Result<()> {
    let (known, entries) = build(batch);
    let messages: Vec<Vec<u8>> = entries.iter().map(|(m, _)| m.clone()).collect();

    // The model: what the valid entries mean, read in order.
    let mut model_updates = known.clone();
    model_updates.extend(entries.iter().filter_map(|(_, m)| match m {
        Meaning::Update(u) => Some(u.clone()),
        _ => None,
    }));
    let mut model = AwarenessTable::default();
    let mut input_clients = BTreeSet::new();
    for (_, meaning) in &entries {
        if let Meaning::Awareness(list) = meaning {
            model.apply(list);
            input_clients.extend(list.iter().map(|(c, _, _)| *c));
        }
    }
    let model_content = content::of_updates(&model_updates)?;

    // The Rust merge: one message per frame, the update first, at most one of each.
    let ours: Vec<Vec<u8>> = websocket::protocol::merge_messages(&messages)
        .into_iter()
        .map(|b| b.to_vec())
        .collect();
    for frame in &ours {
        ensure!(
            wire::split_frame(frame).len() == 1 && wire::split_frame(frame)[0] == *frame,
            "a Rust frame holds more than one message: {}",
            hex::encode(frame)
        );
    }
    let ours_read = read(sidecar, &known, &ours, &input_clients)?;
    let kinds: Vec<bool> = ours_read
        .messages
        .iter()
        .map(|m| matches!(m, Msg::Update(_)))
        .collect();
    ensure!(
        kinds.iter().filter(|u| **u).count() <= 1 && kinds.iter().filter(|u| !**u).count() <= 1,
        "the Rust merge gave more than one update or awareness message"
    );
    ensure!(
        !kinds.ends_with(&[true]) || kinds.len() == 1,
        "the Rust merge put the update after the awareness"
    );
    ensure!(
        ours_read.phantoms == 0,
        "the Rust merge made a phantom entry"
    );

    // The reference merge. It throws when the poison entry has another update to
    // merge with; then it is compared on the batch without the poison.
    let (reference_input, theirs) = match sidecar.merge_messages(&messages) {
        Ok(frames) => (messages.clone(), frames),
        Err(err) => {
            ensure!(
                entries.iter().any(|(_, m)| matches!(m, Meaning::Poison)),
                "the reference failed on a batch without poison: {err:#}"
            );
            let without: Vec<Vec<u8>> = entries
                .iter()
                .filter(|(_, m)| !matches!(m, Meaning::Poison))
                .map(|(b, _)| b.clone())
                .collect();
            let frames = sidecar
                .merge_messages(&without)
                .context("the reference on the batch without poison")?;
            (without, frames)
        }
    };
    let theirs_read = read(sidecar, &known, &theirs, &input_clients)?;
    let merged_by_reference = reference_input.len() >= 2;

    // Document content: the same for both merges and both Yjs implementations.
    ensure!(
        ours_read.content_yrs == model_content,
        "Rust merge content {} != the entries' content {model_content}",
        ours_read.content_yrs
    );
    ensure!(
        theirs_read.content_yrs == model_content,
        "reference merge content {} != the entries' content {model_content}",
        theirs_read.content_yrs
    );
    let model_yjs = content::normalize(&sidecar.content(&model_updates)?);
    ensure!(
        ours_read.content_yjs == model_yjs && theirs_read.content_yjs == model_yjs,
        "yjs reads {} (Rust merge) and {} (reference), and {model_yjs} from the entries",
        ours_read.content_yjs,
        theirs_read.content_yjs
    );
    ensure!(
        model_yjs == model_content,
        "yjs reads {model_yjs}, yrs reads {model_content}"
    );

    // Awareness: the Rust merge carries exactly what the entries say, removals
    // included.
    ensure!(
        ours_read.awareness == model,
        "Rust merge awareness {:?} != the entries' {:?}",
        ours_read.awareness,
        model
    );
    if merged_by_reference {
        ensure!(
            theirs_read.phantoms == 1,
            "the reference merge should carry one phantom entry, found {}",
            theirs_read.phantoms
        );
        // The deviation, exactly: the reference loses every removal; apart from
        // that both hold the same states.
        ensure!(
            theirs_read.awareness.removed().is_empty(),
            "the reference kept a removal: {:?}",
            theirs_read.awareness
        );
        ensure!(
            theirs_read.awareness.live() == ours_read.awareness.live(),
            "live awareness differs: reference {:?}, Rust {:?}",
            theirs_read.awareness,
            ours_read.awareness
        );
    } else {
        ensure!(theirs_read.phantoms == 0, "a phantom without a merge");
        ensure!(
            theirs_read.awareness == ours_read.awareness,
            "single message: reference {:?}, Rust {:?}",
            theirs_read.awareness,
            ours_read.awareness
        );
    }
    if theirs.len() > 1 {
        bail!("the reference returned {} frames", theirs.len());
    }
    Ok(())
}

#[test]
fn rust_merge_matches_the_reference_merge() {
    let sidecar = Sidecar::start().expect("the sidecar starts (node and js-reference installed)");
    common::check("merging", 512, 64, batch(), |batch| {
        check_batch(&sidecar, &batch).map_err(common::fail)
    });
}

/// The documented deviation on its own: a set then a removal of one client,
/// merged. The Rust merge tells readers the client left; the reference says
/// nothing about it (peers drop it only after their 30 s timeout).
#[test]
fn removal_inside_a_merge_is_the_one_difference() {
    let sidecar = Sidecar::start().expect("the sidecar starts");
    let set = awareness_message(&[(10, 1, r#"{"user":"a"}"#)]);
    let left = awareness_message(&[(10, 2, "null")]);
    let other = awareness_message(&[(11, 1, r#"{"user":"b"}"#)]);
    let input = vec![set, left, other];
    let clients = BTreeSet::from([10, 11]);
    let ours: Vec<Vec<u8>> = websocket::protocol::merge_messages(&input)
        .into_iter()
        .map(|b| b.to_vec())
        .collect();
    let theirs = sidecar.merge_messages(&input).unwrap();
    let ours = read(&sidecar, &[], &ours, &clients).unwrap();
    let theirs = read(&sidecar, &[], &theirs, &clients).unwrap();
    assert_eq!(ours.awareness.removed(), [(10, 2)].into_iter().collect());
    assert!(theirs.awareness.removed().is_empty());
    assert_eq!(ours.awareness.live(), theirs.awareness.live());
    assert_eq!(
        ours.awareness.live().keys().copied().collect::<Vec<_>>(),
        [11]
    );
    assert_eq!(theirs.phantoms, 1);
}
