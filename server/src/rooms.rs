//! The rooms this instance serves: which connections follow which stream, from
//! which position, and the loads in flight.
//!
//! No document is kept per room after the initial sync (as in y-redis): a room is
//! its members' outbound queues and a stream position, so memory stays flat with
//! the number of rooms.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::load::InitialSync;
use crate::socket::{Outbox, RoomFrame};
use crate::streams::{CloseOrder, StreamId};

/// A load shared by every connection that opens the room while it runs.
type SharedLoad = Arc<OnceCell<Result<InitialSync, String>>>;

/// The members of a room, replaced as a whole when one joins or leaves, so the
/// fan-out takes them with one reference count and writes outside the lock.
type Members = Arc<Vec<Member>>;

/// One connection in a room: where its frames go, who it is, and how it is
/// told to close.
#[derive(Clone)]
struct Member {
    outbox: Arc<Outbox>,
    /// The token's user id, with auth.
    user: Option<Arc<str>>,
    close: Arc<CloseSignal>,
}

/// An order to close one connection, with the code and reason of its close
/// frame: set once, and the connection woken.
#[derive(Default)]
pub struct CloseSignal {
    order: OnceLock<(u16, String)>,
    ordered: CancellationToken,
}

impl CloseSignal {
    /// Order the close; `false` when one was ordered already.
    pub fn order(&self, code: u16, reason: &str) -> bool {
        let first = self.order.set((code, reason.to_string())).is_ok();
        self.ordered.cancel();
        first
    }

    /// Wait until a close is ordered; its code and reason.
    pub async fn ordered(&self) -> (u16, String) {
        self.ordered.cancelled().await;
        self.order.get().cloned().unwrap_or_default()
    }
}

/// Registry of rooms, shared by connections and the subscriber.
pub struct Rooms {
    /// Keyed by the stream key, allocated once per room and shared (by
    /// reference count) with its memberships and every read's follows.
    rooms: Mutex<HashMap<Arc<str>, Room>>,
}

struct Room {
    /// Where the subscriber reads from; `None` until the first load tells.
    position: Option<StreamId>,
    /// Bumped whenever `position` is set from outside the subscriber, so that a
    /// read already in flight does not overwrite a rewind.
    generation: u64,
    members: Members,
    load: Option<SharedLoad>,
    /// The last initial sync made, and when, while nothing was delivered to
    /// the room after it: a joiner within [`SYNC_REUSE`] gets it as it is,
    /// so that joiners arriving one after another (not only together) share
    /// one load and one copy of the document.
    last_sync: Option<(InitialSync, Instant)>,
}

/// How long an initial sync is given to later joiners while the room gets
/// nothing new; afterwards the document is loaded again (and the copy let go).
const SYNC_REUSE: Duration = Duration::from_secs(5);

/// One stream the subscriber follows, as seen when its read starts.
#[derive(Debug, Clone)]
pub struct Follow {
    /// The doc stream key.
    pub stream: Arc<str>,
    /// Read entries after this id.
    pub after: StreamId,
    /// Generation of the position, handed back to [`Rooms::deliver`].
    pub generation: u64,
}

/// A connection's place in a room. Leaving the room happens when it is dropped.
pub struct Membership {
    rooms: Arc<Rooms>,
    stream: Arc<str>,
    outbox: Arc<Outbox>,
    close: Arc<CloseSignal>,
}

impl Membership {
    /// Where a close of this connection is ordered ([`Rooms::close`]).
    pub fn close_signal(&self) -> Arc<CloseSignal> {
        Arc::clone(&self.close)
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.rooms.leave(&self.stream, &self.outbox);
    }
}

impl Rooms {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            rooms: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Room>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Join the room of `stream` as `user` (with auth), creating the room if
    /// needed: the room's frames go to `outbox` from now on.
    pub fn join(
        self: &Arc<Self>,
        stream: &str,
        outbox: Arc<Outbox>,
        user: Option<&str>,
    ) -> Membership {
        let mut rooms = self.lock();
        let key = rooms
            .get_key_value(stream)
            .map_or_else(|| Arc::from(stream), |(key, _)| Arc::clone(key));
        let room = rooms.entry(Arc::clone(&key)).or_insert_with(|| Room {
            position: None,
            generation: 0,
            members: Arc::new(Vec::new()),
            load: None,
            last_sync: None,
        });
        let mut members = Vec::with_capacity(room.members.len() + 1);
        members.extend(room.members.iter().cloned());
        let close = Arc::new(CloseSignal::default());
        members.push(Member {
            outbox: Arc::clone(&outbox),
            user: user.map(Arc::from),
            close: Arc::clone(&close),
        });
        room.members = Arc::new(members);
        Membership {
            rooms: Arc::clone(self),
            stream: key,
            outbox,
            close,
        }
    }

