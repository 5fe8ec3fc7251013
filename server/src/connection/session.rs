//! One connection's policy, without its socket: what to do with each frame the
//! client sent, with the passing of time, and with each way the connection
//! ends. The IO shell (`super`) reads and decodes the socket, hands every
//! frame and tick here with the instant it happened, and carries out the
//! answer: append these bytes, send this frame, close with this frame. Kept
//! apart from the socket so that every limit, close code and departure is
//! tested with plain values and explicit instants.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::limits::{ConnectionSettings, Limits, Meter};
use crate::auth::Access;
use crate::metrics::CloseReason;
use crate::protocol::{self, AwarenessSize, ClientAction};
use crate::socket::deflate::InflateError;
use crate::socket::{close, frame, FrameError, Incoming};
use crate::streams::CLOSE_DELETED;

/// How often an idle connection with no idle timeout is looked at: never
/// closed, so only rarely woken.
const NO_IDLE_PERIOD: Duration = Duration::from_secs(3600);

/// Why a connection ended, for the close frame and the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The client sent a close frame (with this code).
    ClientClosed(Option<u16>),
    /// The client's socket ended or failed.
    ClientGone,
    /// Nothing was heard from the client within the idle timeout.
    Silent,
    /// The instance is shutting down.
    Shutdown,
    /// The client did not keep up with its room.
    FellBehind,
    /// Redis restarted and may have lost what the client sent: it must
    /// reconnect and send its document again.
    BusRestarted,
    /// The client or the bus failed it: close with this code and reason.
    Refused(u16, String),
    /// Closed by order, with this code and reason: a close order for its
    /// document or user, or its token expired. What the client sends
    /// afterwards is dropped; a deleted document's stream is not written to
    /// again, not even the awareness departure.
    Ordered(u16, String),
}

impl End {
    /// The document could not be loaded for the initial sync.
    pub fn document_unavailable() -> Self {
        End::Refused(close::INTERNAL, "document unavailable".into())
    }

    /// The stream refused a message: the client must reconnect and send its
    /// document again, or what it sent is lost.
    pub fn not_stored() -> Self {
        End::Refused(close::INTERNAL, "message not stored, reconnect".into())
    }

    /// The metrics label of this end.
    pub fn close_reason(&self) -> CloseReason {
        match self {
            End::ClientClosed(_) | End::ClientGone => CloseReason::Client,
            End::Silent => CloseReason::Silent,
            End::Shutdown => CloseReason::Shutdown,
            End::FellBehind => CloseReason::SlowConsumer,
            End::Refused(close::INTERNAL, _) | End::BusRestarted => CloseReason::Error,
            End::Refused(close::TOO_BIG | close::POLICY, _) => CloseReason::TooLarge,
            End::Refused(..) => CloseReason::InvalidFrame,
            End::Ordered(..) => CloseReason::Ordered,
        }
    }
}

/// A frame that breaks the WebSocket rules or the size limit ends the
/// connection with the error's own close code.
impl From<FrameError> for End {
    fn from(err: FrameError) -> Self {
        End::Refused(err.close_code(), err.to_string())
    }
}

/// A compressed message that inflates past the size limit ends the connection
/// with 1009, one that is no deflate data with 1007.
impl From<InflateError> for End {
    fn from(err: InflateError) -> Self {
        let code = match err {
            InflateError::TooBig(_) => close::TOO_BIG,
            InflateError::Corrupt(_) => close::INVALID_PAYLOAD,
        };
        End::Refused(code, err.to_string())
    }
}

/// What the shell does with one thing that happened while the connection is
/// open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Nothing to do.
    Nothing,
    /// Append this message to the room's stream.
    Append(Bytes),
    /// Send this frame to the client (a pong, a ping).
    Send(Bytes),
}

/// What is read from the client once its connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rest {
    /// Nothing: the socket goes at once.
    Nothing,
    /// The socket ended or failed: what the kernel still holds was sent before
    /// and is appended all the same, before the close is counted.
    Received,
    /// Send this close frame, then read until the client answers it; with
    /// `keep`, every complete message from a writer is appended on the way.
    CloseFrame {
        /// The close frame, with its code and reason.
        frame: Bytes,
        /// Whether what the client sends meanwhile is appended (or dropped).
        keep: bool,
    },
}

