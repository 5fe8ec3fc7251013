//! WebSocket frames (RFC 6455) as this server needs them: client frames decoded
//! from a byte buffer, server frames encoded once and shared by every member of
//! a room. Bytes in, messages out: no socket is involved, so the framing is
//! tested on its own.
//!
//! The one extension is permessage-deflate (`deflate.rs`): where it was
//! agreed, RSV1 marks the first frame of a compressed message, which is
//! handed on still compressed; every other reserved bit must be clear.
//! Client frames must be masked; control frames are answered or noted, data
//! frames are reassembled from fragments up to the message size limit.

use bytes::{Buf, Bytes, BytesMut};

/// Frame opcodes.
mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// WebSocket close codes this server sends.
pub mod close {
    /// The client closed normally (echoed back when it gave no code).
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket framing rules.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame: the protocol is binary.
    pub const UNSUPPORTED: u16 = 1003;
    /// A frame that does not decode as a y-websocket message.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The client went over a per-connection limit.
    pub const POLICY: u16 = 1008;
    /// A message over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The document could not be loaded or the streams refused a message.
    pub const INTERNAL: u16 = 1011;
    /// The connection fell behind its room; reconnecting resyncs it.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// What a client sent, one complete message or control frame at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A whole binary message (fragments joined).
    Binary(Bytes),
    /// A whole binary message compressed with permessage-deflate (its frames'
    /// payloads joined, the RFC's tail not yet appended): inflated by the
    /// connection, within the message size limit, before it is used.
    Compressed(Bytes),
    /// A whole text message: y-websocket speaks binary only, so it is refused
    /// (or dropped, from a reader). Its content is not kept.
    Text,
    /// A ping; the server answers with a pong carrying the same payload.
    Ping(Bytes),
    /// A pong (an answer to the server's ping).
    Pong,
    /// The client is closing, with its status code if it gave one.
    Close(Option<u16>),
}

/// Why a client's bytes are not acceptable WebSocket frames. Each maps to the
/// close code the connection is closed with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frames break RFC 6455 (unmasked, reserved bits, bad opcode, bad
    /// fragmentation, oversized control frame).
    #[error("websocket protocol error: {0}")]
    Protocol(&'static str),
    /// A message larger than the configured limit.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooBig {
        /// The size announced so far.
        size: u64,
        /// The configured limit.
        limit: usize,
    },
}

impl FrameError {
    /// The close code this error closes the connection with.
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::Protocol(_) => close::PROTOCOL_ERROR,
            FrameError::TooBig { .. } => close::TOO_BIG,
        }
    }
}

/// Decodes client frames from the bytes read so far, keeping a fragmented
/// message between calls.
#[derive(Debug)]
pub struct FrameDecoder {
    max_message_size: usize,
    /// Whether permessage-deflate was agreed (RSV1 may mark a message).
    deflate: bool,
    /// A message whose fragments are still arriving.
    fragments: Option<Fragments>,
}

/// The opcode, compression and bytes so far of a fragmented message.
#[derive(Debug)]
struct Fragments {
    opcode: u8,
    compressed: bool,
    bytes: BytesMut,
}

/// First-byte bits of a frame header.
const FIN: u8 = 0x80;
/// RSV1: the message is compressed (permessage-deflate).
const RSV1: u8 = 0x40;

/// A frame header, parsed.
struct Header {
    fin: bool,
    compressed: bool,
    opcode: u8,
    mask: [u8; 4],
    header_len: usize,
    payload_len: u64,
}

impl FrameDecoder {
    /// A decoder refusing messages over `max_message_size` bytes, taking
    /// compressed messages when permessage-deflate was agreed.
    pub fn new(max_message_size: usize, deflate: bool) -> Self {
        Self {
            max_message_size,
            deflate,
            fragments: None,
        }
    }

