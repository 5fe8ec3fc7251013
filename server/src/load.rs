//! Loading a document the way y-redis does (docs/protocol.md §4): the stored
//! state plus every entry of its stream.

use std::sync::Arc;

use bytes::Bytes;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use crate::protocol::{self, AwarenessStates, Message, SyncMessage};
use crate::socket::RoomFrame;
use crate::storage::{Storage, StorageError};
use crate::streams::{History, StreamError, StreamId};

/// Why a document could not be loaded. Poisoned stream entries are not an error:
/// they are skipped with a log line.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The storage backend failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The streams failed.
    #[error(transparent)]
    Streams(#[from] StreamError),
    /// The document could not be encoded (yrs failed on what it was given).
    #[error("document cannot be encoded: {0}")]
    Encode(String),
}

/// Run a yrs computation that may panic on crafted input, as an error instead.
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, LoadError> {
    protocol::guard_yrs(what, || Ok::<_, std::convert::Infallible>(f())).map_err(LoadError::Encode)
}

/// A document as stored plus its stream, ready to be served or compacted.
pub struct LoadedDoc {
    /// The merged document.
    pub doc: Doc,
    /// Awareness states found in the stream (removals kept as `null`).
    pub awareness: AwarenessStates,
    /// Id of the last stream entry read, [`StreamId::ZERO`] for an empty stream.
    pub last_id: StreamId,
    /// References of the stored items the document was built from.
    pub references: Vec<String>,
    /// Whether the stream held changes the stored state did not have.
    pub changed: bool,
    /// When several items are stored: the reference of one that alone holds the
    /// whole stored document, which makes the others redundant (left behind by a
    /// compaction that could not delete what it replaced). `None` otherwise.
    pub covering: Option<String>,
}

impl LoadedDoc {
    /// The messages a client receives when it opens the room (docs/protocol.md §2.3):
    /// sync step 1, sync step 2, then awareness if any state is known. A
    /// document larger than `chunk_size` bytes goes as several sync update
    /// messages each under it (at struct boundaries; a single larger struct
    /// alone in its message), the last part as sync step 2.
    ///
    /// Takes the document: it is dropped as soon as it is encoded, so that a
    /// large one is not held next to its parts.
    pub fn initial_messages(self, chunk_size: usize) -> Result<InitialSync, LoadError> {
        let (state_vector, update) = guarded("encoding the initial sync", || {
            let txn = self.doc.transact();
            (
                txn.state_vector().encode_v1(),
                txn.encode_state_as_update_v1(&StateVector::default()),
            )
        })?;
        drop(self.doc);
        let states = self.awareness.to_update(false);
        let sync = |subtype, payload: &[u8]| {
            let prefix = protocol::sync_message_prefix(subtype, payload.len());
            RoomFrame::of_pieces(&[&prefix, payload])
        };
        let mut frames = vec![sync(protocol::SYNC_STEP1, &state_vector)];
        if update.len() > chunk_size {
            let parts =
                protocol::split_update_v1(&update, chunk_size).map_err(LoadError::Encode)?;
            drop(update);
            let count = parts.len();
            for (i, part) in parts.into_iter().enumerate() {
                let subtype = if i + 1 == count {
                    protocol::SYNC_STEP2
                } else {
                    protocol::SYNC_UPDATE
                };
                frames.push(sync(subtype, &part));
            }
        } else {
            frames.push(sync(protocol::SYNC_STEP2, &update));
        }
        if !states.entries.is_empty() {
            frames.push(RoomFrame::new(Bytes::from(
                protocol::encode_awareness_message(&states),
            )));
        }
        Ok(InitialSync {
            frames,
            last_id: self.last_id,
        })
    }

    /// The whole document as a v2 update and its v1 state vector, as stored.
    ///
    /// A document that misses updates of a client (a gap in its clock: updates
    /// that followed ones missing from the stream, say after Redis lost its
    /// data under an open connection) is encoded as v1 and converted to v2:
    /// yrs 0.28's v2 encoder writes such a document as bytes its own decoder
    /// refuses. Stored like that, the item is unreadable, and the document is
    /// lost once the stream is trimmed. The v1 encoding of the same document
    /// decodes, and what follows the gap is integrated once the missing
    /// updates arrive. A document without a gap (nearly all) is encoded as v2
    /// directly: the conversion decodes the whole document once more, which
    /// for a large one costs several times its size in memory.
    pub fn stored_state(&self) -> Result<(Vec<u8>, Vec<u8>), LoadError> {
        let (update, state_vector) = guarded("encoding the document", || {
            let txn = self.doc.transact();
            let v1 = txn.encode_state_as_update_v1(&StateVector::default());
            let update = match protocol::has_gap_v1(&v1) {
                Ok(false) => {
                    drop(v1);
                    Ok(txn.encode_state_as_update_v2(&StateVector::default()))
                }
                _ => Update::decode_v1(&v1)
                    .map(|update| update.encode_v2())
                    .map_err(|err| err.to_string()),
            };
            (update, txn.state_vector().encode_v1())
        })?;
        Ok((update.map_err(LoadError::Encode)?, state_vector))
    }
}