/// How the shell closes a connection that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// The metrics label.
    pub reason: CloseReason,
    /// What is read from the client on the way out.
    pub rest: Rest,
    /// The client sent something refused (counted apart from server failures).
    pub refused: bool,
    /// The client fell behind its room: what waits for it is discarded.
    pub fell_behind: bool,
}

/// What the shell does with one frame read after the connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterClose {
    /// Append this message to the room's stream.
    Append(Bytes),
    /// Drop the frame and read on.
    Skip,
    /// Stop reading: the client closed, or what it sent is not kept.
    Stop,
}

/// One connection's policy and the state it needs: the client's rates, when it
/// was last heard from, and its awareness entry for the departure.
#[derive(Debug)]
pub struct Session {
    access: Access,
    limits: Limits,
    idle_timeout: Duration,
    /// What the client sent in the current second.
    meter: Meter,
    /// The client id and clock of this connection's awareness, to announce its
    /// departure when it closes (docs/protocol.md section 2.6).
    awareness: Option<(u64, u64)>,
    /// When the client last sent anything.
    heard: Instant,
    /// Whether a ping is out, unanswered.
    pinged: bool,
    /// Whether what the client sends after the end is appended.
    keep_rest: bool,
}

impl Session {
    /// The session of a connection with `access`, opened at `now`.
    pub fn new(settings: &ConnectionSettings, access: Access, now: Instant) -> Self {
        Self {
            access,
            limits: settings.limits,
            idle_timeout: settings.idle_timeout,
            meter: Meter::new(now),
            awareness: None,
            heard: now,
            pinged: false,
            keep_rest: false,
        }
    }

    /// How often [`Session::tick`] must be called: at half the idle timeout,
    /// so that a quiet client is pinged and then closed one period later.
    pub fn tick_period(&self) -> Duration {
        if self.idle_timeout.is_zero() {
            NO_IDLE_PERIOD
        } else {
            self.idle_timeout / 2
        }
    }

    /// Bytes arrived from the client at `now`: it is alive.
    pub fn heard(&mut self, now: Instant) {
        self.heard = now;
        self.pinged = false;
    }

    /// Ping a client quiet for half the idle timeout; close one quiet for all
    /// of it that left the ping unanswered (a peer that vanished without
    /// closing its socket).
    pub fn tick(&mut self, now: Instant) -> Result<Reply, End> {
        let idle = self.idle_timeout;
        if idle.is_zero() {
            return Ok(Reply::Nothing);
        }
        let quiet = now.saturating_duration_since(self.heard);
        // Only a client that left a ping unanswered is silent: one that
        // answers each ping is heard from at every other tick.
        if quiet >= idle && self.pinged {
            return Err(End::Silent);
        }
        if quiet >= idle / 2 && !self.pinged {
            self.pinged = true;
            return Ok(Reply::Send(frame::ping(b"")));
        }
        Ok(Reply::Nothing)
    }

    /// What to do with one frame the client sent at `now` while the
    /// connection is open.
    pub fn receive(&mut self, incoming: Incoming, now: Instant) -> Result<Reply, End> {
        match incoming {
            Incoming::Close(code) => Err(End::ClientClosed(code)),
            Incoming::Ping(payload) => Ok(Reply::Send(frame::pong(&payload))),
            Incoming::Pong => Ok(Reply::Nothing),
            // Everything a reader sends is dropped unread, awareness
            // included (docs/protocol.md section 2.5), so it never has a
            // departure to announce.
            Incoming::Text | Incoming::Binary(_) | Incoming::Compressed(_)
                if self.access != Access::ReadWrite =>
            {
                Ok(Reply::Nothing)
            }
            // The connection inflates compressed messages before they get
            // here (it may move the work off its thread).
            Incoming::Compressed(_) => Err(End::Refused(
                close::INTERNAL,
                "compressed message not inflated".into(),
            )),
            Incoming::Text => Err(End::Refused(
                close::UNSUPPORTED,
                "text frames are not y-websocket messages".into(),
            )),
            Incoming::Binary(message) => Ok(match self.message(&message, now)? {
                Some(message) => Reply::Append(message),
                None => Reply::Nothing,
            }),
        }
    }

