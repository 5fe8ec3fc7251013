//! The rooms this instance serves: which connections follow which stream, from
//! which position, and the loads in flight.
//!
//! No document is kept per room after the initial sync (as in y-redis): a room is
//! its members' outbound queues and a stream position, so memory stays flat with
//! the number of rooms.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{mpsc, OnceCell};

use crate::doc::InitialSync;
use crate::protocol::StreamId;

/// A load shared by every connection that opens the room while it runs.
type SharedLoad = Arc<OnceCell<Result<InitialSync, String>>>;

/// Registry of rooms, shared by connections and the subscriber.
pub struct Rooms {
    rooms: Mutex<HashMap<String, Room>>,
    next_member: AtomicU64,
    buffer_capacity: usize,
}

struct Room {
    /// Where the subscriber reads from; `None` until the first load tells.
    position: Option<StreamId>,
    /// Bumped whenever `position` is set from outside the subscriber, so that a
    /// read already in flight does not overwrite a rewind.
    generation: u64,
    members: HashMap<u64, mpsc::Sender<Bytes>>,
    load: Option<SharedLoad>,
}

/// One stream the subscriber follows, as seen when its read starts.
#[derive(Debug, Clone)]
pub struct Follow {
    /// The doc stream key.
    pub stream: String,
    /// Read entries after this id.
    pub after: StreamId,
    /// Generation of the position, handed back to [`Rooms::deliver`].
    pub generation: u64,
}

/// A connection's place in a room. Leaving the room happens when it is dropped.
pub struct Membership {
    rooms: Arc<Rooms>,
    stream: String,
    id: u64,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.rooms.leave(&self.stream, self.id);
    }
}

impl Rooms {
    /// An empty registry; every member gets a queue of `buffer_capacity` messages.
    pub fn new(buffer_capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            rooms: Mutex::new(HashMap::new()),
            next_member: AtomicU64::new(1),
            buffer_capacity: buffer_capacity.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Room>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Join the room of `stream`, creating it if needed. The receiver yields the
    /// messages for this connection; it closes when the connection fell too far
    /// behind and was dropped from the room.
    pub fn join(self: &Arc<Self>, stream: &str) -> (Membership, mpsc::Receiver<Bytes>) {
        let id = self.next_member.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = mpsc::channel(self.buffer_capacity);
        self.lock()
            .entry(stream.to_string())
            .or_insert_with(|| Room {
                position: None,
                generation: 0,
                members: HashMap::new(),
                load: None,
            })
            .members
            .insert(id, sender);
        let membership = Membership {
            rooms: Arc::clone(self),
            stream: stream.to_string(),
            id,
        };
        (membership, receiver)
    }

    fn leave(&self, stream: &str, id: u64) {
        let mut rooms = self.lock();
        if let Some(room) = rooms.get_mut(stream) {
            room.members.remove(&id);
            if room.members.is_empty() {
                rooms.remove(stream);
            }
        }
    }

    /// The initial sync of `stream`: joins a load already running for the room,
    /// or runs `load` and shares its result with whoever opens meanwhile. Then
    /// makes sure the room's stream is read from the loaded position on. The flag
    /// tells whether the room's position was set or moved (the reader should
    /// then be woken to follow it at once).
    pub async fn initial_sync<F, Fut>(
        &self,
        stream: &str,
        load: F,
    ) -> Result<(InitialSync, bool), String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<InitialSync, String>>,
    {
        let cell = {
            let mut rooms = self.lock();
            let Some(room) = rooms.get_mut(stream) else {
                return Err("room closed while opening".to_string());
            };
            Arc::clone(room.load.get_or_insert_with(|| Arc::new(OnceCell::new())))
        };
        let result = cell.get_or_init(load).await.clone();
        let mut moved = false;
        let mut rooms = self.lock();
        if let Some(room) = rooms.get_mut(stream) {
            if room.load.as_ref().is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                room.load = None;
            }
            if let Ok(sync) = &result {
                // Follow the stream from what the document includes; rewind a
                // position that went past it (compat notes 2.4) so that nothing
                // between the load and the live read is missed.
                if room.position.is_none_or(|position| sync.last_id < position) {
                    room.position = Some(sync.last_id);
                    room.generation += 1;
                    moved = true;
                }
            }
        }
        result.map(|sync| (sync, moved))
    }

    /// The streams to read and from where.
    pub fn follows(&self) -> Vec<Follow> {
        self.lock()
            .iter()
            .filter_map(|(stream, room)| {
                room.position.map(|after| Follow {
                    stream: stream.clone(),
                    after,
                    generation: room.generation,
                })
            })
            .collect()
    }

    /// Number of rooms with at least one member.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no room is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hand `messages` (read up to `last_id`) to every member of the room. A
    /// member whose queue is full is dropped from the room: its connection
    /// closes, its client reconnects and resyncs, and the room never waits.
    pub fn deliver(&self, follow: &Follow, last_id: StreamId, messages: &[Bytes]) {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(&follow.stream) else {
            return;
        };
        if room.generation == follow.generation {
            room.position = Some(last_id);
        }
        room.members.retain(|id, sender| {
            for message in messages {
                if let Err(err) = sender.try_send(message.clone()) {
                    if matches!(err, mpsc::error::TrySendError::Full(_)) {
                        tracing::info!(stream = %follow.stream, member = id, "connection fell behind, closing it");
                    }
                    return false;
                }
            }
            true
        });
    }
}