/// What a new connection is sent before live messages, and the stream position
/// it reflects. Cheap to clone and share between connections opening
/// together: every joiner's outbox holds the same frames, made (and
/// compressed) once.
#[derive(Debug, Clone)]
pub struct InitialSync {
    /// Sync step 1 (the document's state vector), sync step 2 (the whole
    /// document as a v1 update), then the awareness of every known client,
    /// when there is one.
    pub frames: Vec<Arc<RoomFrame>>,
    /// The last stream id the document includes.
    pub last_id: StreamId,
}

/// Apply a v2 (stored) or v1 (stream) update, never panicking on bad bytes.
fn apply(doc: &Doc, bytes: &[u8], v2: bool) -> Result<(), String> {
    protocol::guard_yrs("decoder", || {
        let update = if v2 {
            Update::decode_v2(bytes)
        } else {
            Update::decode_v1(bytes)
        }
        .map_err(|err| err.to_string())?;
        doc.transact_mut()
            .apply_update(update)
            .map_err(|err| err.to_string())
    })
}

/// Stream entries read at once: a long stream is read and applied page by
/// page, so loading it needs memory for the document and one page, not for
/// the whole stream.
pub const PAGE_SIZE: usize = 1000;

/// How many times a load starts again because the stream was trimmed past the
/// page being read (a compaction elsewhere stored and trimmed meanwhile).
const LOAD_ATTEMPTS: usize = 5;

/// Load (room, docid) from its stream and from storage.
///
/// The stream's first page is read before storage: whatever a worker trims
/// after that read was stored before the trim, so the storage read that
/// follows still has it. Each later page is checked to have been read before
/// any trim reached it (the stream's first id is still at or before the
/// previous page's end); otherwise the load starts again.
pub async fn load_doc<H: History + ?Sized>(
    streams: &H,
    storage: &dyn Storage,
    stream_key: &str,
    room: &str,
    docid: &str,
) -> Result<LoadedDoc, LoadError> {
    for _ in 0..LOAD_ATTEMPTS {
        if let Some(loaded) = load_once(streams, storage, stream_key, room, docid).await? {
            return Ok(loaded);
        }
        tracing::debug!(
            stream = %crate::log_text::bounded(stream_key),
            "stream trimmed while being read, loading again"
        );
    }
    Err(LoadError::Streams(StreamError::Reply(
        "the stream kept being trimmed while it was read".to_string(),
    )))
}

/// One load; `None` when the stream was trimmed past what had been read.
async fn load_once<H: History + ?Sized>(
    streams: &H,
    storage: &dyn Storage,
    stream_key: &str,
    room: &str,
    docid: &str,
) -> Result<Option<LoadedDoc>, LoadError> {
    let mut page = streams
        .read_page(stream_key, StreamId::ZERO, PAGE_SIZE)
        .await?;
    let items = storage.load(room, docid).await?;

    let doc = Doc::new();
    let mut usable = Vec::with_capacity(items.len());
    for item in items {
        match apply(&doc, &item.update, true) {
            Ok(()) => usable.push(item),
            // Kept out of the references, so compaction never deletes it: it
            // stays for an operator to look at, and the rest of the document
            // is served and compacted as usual.
            Err(err) => tracing::error!(
                room = %crate::log_text::bounded(room), reference = %item.reference, %err,
                "stored item does not decode, skipped"
            ),
        }
    }
    let items = usable;

    let before = doc.transact().snapshot();
    let covering = if items.len() > 1 {
        // Same state vector and delete set as all items merged: this item alone
        // holds everything stored.
        items
            .iter()
            .find(|item| {
                let alone = Doc::new();
                apply(&alone, &item.update, true).is_ok() && alone.transact().snapshot() == before
            })
            .map(|item| item.reference.clone())
    } else {
        None
    };
    let references: Vec<String> = items.into_iter().map(|item| item.reference).collect();
    let mut awareness = AwarenessStates::default();
    let mut last_id = StreamId::ZERO;
    loop {
        for entry in &page.entries {
            last_id = entry.id;
            apply_entry(&doc, &mut awareness, stream_key, entry);
        }
        let Some(end) = page.last else { break };
        last_id = last_id.max(end);
        page = streams.read_page(stream_key, end.next(), PAGE_SIZE).await?;
        if page.last.is_some() {
            match streams.first_id(stream_key).await? {
                Some(first) if first <= end => {}
                _ => return Ok(None),
            }
        }
    }
    let changed = doc.transact().snapshot() != before;
    Ok(Some(LoadedDoc {
        doc,
        awareness,
        last_id,
        references,
        changed,
        covering,
    }))
}