    /// Validate one message from a writer: what to append, if anything.
    fn message(&mut self, frame: &[u8], now: Instant) -> Result<Option<Bytes>, End> {
        if let Some(reason) = self.meter.count(frame.len(), &self.limits, now) {
            return Err(End::Refused(close::POLICY, reason));
        }
        let action = protocol::client_action(frame).map_err(|err| {
            End::Refused(close::INVALID_PAYLOAD, format!("invalid message: {err}"))
        })?;
        let ClientAction::Append {
            message,
            awareness: entry,
            awareness_size,
        } = action
        else {
            return Ok(None);
        };
        if let Some(size) = awareness_size {
            check_awareness(size, &self.limits)?;
        }
        // Noted before the append is known to have succeeded: a failed append
        // may still have reached the stream, and announcing the departure of
        // a client that never arrived changes nothing for anyone.
        if let Some((client_id, clock)) = entry {
            match &mut self.awareness {
                None => self.awareness = Some((client_id, clock)),
                Some((known, last)) if *known == client_id => *last = clock,
                Some(_) => {}
            }
        }
        Ok(Some(message))
    }

    /// How to close the connection after `end`.
    pub fn ending(&mut self, end: &End) -> Ending {
        let close_frame = |code, reason| Some(frame::close(code, reason));
        let frame = match end {
            End::ClientClosed(code) => close_frame(code.unwrap_or(close::NORMAL), ""),
            End::ClientGone | End::Silent => None,
            End::Shutdown => close_frame(close::GOING_AWAY, "server shutting down"),
            End::FellBehind => close_frame(close::TRY_AGAIN_LATER, "too far behind, reconnect"),
            End::BusRestarted => close_frame(close::INTERNAL, "redis restarted, reconnect"),
            End::Refused(code, reason) | End::Ordered(code, reason) => close_frame(*code, reason),
        };
        // A refused or ordered-out client's further messages are dropped;
        // anyone else's, sent before it saw the close (or before its reset: a
        // reset does not take back what this kernel received), are appended.
        self.keep_rest = !matches!(end, End::Refused(..) | End::Ordered(..));
        if matches!(end, End::Ordered(CLOSE_DELETED, _)) {
            self.awareness = None;
        }
        let rest = match frame {
            Some(frame) => Rest::CloseFrame {
                frame,
                keep: self.keep_rest,
            },
            None if *end == End::ClientGone => Rest::Received,
            None => Rest::Nothing,
        };
        Ending {
            reason: end.close_reason(),
            rest,
            refused: matches!(end, End::Refused(code, _) if *code != close::INTERNAL),
            fell_behind: *end == End::FellBehind,
        }
    }

    /// What to do with one frame read at `now` after [`Session::ending`].
    pub fn after_close(&mut self, incoming: Incoming, now: Instant) -> AfterClose {
        match incoming {
            Incoming::Binary(message) if self.keep_rest && self.access == Access::ReadWrite => {
                match self.message(&message, now) {
                    Ok(Some(message)) => AfterClose::Append(message),
                    Ok(None) => AfterClose::Skip,
                    Err(_) => AfterClose::Stop,
                }
            }
            Incoming::Close(_) => AfterClose::Stop,
            _ => AfterClose::Skip,
        }
    }

    /// The awareness removal announcing that this client left, for the first
    /// client id it sent, at its latest clock; `None` when it sent none, or
    /// when its document was deleted (the removal would make the stream anew).
    pub fn departure(&self) -> Option<Vec<u8>> {
        self.awareness
            .map(|(client_id, clock)| protocol::encode_awareness_removal(client_id, clock))
    }
}

