//! The WebSocket frame decoder on arbitrary client bytes, as a socket delivers
//! them: in pieces cut anywhere. Any input must give frames or an error, never
//! a panic, and the same ones however the bytes are cut, since a client does
//! not choose how its bytes are read.
//!
//! Input layout: byte 0 sets the message size limit (in units of 8 bytes, so
//! that small limits and fragmented messages crossing them are reached); byte 1
//! gives how many chunk lengths follow (0 to 7); those bytes are the lengths of
//! the successive reads, reused in turn (its top bit: permessage-deflate was
//! agreed, so RSV1 may mark messages); the rest is what the client sent.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use websocket::socket::{FrameDecoder, FrameError, Incoming};

/// Largest control frame payload (RFC 6455 section 5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// What the decoder gave, in order, up to and including the first error, and
/// the bytes it left undecoded when no error ended it.
#[derive(Debug, PartialEq)]
struct Decoded {
    frames: Vec<Result<Incoming, FrameError>>,
    left: Option<Vec<u8>>,
}

/// Decode everything `buffer` holds now into `out`; false once an error ended
/// the connection.
fn drain(decoder: &mut FrameDecoder, buffer: &mut BytesMut, out: &mut Decoded) -> bool {
    loop {
        match decoder.decode(buffer) {
            Ok(Some(incoming)) => out.frames.push(Ok(incoming)),
            Ok(None) => return true,
            Err(err) => {
                out.frames.push(Err(err));
                return false;
            }
        }
    }
}

/// Feed `bytes` to a fresh decoder in reads of the given lengths (all at once
/// when there are none).
fn decode(max: usize, deflate: bool, bytes: &[u8], reads: &[u8]) -> Decoded {
    let mut decoder = FrameDecoder::new(max, deflate);
    let mut buffer = BytesMut::new();
    let mut out = Decoded {
        frames: Vec::new(),
        left: None,
    };
    let mut rest = bytes;
    let mut lengths = reads.iter().cycle();
    while !rest.is_empty() {
        let take = match lengths.next() {
            Some(&len) => usize::from(len).clamp(1, rest.len()),
            None => rest.len(),
        };
        let (read, after) = rest.split_at(take);
        rest = after;
        buffer.extend_from_slice(read);
        if !drain(&mut decoder, &mut buffer, &mut out) {
            return out;
        }
    }
    out.left = Some(buffer.to_vec());
    out
}

fuzz_target!(|data: &[u8]| {
    let [size, count, rest @ ..] = data else {
        return;
    };
    let max = usize::from(*size) * 8;
    let (reads, bytes) = rest.split_at(usize::from(count % 8).min(rest.len()));
    let deflate = count & 0x80 != 0;
    let whole = decode(max, deflate, bytes, &[]);
    let chunked = decode(max, deflate, bytes, reads);
    assert_eq!(whole, chunked, "cut into reads of {reads:?}");
    for frame in &whole.frames {
        match frame {
            Ok(Incoming::Binary(message) | Incoming::Compressed(message)) => {
                assert!(message.len() <= max)
            }
            Ok(Incoming::Ping(payload)) => assert!(payload.len() <= MAX_CONTROL_PAYLOAD),
            _ => {}
        }
    }
    // Every byte is either decoded or left for the next read.
    if let Some(left) = &whole.left {
        assert!(left.len() <= bytes.len());
    }
});