    fn leave(&self, stream: &str, outbox: &Arc<Outbox>) {
        let mut rooms = self.lock();
        if let Some(room) = rooms.get_mut(stream) {
            let members: Vec<_> = room
                .members
                .iter()
                .filter(|member| !Arc::ptr_eq(&member.outbox, outbox))
                .cloned()
                .collect();
            if members.is_empty() {
                rooms.remove(stream);
            } else {
                room.members = Arc::new(members);
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
            match &room.last_sync {
                Some((sync, made))
                    if made.elapsed() < SYNC_REUSE && room.position == Some(sync.last_id) =>
                {
                    return Ok((sync.clone(), false));
                }
                Some((_, made)) if made.elapsed() >= SYNC_REUSE => room.last_sync = None,
                _ => {}
            }
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
                // position that went past it (docs/protocol.md section 2.4)
                // so that nothing between the load and the live read is missed.
                if room.position.is_none_or(|position| sync.last_id < position) {
                    room.position = Some(sync.last_id);
                    room.generation += 1;
                    moved = true;
                }
                if room.position == Some(sync.last_id) {
                    room.last_sync = Some((sync.clone(), Instant::now()));
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
                    stream: Arc::clone(stream),
                    after,
                    generation: room.generation,
                })
            })
            .collect()
    }

    /// Forget every room's last initial sync, so that the next open loads:
    /// after a Redis restart, a sync made before it would tell reconnecting
    /// clients that the server has what Redis lost, and they would not send
    /// it again.
    pub fn forget_last_syncs(&self) {
        for room in self.lock().values_mut() {
            room.last_sync = None;
        }
    }

    /// Close the connections of this instance that `order` names: every
    /// member of its stream's room, or only those of its user. Returns how
    /// many were told to close (a connection already told is not counted
    /// again).
    pub fn close(&self, order: &CloseOrder) -> usize {
        let members = match self.lock().get(order.stream.as_str()) {
            Some(room) => Arc::clone(&room.members),
            None => return 0,
        };
        members
            .iter()
            .filter(|member| match &order.user {
                None => true,
                Some(user) => member.user.as_deref() == Some(user.as_str()),
            })
            .filter(|member| member.close.order(order.code, &order.reason))
            .count()
    }

    /// Every open room's stream key with its number of members here (the
    /// inspector's connections per room).
    pub fn connections(&self) -> Vec<(Arc<str>, usize)> {
        self.lock()
            .iter()
            .map(|(stream, room)| (Arc::clone(stream), room.members.len()))
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

    /// Hand `frames` (read up to `last_id`) to every member of the room. A
    /// member that cannot take them (it fell behind, or its client is gone)
    /// is closed by its connection and leaves; the room never waits. Returns
    /// how many frames were handed over in all.
    pub fn deliver(&self, follow: &Follow, last_id: StreamId, frames: &[Arc<RoomFrame>]) -> usize {
        let members = {
            let mut rooms = self.lock();
            let Some(room) = rooms.get_mut(&*follow.stream) else {
                return 0;
            };
            if room.generation == follow.generation {
                room.position = Some(last_id);
            }
            // The room moved on: a later joiner needs what was delivered.
            room.last_sync = None;
            Arc::clone(&room.members)
        };
        let mut delivered = 0;
        for member in members.iter() {
            if member.outbox.deliver(frames) {
                delivered += frames.len();
            }
        }
        delivered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    fn sync(last_ms: u64) -> InitialSync {
        InitialSync {
            frames: vec![
                RoomFrame::new(Bytes::from_static(b"\x00\x00\x01\x00")),
                RoomFrame::new(Bytes::from_static(b"\x00\x01\x02\x00\x00")),
            ],
            last_id: StreamId {
                ms: last_ms,
                seq: 0,
            },
        }
    }

    /// A member of `stream` on a real socket: its membership, outbox and the
    /// client end of the socket.
    async fn member(
        rooms: &Arc<Rooms>,
        stream: &str,
        capacity: usize,
    ) -> (Membership, Arc<Outbox>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        server.writable().await.unwrap();
        let outbox = Arc::new(Outbox::new(
            Arc::new(server),
            capacity,
            crate::socket::Delivery::plain(),
            Arc::default(),
        ));
        (
            rooms.join(stream, Arc::clone(&outbox), None),
            outbox,
            client,
        )
    }

    #[tokio::test]
    async fn a_close_order_names_a_room_or_one_user_in_it() {
        let rooms = Rooms::new();
        let joined = |stream: &str, user: Option<&str>| {
            let rooms = Arc::clone(&rooms);
            let (stream, user) = (stream.to_string(), user.map(str::to_string));
            async move {
                let (_, outbox, client) = member(&rooms, "unused", 8).await;
                let membership = rooms.join(&stream, outbox, user.as_deref());
                (membership, client)
            }
        };
        let (alice, _a) = joined("s", Some("alice")).await;
        let (bob, _b) = joined("s", Some("bob")).await;
        let (other, _o) = joined("t", Some("alice")).await;
        let order = |user: Option<&str>| CloseOrder {
            stream: "s".into(),
            user: user.map(str::to_string),
            code: 4401,
            reason: "revoked".into(),
        };
        assert_eq!(rooms.close(&order(Some("carol"))), 0);
        assert_eq!(rooms.close(&order(Some("alice"))), 1);
        assert_eq!(
            alice.close_signal().ordered().await,
            (4401, "revoked".to_string())
        );
        assert_eq!(rooms.close(&order(None)), 1, "alice was told already");
        let (code, reason) = bob.close_signal().ordered().await;
        assert_eq!((code, reason.as_str()), (4401, "revoked"));
        let unordered =
            tokio::time::timeout(Duration::from_millis(50), other.close_signal().ordered()).await;
        assert!(unordered.is_err(), "another room is not closed");
        let missing = CloseOrder {
            stream: "none".into(),
            ..order(None)
        };
        assert_eq!(rooms.close(&missing), 0);
    }

    #[tokio::test]
    async fn concurrent_opens_share_one_load() {
        let rooms = Rooms::new();
        let loads = Arc::new(AtomicUsize::new(0));
        let mut members = Vec::new();
        let mut opens = Vec::new();
        for _ in 0..5 {
            members.push(member(&rooms, "s", 8).await);
            let rooms = Arc::clone(&rooms);
            let loads = Arc::clone(&loads);
            opens.push(tokio::spawn(async move {
                rooms
                    .initial_sync("s", || async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok(sync(7))
                    })
                    .await
            }));
        }
        for open in opens {
            let (sync, _) = open.await.unwrap().unwrap();
            assert_eq!(sync.last_id.ms, 7);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        // A later open while the room got nothing new is given the same sync.
        let (again, _) = rooms
            .initial_sync("s", || async {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok(sync(8))
            })
            .await
            .unwrap();
        assert_eq!(again.last_id.ms, 7);
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        // Once the room moved on, an open loads again.
        let follow = rooms.follows()[0].clone();
        rooms.deliver(&follow, StreamId { ms: 8, seq: 0 }, &[]);
        rooms
            .initial_sync("s", || async {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok(sync(9))
            })
            .await
            .unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn position_starts_at_the_load_and_rewinds_but_never_advances() {
        let rooms = Rooms::new();
        let _member = member(&rooms, "s", 8).await;
        assert!(rooms.follows().is_empty(), "no position before the load");
        let (_, moved) = rooms
            .initial_sync("s", || async { Ok(sync(10)) })
            .await
            .unwrap();
        assert!(moved);
        assert_eq!(rooms.follows()[0].after.ms, 10);
        rooms.forget_last_syncs();
        let (_, moved) = rooms
            .initial_sync("s", || async { Ok(sync(20)) })
            .await
            .unwrap();
        assert!(!moved, "a newer load does not skip entries");
        assert_eq!(rooms.follows()[0].after.ms, 10);
        rooms.forget_last_syncs();
        let (_, moved) = rooms
            .initial_sync("s", || async { Ok(sync(5)) })
            .await
            .unwrap();
        assert!(moved, "an older load rewinds");
        assert_eq!(rooms.follows()[0].after.ms, 5);
    }

    #[tokio::test]
    async fn a_read_in_flight_does_not_undo_a_rewind() {
        let rooms = Rooms::new();
        let (_member, outbox, mut client) = member(&rooms, "s", 8).await;
        outbox.release(&[]);
        rooms
            .initial_sync("s", || async { Ok(sync(10)) })
            .await
            .unwrap();
        let follow = rooms.follows()[0].clone();
        rooms.forget_last_syncs();
        rooms
            .initial_sync("s", || async { Ok(sync(3)) })
            .await
            .unwrap();
        rooms.deliver(
            &follow,
            StreamId { ms: 12, seq: 0 },
            &[RoomFrame::new(Bytes::from_static(b"m"))],
        );
        assert_eq!(rooms.follows()[0].after.ms, 3);
        let mut got = [0u8; 3];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\x82\x01m");
    }

    #[tokio::test]
    async fn a_full_queue_drops_only_that_member() {
        let rooms = Rooms::new();
        // The slow member never gets past its initial sync, so frames queue.
        let (_slow, slow, _slow_client) = member(&rooms, "s", 2).await;
        let (_fast, fast, mut fast_client) = member(&rooms, "s", 2).await;
        fast.release(&[]);
        rooms
            .initial_sync("s", || async { Ok(sync(1)) })
            .await
            .unwrap();
        for i in 0..3u8 {
            let follow = rooms.follows()[0].clone();
            let delivered = rooms.deliver(
                &follow,
                StreamId {
                    ms: 2 + u64::from(i),
                    seq: 0,
                },
                &[RoomFrame::new(Bytes::from(vec![i]))],
            );
            assert_eq!(delivered, if i < 2 { 2 } else { 1 });
            let mut got = [0u8; 3];
            fast_client.read_exact(&mut got).await.unwrap();
            assert_eq!(got, [0x82, 1, i]);
        }
        assert_eq!(slow.stopped(), Some(crate::socket::Stopped::FellBehind));
        assert_eq!(fast.stopped(), None);
    }
}
