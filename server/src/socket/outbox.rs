//! The way out to one client: frames are written straight to its socket by
//! whoever has them (the room's fan-out, or the connection itself), and queued
//! only while the socket would block. The connection's own task drains the
//! queue once the socket is writable again.
//!
//! This is how a frame read once from a stream reaches a room with one write
//! per member and no task wake-up when the sockets keep up, which is the
//! normal case. A member that falls `capacity` frames behind is dropped from
//! its room: its client reconnects and resyncs, and the room never waits.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::room_frame::{Delivery, RoomFrame};
use crate::metrics::{self, Metrics};

/// Most frames handed to one `writev`.
const MAX_SLICES: usize = 64;

/// Why an outbox takes no more frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// More than `capacity` frames were waiting: the client does not keep up.
    FellBehind,
    /// Writing failed: the client is gone.
    Broken,
    /// The connection is closing; what is queued still goes out.
    Closing,
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued was written.
    Empty,
    /// The socket would block; frames wait for it to become writable.
    Pending,
}

/// One client's outbound frames. Shared between the connection's task and the
/// room it is a member of.
pub struct Outbox {
    socket: Arc<TcpStream>,
    state: Mutex<State>,
    /// Wakes the connection's task when frames wait or the outbox stopped.
    wake: Notify,
    capacity: usize,
    /// Plain or compressed room frames, as the client agreed.
    delivery: Delivery,
    /// Bytes written and queue depths are counted here.
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct State {
    /// Frames not yet (completely) written, oldest first.
    queue: VecDeque<Bytes>,
    /// Bytes of the front frame already written.
    written: usize,
    /// While the initial sync is not sent, room frames queue behind it.
    held: bool,
    /// Frames at the front of the queue that do not count against the
    /// capacity: the initial sync, however many messages it takes.
    exempt: usize,
    stopped: Option<Stopped>,
}

impl Outbox {
    /// An outbox for `socket`, holding room frames until [`Outbox::release`],
    /// writing them as `delivery` says, counting into `metrics`.
    pub fn new(
        socket: Arc<TcpStream>,
        capacity: usize,
        delivery: Delivery,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            socket,
            state: Mutex::new(State {
                held: true,
                ..State::default()
            }),
            wake: Notify::new(),
            capacity: capacity.max(1),
            delivery,
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hand room frames to this client, plain or compressed as it agreed:
    /// written at once when nothing waits before them, queued otherwise.
    /// `false` when the outbox takes no more (the member should leave the
    /// room); the connection is woken to close.
    pub fn deliver(&self, frames: &[Arc<RoomFrame>]) -> bool {
        if let [one] = frames {
            return self.deliver_frames(&[one.for_member(&self.delivery)]);
        }
        let frames: Vec<Bytes> = frames
            .iter()
            .map(|f| f.for_member(&self.delivery))
            .collect();
        self.deliver_frames(&frames)
    }

    /// [`Outbox::deliver`] of frames made for this client.
    fn deliver_frames(&self, frames: &[Bytes]) -> bool {
        let mut state = self.lock();
        if state.stopped.is_some() {
            return false;
        }
        if state.queue.len() - state.exempt + frames.len() > self.capacity {
            state.stopped = Some(Stopped::FellBehind);
            drop(state);
            self.wake.notify_one();
            return false;
        }
        if state.held || !state.queue.is_empty() {
            state.queue.extend(frames.iter().cloned());
            self.metrics.queue_depth(state.queue.len());
            return true;
        }
        match self.write_frames(frames.iter(), 0) {
            Ok(written) => {
                // Frames written whole are done; the first one that is not
                // (partly written, `offset` bytes out) and all after it wait.
                let mut rest = written;
                let mut offset = None;
                for frame in frames {
                    if offset.is_none() && rest >= frame.len() {
                        rest -= frame.len();
                        continue;
                    }
                    offset.get_or_insert(rest);
                    state.queue.push_back(frame.clone());
                }
                let Some(offset) = offset else {
                    return true;
                };
                state.written = offset;
                self.metrics.queue_depth(state.queue.len());
            }
            Err(_) => {
                state.stopped = Some(Stopped::Broken);
                drop(state);
                self.wake.notify_one();
                return false;
            }
        }
        drop(state);
        self.wake.notify_one();
        true
    }

    /// Queue a frame of the connection's own (pong, ping, close) after what
    /// waits, whatever the capacity, and wake the connection to write it.
    pub fn push(&self, frame: Bytes) {
        let mut state = self.lock();
        state.queue.push_back(frame);
        // Counted only when frames wait before it: behind a blocked socket.
        if state.queue.len() > 1 {
            self.metrics.queue_depth(state.queue.len());
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Put the initial sync in front of the room frames that queued while it
    /// loaded, let room frames through from now on, and wake the connection
    /// to write. The initial sync does not count against the capacity: a
    /// client steadily taking a large document is not behind its room.
    pub fn release(&self, initial: &[Arc<RoomFrame>]) {
        let mut state = self.lock();
        let waiting = std::mem::take(&mut state.queue);
        state
            .queue
            .extend(initial.iter().map(|f| f.for_member(&self.delivery)));
        state.exempt = initial.len();
        state.queue.extend(waiting);
        state.held = false;
        drop(state);
        self.wake.notify_one();
    }

    /// Take no more room frames: the connection is closing.
    pub fn close(&self) {
        let mut state = self.lock();
        state.stopped.get_or_insert(Stopped::Closing);
    }

    /// Drop the frames that wait, but the one partly written (its end must
    /// still go out for the stream of frames to stay readable).
    pub fn discard(&self) {
        let mut state = self.lock();
        let keep = usize::from(state.written > 0);
        state.queue.truncate(keep);
        state.exempt = state.exempt.min(keep);
    }

    /// Why the outbox stopped taking frames, if it did.
    pub fn stopped(&self) -> Option<Stopped> {
        self.lock().stopped
    }

    /// Wait until there is something for the connection to do: frames to
    /// write, or the outbox stopped.
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// Wait until the socket takes bytes again.
    pub async fn writable(&self) -> io::Result<()> {
        self.socket.writable().await
    }

    /// Write what is queued, as far as the socket takes it without blocking.
    pub fn flush(&self) -> io::Result<Flushed> {
        let mut state = self.lock();
        while !state.queue.is_empty() {
            let offset = state.written;
            match self.write_frames(state.queue.iter(), offset) {
                Ok(0) => return Ok(Flushed::Pending),
                Ok(n) => {
                    let mut n = n + offset;
                    while let Some(front) = state.queue.front() {
                        if n < front.len() {
                            break;
                        }
                        n -= front.len();
                        state.queue.pop_front();
                        state.exempt = state.exempt.saturating_sub(1);
                    }
                    state.written = n;
                }
                Err(err) => {
                    state.stopped = Some(Stopped::Broken);
                    return Err(err);
                }
            }
        }
        state.written = 0;
        Ok(Flushed::Empty)
    }

    /// Frames waiting in the queue.
    pub fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    /// [`write_frames`] to this client's socket, counting the bytes written.
    fn write_frames<'a>(
        &self,
        frames: impl Iterator<Item = &'a Bytes>,
        offset: usize,
    ) -> io::Result<usize> {
        let written = write_frames(&self.socket, frames, offset)?;
        metrics::add(&self.metrics.sent_bytes, written as u64);
        Ok(written)
    }
}

/// Write `frames` (the first from `offset` on) with one `writev`; the bytes
/// written, 0 when the socket would block.
fn write_frames<'a>(
    socket: &TcpStream,
    frames: impl Iterator<Item = &'a Bytes>,
    offset: usize,
) -> io::Result<usize> {
    let mut slices: [IoSlice<'_>; MAX_SLICES] = [IoSlice::new(&[]); MAX_SLICES];
    let mut count = 0;
    for (i, frame) in frames.take(MAX_SLICES).enumerate() {
        let bytes = if i == 0 { &frame[offset..] } else { &frame[..] };
        slices[count] = IoSlice::new(bytes);
        count += 1;
    }
    if count == 0 {
        return Ok(0);
    }
    loop {
        match socket.try_write_vectored(&slices[..count]) {
            Ok(n) => return Ok(n),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    async fn pair() -> (Arc<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        // Let the reactor see the socket writable once.
        server.writable().await.unwrap();
        (Arc::new(server), client)
    }

    async fn read_exactly(client: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        client.read_exact(&mut buf).await.unwrap();
        buf
    }

    fn room_frame(message: &'static [u8]) -> Arc<RoomFrame> {
        RoomFrame::new(Bytes::from_static(message))
    }

    fn outbox(socket: Arc<TcpStream>, capacity: usize) -> Outbox {
        Outbox::new(socket, capacity, Delivery::plain(), Arc::default())
    }

    #[tokio::test]
    async fn held_frames_follow_the_initial_sync() {
        let (server, mut client) = pair().await;
        let outbox = outbox(server, 8);
        assert!(outbox.deliver(&[room_frame(b"room")]));
        outbox.release(&[room_frame(b"sync1"), room_frame(b"sync2")]);
        assert_eq!(outbox.flush().unwrap(), Flushed::Empty);
        assert!(outbox.deliver(&[room_frame(b"live")]));
        assert_eq!(
            read_exactly(&mut client, 26).await,
            b"\x82\x05sync1\x82\x05sync2\x82\x04room\x82\x04live"
        );
    }

    #[tokio::test]
    async fn the_initial_sync_does_not_count_against_the_capacity() {
        let (server, _client) = pair().await;
        let outbox = outbox(server, 2);
        let big = RoomFrame::new(Bytes::from(vec![7u8; 1 << 20]));
        let sync: Vec<_> = (0..40).map(|_| Arc::clone(&big)).collect();
        outbox.release(&sync);
        assert_eq!(outbox.flush().unwrap(), Flushed::Pending);
        assert!(outbox.deliver(&[room_frame(b"a")]));
        assert!(outbox.deliver(&[room_frame(b"b")]));
        assert!(!outbox.deliver(&[room_frame(b"c")]), "a third room frame");
        assert_eq!(outbox.stopped(), Some(Stopped::FellBehind));
    }

    #[tokio::test]
    async fn a_member_that_does_not_read_falls_behind_without_blocking() {
        let (server, _client) = pair().await;
        let outbox = outbox(server, 4);
        outbox.release(&[]);
        let frame = RoomFrame::new(Bytes::from(vec![7u8; 1 << 20]));
        let mut delivered = 0;
        // The kernel buffers take some; then frames queue, then the outbox stops.
        while outbox.deliver(std::slice::from_ref(&frame)) {
            delivered += 1;
            assert!(delivered < 1000, "never fell behind");
        }
        assert_eq!(outbox.stopped(), Some(Stopped::FellBehind));
        assert!(outbox.queued() <= 4);
        assert!(!outbox.deliver(&[room_frame(b"x")]));
    }

    #[tokio::test]
    async fn queued_frames_are_written_whole_and_in_order_once_writable() {
        let (server, mut client) = pair().await;
        let outbox = Arc::new(outbox(server, 10_000));
        outbox.release(&[]);
        let frames: Vec<_> = (0..200u8)
            .map(|i| RoomFrame::new(Bytes::from(vec![i; 100_000])))
            .collect();
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        });
        for frame in &frames {
            assert!(outbox.deliver(std::slice::from_ref(frame)));
        }
        while outbox.flush().unwrap() == Flushed::Pending {
            outbox.writable().await.unwrap();
        }
        drop(outbox);
        let all = reader.await.unwrap();
        let expected: Vec<u8> = frames.iter().flat_map(|f| f.plain().to_vec()).collect();
        assert_eq!(all.len(), expected.len());
        assert!(all == expected);
    }
}