/// Refuse an awareness message over the awareness limits.
fn check_awareness(size: AwarenessSize, limits: &Limits) -> Result<(), End> {
    if limits.awareness_clients > 0 && size.clients > limits.awareness_clients {
        return Err(End::Refused(
            close::POLICY,
            format!(
                "awareness message with over {} clients",
                limits.awareness_clients
            ),
        ));
    }
    if limits.awareness_state > 0 && size.largest_state > limits.awareness_state {
        return Err(End::Refused(
            close::POLICY,
            format!("awareness state over {} bytes", limits.awareness_state),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{
        encode_awareness_message, encode_sync_step1, encode_sync_update, AwarenessEntry,
        AwarenessUpdate,
    };
    use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact};

    /// A real Yjs update inserting `text`, as a y-websocket sync update.
    fn update_message(text: &str) -> Bytes {
        let doc = Doc::new();
        let field = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        field.insert(&mut txn, 0, text);
        assert_eq!(field.get_string(&txn), text);
        Bytes::from(encode_sync_update(
            &txn.encode_state_as_update_v1(&StateVector::default()),
        ))
    }

    /// An awareness message with one entry per `(client id, clock, state)`.
    fn awareness(entries: &[(u64, u64, &str)]) -> Bytes {
        let update = AwarenessUpdate {
            entries: entries
                .iter()
                .map(|&(client_id, clock, state)| AwarenessEntry {
                    client_id,
                    clock,
                    state: state.to_owned(),
                })
                .collect(),
        };
        Bytes::from(encode_awareness_message(&update))
    }

    fn settings(limits: Limits, idle_timeout: Duration) -> ConnectionSettings {
        ConnectionSettings {
            limits,
            idle_timeout,
            ..ConnectionSettings::default()
        }
    }

    fn writer(limits: Limits, now: Instant) -> Session {
        Session::new(
            &settings(limits, Duration::from_secs(60)),
            Access::ReadWrite,
            now,
        )
    }

    fn unlimited() -> Limits {
        Limits {
            messages_per_second: 0,
            bytes_per_second: 0,
            awareness_state: 0,
            awareness_clients: 0,
        }
    }

    /// The code and reason of a refusal.
    fn refused(result: Result<Reply, End>) -> (u16, String) {
        match result {
            Err(End::Refused(code, reason)) => (code, reason),
            other => panic!("not refused: {other:?}"),
        }
    }

    /// The code and reason of a server close frame.
    fn close_frame(frame: &[u8]) -> (u16, String) {
        assert_eq!(frame[0], 0x88, "a final close frame");
        assert_eq!(usize::from(frame[1]), frame.len() - 2);
        let code = u16::from_be_bytes([frame[2], frame[3]]);
        (code, String::from_utf8(frame[4..].to_vec()).unwrap())
    }

    #[test]
    fn messages_over_the_rate_are_refused_with_1008_and_the_count_resets_each_second() {
        let limits = Limits {
            messages_per_second: 3,
            ..unlimited()
        };
        let start = Instant::now();
        let mut session = writer(limits, start);
        let message = update_message("a");
        for i in 0..3 {
            let at = start + Duration::from_millis(100 * i);
            let reply = session.receive(Incoming::Binary(message.clone()), at);
            assert_eq!(reply, Ok(Reply::Append(message.clone())), "message {i}");
        }
        let (code, reason) = refused(session.receive(
            Incoming::Binary(message.clone()),
            start + Duration::from_millis(999),
        ));
        assert_eq!(code, close::POLICY);
        assert_eq!(reason, "over 3 messages per second");
        assert_eq!(
            End::Refused(code, reason).close_reason(),
            CloseReason::TooLarge
        );

        // A second later the count starts again.
        let mut session = writer(limits, start);
        for i in 0..3 {
            let at = start + Duration::from_millis(10 * i);
            assert!(session
                .receive(Incoming::Binary(message.clone()), at)
                .is_ok());
        }
        for i in 0..3 {
            let at = start + Duration::from_millis(1000 + 10 * i);
            let reply = session.receive(Incoming::Binary(message.clone()), at);
            assert_eq!(reply, Ok(Reply::Append(message.clone())), "next second {i}");
        }
    }

    #[test]
    fn bytes_over_the_rate_are_refused_but_one_larger_message_passes_first_in_its_second() {
        let big = update_message(&"x".repeat(500));
        let small = update_message("y");
        let limits = Limits {
            bytes_per_second: 100,
            ..unlimited()
        };
        assert!(big.len() > 100);
        let start = Instant::now();
        let mut session = writer(limits, start);
        // The first message of its second passes, however large.
        let reply = session.receive(Incoming::Binary(big.clone()), start);
        assert_eq!(reply, Ok(Reply::Append(big.clone())));
        // The next one in the same second is over the rate.
        let (code, reason) = refused(session.receive(
            Incoming::Binary(small.clone()),
            start + Duration::from_millis(500),
        ));
        assert_eq!(code, close::POLICY);
        assert_eq!(reason, "over 100 bytes per second");

        // Under the rate, messages pass until the bytes before one reach it.
        let mut session = writer(limits, start);
        let mut sent = 0;
        while sent < 100 {
            let reply = session.receive(Incoming::Binary(small.clone()), start);
            assert_eq!(reply, Ok(Reply::Append(small.clone())));
            sent += small.len();
        }
        let (code, _) = refused(session.receive(Incoming::Binary(small.clone()), start));
        assert_eq!(code, close::POLICY);

        // A second later the bytes are counted afresh.
        let mut session = writer(limits, start);
        assert!(session
            .receive(Incoming::Binary(big.clone()), start)
            .is_ok());
        let later = start + Duration::from_secs(1);
        let reply = session.receive(Incoming::Binary(big.clone()), later);
        assert_eq!(reply, Ok(Reply::Append(big)));
    }

    #[test]
    fn awareness_messages_with_too_many_clients_are_refused_with_1008() {
        let limits = Limits {
            awareness_clients: 2,
            ..unlimited()
        };
        let now = Instant::now();
        let mut session = writer(limits, now);
        let two = awareness(&[(1, 1, "{}"), (2, 1, "{}")]);
        assert_eq!(
            session.receive(Incoming::Binary(two.clone()), now),
            Ok(Reply::Append(two))
        );
        let three = awareness(&[(1, 2, "{}"), (2, 2, "{}"), (3, 1, "{}")]);
        let (code, reason) = refused(session.receive(Incoming::Binary(three), now));
        assert_eq!(code, close::POLICY);
        assert_eq!(reason, "awareness message with over 2 clients");
    }

    #[test]
    fn awareness_states_over_the_size_limit_are_refused_with_1008() {
        let limits = Limits {
            awareness_state: 20,
            ..unlimited()
        };
        let now = Instant::now();
        let mut session = writer(limits, now);
        let (exactly, over) = ("{\"n\":\"0123456789ab\"}", "{\"n\":\"0123456789abc\"}");
        assert_eq!((exactly.len(), over.len()), (20, 21));
        let fits = awareness(&[(7, 1, exactly)]);
        assert!(session.receive(Incoming::Binary(fits), now).is_ok());
        let huge = awareness(&[(7, 2, over)]);
        let (code, reason) = refused(session.receive(Incoming::Binary(huge), now));
        assert_eq!(code, close::POLICY);
        assert_eq!(reason, "awareness state over 20 bytes");
        // The refused state is not the one announced as gone.
        assert_eq!(
            session.departure(),
            Some(protocol::encode_awareness_removal(7, 1))
        );
    }

    #[test]
    fn a_reader_appends_nothing_not_even_awareness_and_so_has_no_departure() {
        let now = Instant::now();
        let mut session = Session::new(&ConnectionSettings::default(), Access::ReadOnly, now);
        let sent = [
            Incoming::Binary(update_message("read only")),
            Incoming::Binary(awareness(&[(9, 1, "{}")])),
            Incoming::Binary(Bytes::from_static(b"\xff not a message")),
            Incoming::Text,
        ];
        for incoming in sent.clone() {
            assert_eq!(session.receive(incoming, now), Ok(Reply::Nothing));
        }
        // Nor after the close.
        session.ending(&End::ClientGone);
        for incoming in sent {
            assert_eq!(session.after_close(incoming, now), AfterClose::Skip);
        }
        assert_eq!(session.departure(), None);
    }

    #[test]
    fn a_text_frame_from_a_writer_is_refused_with_1003() {
        let now = Instant::now();
        let mut session = writer(Limits::default(), now);
        let (code, reason) = refused(session.receive(Incoming::Text, now));
        assert_eq!(code, close::UNSUPPORTED);
        assert_eq!(reason, "text frames are not y-websocket messages");
        assert_eq!(
            End::Refused(code, reason).close_reason(),
            CloseReason::InvalidFrame
        );
    }

    #[test]
    fn an_invalid_message_is_refused_with_1007_and_not_appended() {
        let now = Instant::now();
        let mut session = writer(Limits::default(), now);
        // A sync update whose payload is not a Yjs update.
        let broken = Bytes::from_static(&[0x00, 0x02, 0x01, 0x00]);
        let (code, reason) = refused(session.receive(Incoming::Binary(broken), now));
        assert_eq!(code, close::INVALID_PAYLOAD);
        assert!(reason.starts_with("invalid message: "), "{reason}");
        let ending = session.ending(&End::Refused(code, reason));
        assert_eq!(ending.reason, CloseReason::InvalidFrame);
        assert!(ending.refused);
    }

    #[test]
    fn messages_that_need_no_append_are_ignored() {
        let now = Instant::now();
        let mut session = writer(Limits::default(), now);
        let step1 = Bytes::from(encode_sync_step1(&[0]));
        assert_eq!(
            session.receive(Incoming::Binary(step1), now),
            Ok(Reply::Nothing)
        );
        assert_eq!(session.receive(Incoming::Pong, now), Ok(Reply::Nothing));
    }

    #[test]
    fn frame_errors_close_with_their_own_code() {
        let too_big = End::from(FrameError::TooBig {
            size: 2000,
            limit: 1000,
        });
        let End::Refused(code, _) = &too_big else {
            panic!("{too_big:?}");
        };
        assert_eq!(*code, close::TOO_BIG);
        assert_eq!(too_big.close_reason(), CloseReason::TooLarge);
        let broken = End::from(FrameError::Protocol("client frame not masked"));
        assert!(matches!(broken, End::Refused(close::PROTOCOL_ERROR, _)));
        assert_eq!(broken.close_reason(), CloseReason::InvalidFrame);
    }

    #[test]
    fn pings_are_answered_with_the_same_payload_and_a_close_ends_the_connection() {
        let now = Instant::now();
        let mut session = writer(Limits::default(), now);
        let reply = session.receive(Incoming::Ping(Bytes::from_static(b"hi")), now);
        assert_eq!(reply, Ok(Reply::Send(frame::pong(b"hi"))));
        assert_eq!(
            session.receive(Incoming::Close(Some(4000)), now),
            Err(End::ClientClosed(Some(4000)))
        );
    }

    #[test]
    fn the_departure_carries_the_latest_clock_of_the_first_client_id() {
        let now = Instant::now();
        let mut session = writer(Limits::default(), now);
        assert_eq!(session.departure(), None);
        for message in [
            awareness(&[(42, 1, "{\"a\":1}")]),
            // Another client id relayed back, and a message of several
            // entries: neither is this connection's own.
            awareness(&[(43, 9, "{}")]),
            awareness(&[(42, 8, "{}"), (44, 9, "{}")]),
            awareness(&[(42, 5, "{\"a\":2}")]),
        ] {
            assert_eq!(
                session.receive(Incoming::Binary(message.clone()), now),
                Ok(Reply::Append(message))
            );
        }
        assert_eq!(
            session.departure(),
            Some(protocol::encode_awareness_removal(42, 5))
        );
    }

    #[test]
    fn a_quiet_client_is_pinged_at_half_the_idle_timeout_and_closed_when_it_does_not_answer() {
        let start = Instant::now();
        let idle = Duration::from_secs(10);
        let mut session =
            Session::new(&settings(Limits::default(), idle), Access::ReadWrite, start);
        assert_eq!(session.tick_period(), Duration::from_secs(5));
        let at = |secs| start + Duration::from_millis(secs);
        assert_eq!(session.tick(at(4_999)), Ok(Reply::Nothing));
        assert_eq!(session.tick(at(5_000)), Ok(Reply::Send(frame::ping(b""))));
        // One ping out at a time.
        assert_eq!(session.tick(at(7_000)), Ok(Reply::Nothing));
        assert_eq!(session.tick(at(9_999)), Ok(Reply::Nothing));
        assert_eq!(session.tick(at(10_000)), Err(End::Silent));

        // A client that answers is heard from, and pinged again later.
        let mut session = Session::new(&settings(Limits::default(), idle), Access::ReadOnly, start);
        assert_eq!(session.tick(at(5_000)), Ok(Reply::Send(frame::ping(b""))));
        session.heard(at(5_100));
        assert_eq!(session.tick(at(10_000)), Ok(Reply::Nothing));
        assert_eq!(session.tick(at(10_100)), Ok(Reply::Send(frame::ping(b""))));
        assert_eq!(session.tick(at(15_100)), Err(End::Silent));
        let ending = session.ending(&End::Silent);
        assert_eq!(ending.reason, CloseReason::Silent);
        assert_eq!(ending.rest, Rest::Nothing);
    }

    #[test]
    fn an_idle_timeout_of_zero_never_pings_nor_closes() {
        let start = Instant::now();
        let mut session = Session::new(
            &settings(Limits::default(), Duration::ZERO),
            Access::ReadWrite,
            start,
        );
        assert_eq!(session.tick_period(), NO_IDLE_PERIOD);
        for hours in [1, 2, 1000] {
            let at = start + Duration::from_secs(3600 * hours);
            assert_eq!(session.tick(at), Ok(Reply::Nothing));
        }
    }

    #[test]
    fn each_end_has_its_close_frame_and_metrics_reason() {
        let now = Instant::now();
        let cases = [
            (
                End::ClientClosed(Some(4001)),
                Some((4001, "")),
                CloseReason::Client,
            ),
            (
                End::ClientClosed(None),
                Some((1000, "")),
                CloseReason::Client,
            ),
            (
                End::Shutdown,
                Some((1001, "server shutting down")),
                CloseReason::Shutdown,
            ),
            (
                End::FellBehind,
                Some((1013, "too far behind, reconnect")),
                CloseReason::SlowConsumer,
            ),
            (
                End::BusRestarted,
                Some((1011, "redis restarted, reconnect")),
                CloseReason::Error,
            ),
            (
                End::not_stored(),
                Some((1011, "message not stored, reconnect")),
                CloseReason::Error,
            ),
            (
                End::document_unavailable(),
                Some((1011, "document unavailable")),
                CloseReason::Error,
            ),
            (
                End::Refused(1008, "over 3 messages per second".into()),
                Some((1008, "over 3 messages per second")),
                CloseReason::TooLarge,
            ),
            (
                End::Ordered(4401, "token expired".into()),
                Some((4401, "token expired")),
                CloseReason::Ordered,
            ),
            (End::ClientGone, None, CloseReason::Client),
            (End::Silent, None, CloseReason::Silent),
        ];
        for (end, frame, reason) in cases {
            let ending = writer(Limits::default(), now).ending(&end);
            assert_eq!(ending.reason, reason, "{end:?}");
            let sent = match &ending.rest {
                Rest::CloseFrame { frame, keep } => {
                    let (code, text) = close_frame(frame);
                    let dropped = matches!(end, End::Refused(..) | End::Ordered(..));
                    assert_eq!(*keep, !dropped, "{end:?}");
                    Some((code, text))
                }
                Rest::Received | Rest::Nothing => None,
            };
            let expected = frame.map(|(code, text)| (code, text.to_owned()));
            assert_eq!(sent, expected, "{end:?}");
            // Only what the client sent counts as refused, not server failures.
            let refused = matches!(&end, End::Refused(code, _) if *code != close::INTERNAL);
            assert_eq!(ending.refused, refused, "{end:?}");
            assert_eq!(ending.fell_behind, end == End::FellBehind, "{end:?}");
        }
    }

    #[test]
    fn a_deleted_document_gets_no_departure_and_nothing_after_the_close() {
        let now = Instant::now();
        let mut revoked = writer(Limits::default(), now);
        revoked
            .receive(Incoming::Binary(awareness(&[(3, 1, "{}")])), now)
            .unwrap();
        revoked.ending(&End::Ordered(4401, "revoked".into()));
        assert!(revoked.departure().is_some(), "the others see it leave");
        let update = update_message("after the close");
        assert_eq!(
            revoked.after_close(Incoming::Binary(update.clone()), now),
            AfterClose::Skip
        );
        let mut deleted = writer(Limits::default(), now);
        deleted
            .receive(Incoming::Binary(awareness(&[(3, 1, "{}")])), now)
            .unwrap();
        deleted.ending(&End::Ordered(CLOSE_DELETED, "document deleted".into()));
        assert_eq!(deleted.departure(), None);
        assert_eq!(
            deleted.after_close(Incoming::Binary(update), now),
            AfterClose::Skip
        );
    }

    #[test]
    fn after_a_reset_every_complete_message_from_a_writer_is_appended() {
        let now = Instant::now();
        let mut session = writer(Limits::default(), now);
        session
            .receive(Incoming::Binary(awareness(&[(3, 1, "{}")])), now)
            .unwrap();
        let ending = session.ending(&End::ClientGone);
        assert_eq!(ending.rest, Rest::Received);
        let update = update_message("sent before the reset");
        let step1 = Bytes::from(encode_sync_step1(&[0]));
        let last_awareness = awareness(&[(3, 2, "{\"x\":1}")]);
        assert_eq!(
            session.after_close(Incoming::Binary(update.clone()), now),
            AfterClose::Append(update)
        );
        assert_eq!(
            session.after_close(Incoming::Binary(step1), now),
            AfterClose::Skip
        );
        assert_eq!(
            session.after_close(Incoming::Ping(Bytes::new()), now),
            AfterClose::Skip
        );
        assert_eq!(session.after_close(Incoming::Text, now), AfterClose::Skip);
        assert_eq!(
            session.after_close(Incoming::Binary(last_awareness.clone()), now),
            AfterClose::Append(last_awareness)
        );
        // An invalid message stops the reading; so does the client's close.
        let broken = Bytes::from_static(&[0x00, 0x02, 0x01, 0x00]);
        assert_eq!(
            session.after_close(Incoming::Binary(broken), now),
            AfterClose::Stop
        );
        assert_eq!(
            session.after_close(Incoming::Close(None), now),
            AfterClose::Stop
        );
        assert_eq!(
            session.departure(),
            Some(protocol::encode_awareness_removal(3, 2))
        );
    }

    #[test]
    fn after_a_close_frame_a_writer_keeps_its_messages_but_a_refused_one_does_not() {
        let now = Instant::now();
        let update = update_message("in flight");
        let mut session = writer(Limits::default(), now);
        session.ending(&End::Shutdown);
        assert_eq!(
            session.after_close(Incoming::Binary(update.clone()), now),
            AfterClose::Append(update.clone())
        );

        let mut session = writer(Limits::default(), now);
        let (code, reason) = refused(session.receive(Incoming::Text, now));
        let ending = session.ending(&End::Refused(code, reason));
        assert!(matches!(ending.rest, Rest::CloseFrame { keep: false, .. }));
        assert_eq!(
            session.after_close(Incoming::Binary(update), now),
            AfterClose::Skip
        );
        assert_eq!(
            session.after_close(Incoming::Close(Some(1000)), now),
            AfterClose::Stop
        );
    }

    #[test]
    fn the_rates_still_hold_for_what_is_read_after_the_close() {
        let limits = Limits {
            messages_per_second: 1,
            ..unlimited()
        };
        let now = Instant::now();
        let mut session = writer(limits, now);
        let update = update_message("one");
        assert!(session
            .receive(Incoming::Binary(update.clone()), now)
            .is_ok());
        session.ending(&End::ClientGone);
        assert_eq!(
            session.after_close(Incoming::Binary(update), now),
            AfterClose::Stop
        );
    }
}