    /// The next complete message or control frame in `buffer`, removing its bytes;
    /// `Ok(None)` when more bytes are needed.
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Incoming>, FrameError> {
        loop {
            let Some(header) = parse_header(buffer, self.deflate)? else {
                return Ok(None);
            };
            let is_control = header.opcode & 0x8 != 0;
            if is_control {
                if !header.fin {
                    return Err(FrameError::Protocol("fragmented control frame"));
                }
                if header.payload_len > 125 {
                    return Err(FrameError::Protocol("control frame over 125 bytes"));
                }
            } else {
                self.check_data(&header)?;
            }
            // The payload length fits in memory: it is under the message limit
            // or at most 125 bytes.
            let total = header.header_len + header.payload_len as usize;
            if buffer.len() < total {
                buffer.reserve(total - buffer.len());
                return Ok(None);
            }
            buffer.advance(header.header_len);
            let mut payload = buffer.split_to(header.payload_len as usize);
            unmask(&mut payload, header.mask);

            match header.opcode {
                opcode::PING => return Ok(Some(Incoming::Ping(payload.freeze()))),
                opcode::PONG => return Ok(Some(Incoming::Pong)),
                opcode::CLOSE => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return Ok(Some(Incoming::Close(code)));
                }
                opcode::BINARY | opcode::TEXT if header.fin => {
                    return Ok(Some(message(header.opcode, header.compressed, payload)))
                }
                opcode::BINARY | opcode::TEXT => {
                    self.fragments = Some(Fragments {
                        opcode: header.opcode,
                        compressed: header.compressed,
                        bytes: payload,
                    })
                }
                _ => {
                    // A continuation (the only data opcode left).
                    let Some(mut fragments) = self.fragments.take() else {
                        return Err(FrameError::Protocol("continuation without a message"));
                    };
                    fragments.bytes.extend_from_slice(&payload);
                    if !header.fin {
                        self.fragments = Some(fragments);
                        continue;
                    }
                    let Fragments {
                        opcode,
                        compressed,
                        bytes,
                    } = fragments;
                    return Ok(Some(message(opcode, compressed, bytes)));
                }
            }
        }
    }
}

/// A whole data message as handed on: text without its content.
fn message(opcode: u8, compressed: bool, payload: BytesMut) -> Incoming {
    match (opcode, compressed) {
        (opcode::TEXT, _) => Incoming::Text,
        (_, true) => Incoming::Compressed(payload.freeze()),
        (_, false) => Incoming::Binary(payload.freeze()),
    }
}

impl FrameDecoder {
    /// Whether a data frame with `header` may come now: the message stays
    /// under the size limit, and continues or starts as it should.
    fn check_data(&self, header: &Header) -> Result<(), FrameError> {
        let so_far = self.fragments.as_ref().map_or(0, |f| f.bytes.len() as u64);
        let size = so_far.saturating_add(header.payload_len);
        if size > self.max_message_size as u64 {
            return Err(FrameError::TooBig {
                size,
                limit: self.max_message_size,
            });
        }
        match (header.opcode, &self.fragments) {
            (opcode::CONTINUATION, None) => {
                Err(FrameError::Protocol("continuation without a message"))
            }
            (opcode::TEXT | opcode::BINARY, Some(_)) => {
                Err(FrameError::Protocol("new message inside a fragmented one"))
            }
            _ => Ok(()),
        }
    }
}

/// The header at the start of `buffer`, or `None` when it is not complete.
/// RSV1 is accepted on the first frame of a data message when `deflate` was
/// agreed (RFC 7692 section 6), and nowhere else.
fn parse_header(buffer: &[u8], deflate: bool) -> Result<Option<Header>, FrameError> {
    let [first, second, ..] = *buffer else {
        return Ok(None);
    };
    let opcode = first & 0x0F;
    let compressed = first & RSV1 != 0;
    if first & 0x30 != 0
        || (compressed && !(deflate && matches!(opcode, opcode::TEXT | opcode::BINARY)))
    {
        return Err(FrameError::Protocol("reserved bits set"));
    }
    if !matches!(
        opcode,
        opcode::CONTINUATION
            | opcode::TEXT
            | opcode::BINARY
            | opcode::CLOSE
            | opcode::PING
            | opcode::PONG
    ) {
        return Err(FrameError::Protocol("unknown opcode"));
    }
    if second & 0x80 == 0 {
        return Err(FrameError::Protocol("client frame not masked"));
    }
    let (payload_len, len_bytes) = match second & 0x7F {
        126 => match buffer.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 2),
            None => return Ok(None),
        },
        127 => match buffer.get(2..10) {
            Some(b) => {
                let mut len = [0u8; 8];
                len.copy_from_slice(b);
                let len = u64::from_be_bytes(len);
                if len >> 63 != 0 {
                    return Err(FrameError::Protocol("payload length over 2^63"));
                }
                (len, 8)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), 0),
    };
    let mask_at = 2 + len_bytes;
    let Some(mask) = buffer.get(mask_at..mask_at + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin: first & FIN != 0,
        compressed,
        opcode,
        mask: [mask[0], mask[1], mask[2], mask[3]],
        header_len: mask_at + 4,
        payload_len,
    }))
}