/// Apply one stream entry: an update to the document, awareness to the
/// states; anything else is skipped with a log line.
fn apply_entry(
    doc: &Doc,
    awareness: &mut AwarenessStates,
    stream_key: &str,
    entry: &crate::streams::StreamEntry,
) {
    match protocol::decode_stream_entry(&entry.message) {
        Ok(Message::Sync(SyncMessage::Update(update))) => {
            if let Err(err) = apply(doc, &update, false) {
                tracing::warn!(stream = %crate::log_text::bounded(stream_key), entry = %entry.id, %err, "stream update could not be applied, skipped");
            }
        }
        Ok(Message::Awareness(update)) => awareness.apply(&update),
        Ok(_) => {
            tracing::debug!(stream = %crate::log_text::bounded(stream_key), entry = %entry.id, "stream entry is neither an update nor awareness, skipped");
        }
        Err(err) => {
            tracing::warn!(stream = %crate::log_text::bounded(stream_key), entry = %entry.id, %err, "malformed stream entry skipped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;
    use crate::streams::{Append, MemoryStreams};
    use yrs::types::ToJson;
    use yrs::{GetString, Map, Text};

    #[tokio::test]
    async fn a_stream_longer_than_a_page_is_read_whole() {
        let streams = MemoryStreams::new("y");
        let storage = MemoryStorage::new();
        let key = "y:room:paged:index";
        let author = Doc::with_client_id(1);
        let text = author.get_or_insert_text("t");
        let entries = 2 * PAGE_SIZE + 7;
        for i in 0..entries {
            let before = author.transact().state_vector();
            text.push(&mut author.transact_mut(), &(i % 10).to_string());
            let update = author.transact().encode_state_as_update_v1(&before);
            streams
                .append(key, &protocol::encode_sync_update(&update))
                .await
                .unwrap();
        }
        let loaded = load_doc(&streams, &storage, key, "paged", "index")
            .await
            .unwrap();
        let got = loaded
            .doc
            .get_or_insert_text("t")
            .get_string(&loaded.doc.transact());
        assert_eq!(got, text.get_string(&author.transact()));
        assert_eq!(got.len(), entries);
        let last = streams
            .read_page(key, StreamId::ZERO, usize::MAX)
            .await
            .unwrap()
            .last;
        assert_eq!(Some(loaded.last_id), last);
        assert!(loaded.changed);
    }

    #[tokio::test]
    async fn a_document_waiting_for_missing_updates_is_stored_readable_and_whole() {
        let streams = MemoryStreams::new("y");
        let storage = MemoryStorage::new();
        let key = "y:room:gap:index";
        let author = Doc::with_client_id(1);
        let map = author.get_or_insert_map("m");
        let mut updates = Vec::new();
        for i in 0..20 {
            let before = author.transact().state_vector();
            map.insert(&mut author.transact_mut(), i.to_string(), i);
            updates.push(author.transact().encode_state_as_update_v1(&before));
        }
        // The stream lost one update in the middle: what follows it is pending.
        for (i, update) in updates.iter().enumerate() {
            if i != 10 {
                streams
                    .append(key, &protocol::encode_sync_update(update))
                    .await
                    .unwrap();
            }
        }
        let loaded = load_doc(&streams, &storage, key, "gap", "index")
            .await
            .unwrap();
        let v1 = loaded
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        assert_eq!(protocol::has_gap_v1(&v1), Ok(true), "the gap is seen");
        let (stored, _) = loaded.stored_state().unwrap();

        let reader = Doc::new();
        let decoded = Update::decode_v2(&stored).expect("the stored item decodes");
        reader.transact_mut().apply_update(decoded).unwrap();
        let update = Update::decode_v1(&updates[10]).unwrap();
        reader.transact_mut().apply_update(update).unwrap();
        let got = reader.get_or_insert_map("m").to_json(&reader.transact());
        assert_eq!(got, map.to_json(&author.transact()));
    }
}