/// XOR `payload` with the client's mask, eight bytes at a time.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// A server frame (never masked, never fragmented) carrying `payload`.
fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    encode_with(FIN | opcode, payload)
}

/// A server frame whose first byte is `first` (FIN, RSV1, opcode).
fn encode_with(first: u8, payload: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(first);
    match payload.len() {
        len @ 0..=125 => frame.push(len as u8),
        len @ 126..=0xFFFF => {
            frame.push(126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    Bytes::from(frame)
}

/// A binary frame carrying one y-websocket message.
pub fn binary(message: &[u8]) -> Bytes {
    encode(opcode::BINARY, message)
}

/// A binary frame carrying the message made of `pieces`, written straight
/// into the frame (a large message is not copied twice), and where in the
/// frame the message starts.
pub fn binary_of(pieces: &[&[u8]]) -> (Bytes, usize) {
    let len: usize = pieces.iter().map(|p| p.len()).sum();
    let mut frame = Vec::with_capacity(len + 10);
    frame.push(FIN | opcode::BINARY);
    match len {
        0..=125 => frame.push(len as u8),
        126..=0xFFFF => {
            frame.push(126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            frame.push(127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    let start = frame.len();
    for piece in pieces {
        frame.extend_from_slice(piece);
    }
    (Bytes::from(frame), start)
}

/// A binary frame carrying one y-websocket message compressed with
/// permessage-deflate (RSV1 set; `compressed` without the RFC's tail).
pub fn compressed_binary(compressed: &[u8]) -> Bytes {
    encode_with(FIN | RSV1 | opcode::BINARY, compressed)
}

/// A ping frame.
pub fn ping(payload: &[u8]) -> Bytes {
    encode(opcode::PING, payload)
}

/// A pong frame answering a ping with `payload`.
pub fn pong(payload: &[u8]) -> Bytes {
    encode(opcode::PONG, payload)
}

/// A close frame with `code` and a reason cut to fit a control frame.
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut payload = code.to_be_bytes().to_vec();
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(opcode::CLOSE, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked with `mask`, FIN as given.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            len @ 0..=125 => frame.push(0x80 | len as u8),
            len @ 126..=0xFFFF => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    fn decode_all(decoder: &mut FrameDecoder, bytes: &[u8]) -> Result<Vec<Incoming>, FrameError> {
        let mut buffer = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(message) = decoder.decode(&mut buffer)? {
            out.push(message);
        }
        Ok(out)
    }

    #[test]
    fn binary_messages_of_every_length_class_decode() {
        for len in [0, 1, 7, 8, 125, 126, 1000, 0xFFFF, 0x10000, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let frame = client_frame(true, opcode::BINARY, &payload, [1, 2, 3, 4]);
            let mut decoder = FrameDecoder::new(1 << 20, false);
            let got = decode_all(&mut decoder, &frame).unwrap();
            assert_eq!(
                got,
                vec![Incoming::Binary(Bytes::from(payload))],
                "len {len}"
            );
        }
    }

    #[test]
    fn frames_split_anywhere_decode_once_complete() {
        let payload = b"\x00\x02\x05hello".to_vec();
        let mut bytes = client_frame(true, opcode::BINARY, &payload, [9, 8, 7, 6]);
        bytes.extend(client_frame(true, opcode::PING, b"p", [1, 1, 1, 1]));
        for cut in 0..bytes.len() {
            let mut decoder = FrameDecoder::new(1024, false);
            let mut buffer = BytesMut::from(&bytes[..cut]);
            let mut got = Vec::new();
            while let Some(m) = decoder.decode(&mut buffer).unwrap() {
                got.push(m);
            }
            buffer.extend_from_slice(&bytes[cut..]);
            while let Some(m) = decoder.decode(&mut buffer).unwrap() {
                got.push(m);
            }
            assert_eq!(
                got,
                vec![
                    Incoming::Binary(Bytes::from(payload.clone())),
                    Incoming::Ping(Bytes::from_static(b"p"))
                ],
                "cut at {cut}"
            );
            assert!(buffer.is_empty());
        }
    }

    #[test]
    fn fragments_join_around_control_frames() {
        let mut bytes = client_frame(false, opcode::BINARY, b"ab", [1, 2, 3, 4]);
        bytes.extend(client_frame(true, opcode::PING, b"", [0; 4]));
        bytes.extend(client_frame(
            false,
            opcode::CONTINUATION,
            b"cd",
            [5, 6, 7, 8],
        ));
        bytes.extend(client_frame(true, opcode::CONTINUATION, b"e", [0; 4]));
        let got = decode_all(&mut FrameDecoder::new(10, false), &bytes).unwrap();
        assert_eq!(
            got,
            vec![
                Incoming::Ping(Bytes::new()),
                Incoming::Binary(Bytes::from_static(b"abcde"))
            ]
        );
    }

    #[test]
    fn control_frames_decode() {
        let mut bytes = client_frame(true, opcode::CLOSE, &[0x03, 0xE8, b'b', b'y'], [3; 4]);
        bytes.extend(client_frame(true, opcode::PONG, b"x", [3; 4]));
        bytes.extend(client_frame(true, opcode::CLOSE, b"", [3; 4]));
        let got = decode_all(&mut FrameDecoder::new(10, false), &bytes).unwrap();
        assert_eq!(
            got,
            vec![
                Incoming::Close(Some(1000)),
                Incoming::Pong,
                Incoming::Close(None)
            ]
        );
    }

    #[test]
    fn text_messages_are_consumed_and_reported_without_content() {
        let mut bytes = client_frame(false, opcode::TEXT, b"hel", [1; 4]);
        bytes.extend(client_frame(true, opcode::CONTINUATION, b"lo", [2; 4]));
        bytes.extend(client_frame(true, opcode::TEXT, b"!", [3; 4]));
        bytes.extend(client_frame(true, opcode::BINARY, b"b", [4; 4]));
        let got = decode_all(&mut FrameDecoder::new(100, false), &bytes).unwrap();
        assert_eq!(
            got,
            vec![
                Incoming::Text,
                Incoming::Text,
                Incoming::Binary(Bytes::from_static(b"b"))
            ]
        );
    }

    #[test]
    fn oversized_messages_are_refused_from_their_header() {
        let header = &client_frame(true, opcode::BINARY, &[0; 2000], [0; 4])[..8];
        let err = decode_all(&mut FrameDecoder::new(1000, false), header).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooBig {
                size: 2000,
                limit: 1000
            }
        );
        assert_eq!(err.close_code(), 1009);
        // Fragments count together.
        let mut bytes = client_frame(false, opcode::BINARY, &[0; 600], [0; 4]);
        bytes.extend(client_frame(true, opcode::CONTINUATION, &[0; 600], [0; 4]));
        let err = decode_all(&mut FrameDecoder::new(1000, false), &bytes).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooBig {
                size: 1200,
                limit: 1000
            }
        );
    }

    #[test]
    fn protocol_violations_are_refused() {
        let unmasked = [0x82, 0x01, 0x00];
        let reserved = client_frame(true, opcode::BINARY, b"x", [0; 4])
            .into_iter()
            .enumerate()
            .map(|(i, b)| if i == 0 { b | 0x40 } else { b })
            .collect::<Vec<_>>();
        let unknown = client_frame(true, 0x3, b"x", [0; 4]);
        let lone_continuation = client_frame(true, opcode::CONTINUATION, b"x", [0; 4]);
        let fragmented_ping = client_frame(false, opcode::PING, b"x", [0; 4]);
        let long_ping = client_frame(true, opcode::PING, &[0; 126], [0; 4]);
        let mut interleaved = client_frame(false, opcode::BINARY, b"x", [0; 4]);
        interleaved.extend(client_frame(true, opcode::BINARY, b"y", [0; 4]));
        for (name, bytes) in [
            ("unmasked", unmasked.to_vec()),
            ("reserved", reserved),
            ("unknown", unknown),
            ("lone continuation", lone_continuation),
            ("fragmented ping", fragmented_ping),
            ("long ping", long_ping),
            ("interleaved", interleaved),
        ] {
            let err = decode_all(&mut FrameDecoder::new(1000, false), &bytes).unwrap_err();
            assert!(matches!(err, FrameError::Protocol(_)), "{name}: {err:?}");
            assert_eq!(err.close_code(), 1002, "{name}");
        }
    }

    /// `frame` with RSV1 set.
    fn rsv1(mut frame: Vec<u8>) -> Vec<u8> {
        frame[0] |= RSV1;
        frame
    }

    #[test]
    fn rsv1_marks_compressed_messages_only_where_deflate_was_agreed() {
        let mask = [1, 2, 3, 4];
        let whole = rsv1(client_frame(true, opcode::BINARY, b"zzz", mask));
        let got = decode_all(&mut FrameDecoder::new(100, true), &whole).unwrap();
        assert_eq!(got, vec![Incoming::Compressed(Bytes::from_static(b"zzz"))]);
        // Fragmented: RSV1 on the first frame only, the payloads joined.
        let mut fragmented = rsv1(client_frame(false, opcode::BINARY, b"ab", mask));
        fragmented.extend(client_frame(true, opcode::PING, b"p", mask));
        fragmented.extend(client_frame(true, opcode::CONTINUATION, b"cd", mask));
        let got = decode_all(&mut FrameDecoder::new(100, true), &fragmented).unwrap();
        assert_eq!(
            got,
            vec![
                Incoming::Ping(Bytes::from_static(b"p")),
                Incoming::Compressed(Bytes::from_static(b"abcd"))
            ]
        );
        // Uncompressed messages still come as they are.
        let plain = client_frame(true, opcode::BINARY, b"x", mask);
        let got = decode_all(&mut FrameDecoder::new(100, true), &plain).unwrap();
        assert_eq!(got, vec![Incoming::Binary(Bytes::from_static(b"x"))]);
        // Refused: RSV1 without the extension, on a continuation, on a
        // control frame; RSV2 and RSV3 always.
        let mut on_continuation = client_frame(false, opcode::BINARY, b"a", mask);
        on_continuation.extend(rsv1(client_frame(true, opcode::CONTINUATION, b"b", mask)));
        let mut rsv2 = client_frame(true, opcode::BINARY, b"x", mask);
        rsv2[0] |= 0x20;
        for (deflate, bytes) in [
            (false, whole.clone()),
            (true, on_continuation),
            (true, rsv1(client_frame(true, opcode::PING, b"", mask))),
            (true, rsv2),
        ] {
            let err = decode_all(&mut FrameDecoder::new(100, deflate), &bytes).unwrap_err();
            assert_eq!(err, FrameError::Protocol("reserved bits set"));
        }
    }

    #[test]
    fn server_frames_are_unmasked_with_the_shortest_length() {
        assert_eq!(binary(b"ab").as_ref(), b"\x82\x02ab");
        let frame = binary(&[7; 300]);
        assert_eq!(&frame[..4], &[0x82, 126, 0x01, 0x2C]);
        assert_eq!(frame.len(), 304);
        let frame = binary(&[7; 70_000]);
        assert_eq!(&frame[..2], &[0x82, 127]);
        assert_eq!(&frame[2..10], &70_000u64.to_be_bytes());
        assert_eq!(compressed_binary(b"ab").as_ref(), b"\xc2\x02ab");
        assert_eq!(ping(b"").as_ref(), b"\x89\x00");
        assert_eq!(pong(b"x").as_ref(), b"\x8a\x01x");
        assert_eq!(close(1001, "bye").as_ref(), b"\x88\x05\x03\xe9bye");
        let long = "é".repeat(100);
        let frame = close(1000, &long);
        assert!(frame.len() <= 2 + 125);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }
}
