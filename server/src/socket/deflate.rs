//! permessage-deflate (RFC 7692): what the server agrees to with a client that
//! offers it, inflating the client's compressed messages within the message
//! size limit, and compressing a server message once for every member that
//! agreed to the same parameters.
//!
//! The server always answers with `server_no_context_takeover`: each server
//! message is compressed on its own, so one compressed copy of a merged
//! message (or of an initial sync) is the same bytes for every member, as a
//! shared compressor gives. Client messages are inflated whether the client
//! keeps its compression context between messages or not.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const NAME: &str = "permessage-deflate";

/// The four bytes a sender removes from the end of each compressed message
/// (RFC 7692 §7.2.1) and the receiver appends before inflating.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The LZ77 window the RFC allows at most, in bits.
pub(crate) const MAX_WINDOW_BITS: u8 = 15;

/// The smallest window the server compresses with: zlib has no raw deflate
/// with a 256-byte window, so an offer that limits the server to 8 bits is
/// declined (RFC 7692 §7.1.2.1 lets the server decline any offer).
const MIN_SERVER_WINDOW_BITS: u8 = 9;

/// Bytes inflated per step, so that a message is inflated in bounded pieces
/// and its size checked as it grows.
const INFLATE_STEP: usize = 64 * 1024;

/// How the server negotiates and compresses; from the `[websocket]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateSettings {
    /// Negotiate the extension with clients that offer it.
    pub enabled: bool,
    /// Messages shorter than this go uncompressed (compressing them costs
    /// more than the bytes it saves).
    pub min_size: usize,
    /// zlib compression level, 0 (none) to 9 (smallest).
    pub level: u32,
    /// Let clients keep their compression context between messages (better
    /// compression of what they send, at the price of an inflate window kept
    /// per connection); without it the server answers
    /// `client_no_context_takeover` and keeps nothing between messages.
    pub client_context_takeover: bool,
}

impl Default for DeflateSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            min_size: 128,
            level: 6,
            client_context_takeover: false,
        }
    }
}

/// What the server agreed to with one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The window the server compresses with (the client's
    /// `server_max_window_bits`, else 15).
    pub server_window_bits: u8,
    /// Whether the client resets its context after each message.
    pub client_no_context_takeover: bool,
    /// The client's window, when the server limited it
    /// (`client_max_window_bits`).
    pub client_window_bits: Option<u8>,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value of the server's answer.
    pub fn response(&self) -> String {
        let mut answer = format!("{NAME}; server_no_context_takeover");
        if self.client_no_context_takeover {
            answer.push_str("; client_no_context_takeover");
        }
        if self.server_window_bits < MAX_WINDOW_BITS {
            answer.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_window_bits
            ));
        }
        if let Some(bits) = self.client_window_bits {
            answer.push_str(&format!("; client_max_window_bits={bits}"));
        }
        answer
    }
}

/// The first `permessage-deflate` offer of the client's
/// `Sec-WebSocket-Extensions` values that the server accepts, as agreed; `None`
/// when there is none (or the extension is off): the connection is then
/// uncompressed. Offers with unknown, repeated or invalid parameters are
/// declined, as RFC 7692 §5 requires, and the next one is tried.
pub fn negotiate<'a>(
    offers: impl IntoIterator<Item = &'a str>,
    settings: &DeflateSettings,
) -> Option<Agreed> {
    if !settings.enabled {
        return None;
    }
    offers
        .into_iter()
        .flat_map(|value| value.split(','))
        .find_map(|offer| accept(offer, settings))
}

/// One offer, accepted or declined.
fn accept(offer: &str, settings: &DeflateSettings) -> Option<Agreed> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(NAME) {
        return None;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut server_window_bits = MAX_WINDOW_BITS;
    let mut client_no_context_takeover = !settings.client_context_takeover;
    let mut client_window_bits = None;
    for part in parts {
        let (name, value) = match part.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (part, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        match (name.as_str(), value) {
            ("server_no_context_takeover", None) => {}
            ("client_no_context_takeover", None) => client_no_context_takeover = true,
            ("server_max_window_bits", Some(value)) => {
                server_window_bits = window_bits(value)?;
                if server_window_bits < MIN_SERVER_WINDOW_BITS {
                    return None;
                }
            }
            // The client can limit its window: the server then may, and
            // does not (any window up to 15 bits inflates with a 15-bit one).
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(value)) => {
                client_window_bits = Some(window_bits(value)?).filter(|b| *b < MAX_WINDOW_BITS);
            }
            _ => return None,
        }
        seen.push(name);
    }
    Some(Agreed {
        server_window_bits,
        client_no_context_takeover,
        client_window_bits,
    })
}

/// A window size parameter: a decimal 8 to 15, without leading zeros.
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value
        .parse::<u8>()
        .ok()
        .filter(|bits| (8..=15).contains(bits))
}

/// Why a compressed client message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates to more than the message size limit (close code 1009).
    #[error("message inflates past {0} bytes")]
    TooBig(usize),
    /// It is not a valid deflate stream (close code 1007).
    #[error("invalid compressed message: {0}")]
    Corrupt(String),
}

/// Inflates one client's compressed messages. Without context takeover it
/// holds no state between messages (its decompressor is made per message and
/// dropped), so an idle connection costs nothing here.
pub struct Inflater {
    /// Kept between messages only while the client takes its context over.
    kept: Option<Decompress>,
    context_takeover: bool,
}

impl Inflater {
    /// An inflater for a client that does or does not keep its context.
    pub fn new(agreed: &Agreed) -> Self {
        Self {
            kept: None,
            context_takeover: !agreed.client_no_context_takeover,
        }
    }

    /// Inflate one whole message (the payloads of its frames, concatenated),
    /// refusing it as soon as its inflated size passes `limit`.
    pub fn inflate(&mut self, compressed: &[u8], limit: usize) -> Result<Bytes, InflateError> {
        let mut decompress = match self.kept.take() {
            Some(kept) => kept,
            None => Decompress::new_with_window_bits(false, MAX_WINDOW_BITS),
        };
        let inflated = inflate_with(&mut decompress, compressed, limit);
        if self.context_takeover && inflated.is_ok() {
            self.kept = Some(decompress);
        }
        inflated
    }
}

/// Inflate `compressed` and the RFC's tail with `decompress`, refusing the
/// message once its output passes `limit`: the output grows a bounded step at
/// a time and is never allowed more than one byte past the limit, so a small
/// frame that would inflate to gigabytes costs at most `limit + 1` bytes.
fn inflate_with(
    decompress: &mut Decompress,
    compressed: &[u8],
    limit: usize,
) -> Result<Bytes, InflateError> {
    let mut out = Vec::new();
    for input in [compressed, &TAIL[..]] {
        let mut offset = 0;
        loop {
            if out.len() == out.capacity() {
                let room = INFLATE_STEP.min(limit + 1 - out.len()).max(1);
                out.reserve_exact(room);
            }
            let (read, wrote) = (decompress.total_in(), out.len());
            let status = decompress
                .decompress_vec(&input[offset..], &mut out, FlushDecompress::Sync)
                .map_err(|err| InflateError::Corrupt(err.to_string()))?;
            offset += (decompress.total_in() - read) as usize;
            if out.len() > limit {
                return Err(InflateError::TooBig(limit));
            }
            if status == Status::StreamEnd {
                // The client ended its deflate stream (a final block): the
                // message is complete, and a next one starts a new stream.
                decompress.reset(false);
                return Ok(Bytes::from(out));
            }
            let full = out.len() == out.capacity();
            if offset == input.len() && !full {
                break;
            }
            if !full && decompress.total_in() == read && out.len() == wrote {
                return Err(InflateError::Corrupt("truncated deflate data".into()));
            }
        }
    }
    Ok(Bytes::from(out))
}

/// Compress one server message on its own (no context kept, so the bytes are
/// the same for every member agreed to `window_bits`), without the RFC's
/// tail: the payload of a frame with RSV1 set.
///
/// Each thread keeps one compressor and resets it between messages: a zlib
/// compressor holds a few hundred kilobytes of tables, which are not worth
/// allocating and clearing for every message.
pub fn compress(message: &[u8], window_bits: u8, level: u32) -> Bytes {
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Option<(u8, u32, Compress)>> =
            const { std::cell::RefCell::new(None) };
    }
    let bits = window_bits.clamp(MIN_SERVER_WINDOW_BITS, MAX_WINDOW_BITS);
    let level = level.min(9);
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let compress = match &mut *cell {
            Some((b, l, compress)) if *b == bits && *l == level => {
                compress.reset();
                compress
            }
            slot => {
                let fresh = Compress::new_with_window_bits(Compression::new(level), false, bits);
                &mut slot.insert((bits, level, fresh)).2
            }
        };
        compress_with(compress, message)
    })
}

/// Raw deflate of `message` with `compress`, sync-flushed, tail removed.
fn compress_with(compress: &mut Compress, message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(message.len() / 2 + 64);
    let mut offset = 0;
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(64));
        }
        let read = compress.total_in();
        // Sync flush ends the output with an empty stored block, whose last
        // four bytes are the tail removed below.
        let flushed = compress.compress_vec(&message[offset..], &mut out, FlushCompress::Sync);
        offset += (compress.total_in() - read) as usize;
        if flushed.is_err() || (offset == message.len() && out.len() < out.capacity()) {
            break;
        }
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DeflateSettings {
        DeflateSettings::default()
    }

    #[test]
    fn offers_are_accepted_declined_and_answered_as_the_rfc_says() {
        let agreed = |offer: &str| negotiate([offer], &settings());
        // What browsers and Node `ws` offer.
        let plain = agreed("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(
            plain.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        let limited =
            agreed("permessage-deflate; server_max_window_bits=10; client_max_window_bits=12")
                .unwrap();
        assert_eq!(limited.server_window_bits, 10);
        assert_eq!(limited.client_window_bits, Some(12));
        assert_eq!(
            limited.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12"
        );
        // Declined: unknown, repeated, valueless or out-of-range parameters, a
        // window the server cannot compress with, another extension.
        for declined in [
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_no_context_takeover=1",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(agreed(declined), None, "{declined}");
        }
        // A declined offer lets the next one be tried, in one header or several.
        let second = negotiate(
            ["permessage-deflate; server_max_window_bits=8, permessage-deflate"],
            &settings(),
        );
        assert_eq!(second.map(|a| a.server_window_bits), Some(15));
        let quoted = agreed("permessage-deflate; client_max_window_bits=\"10\"");
        assert_eq!(quoted.and_then(|a| a.client_window_bits), Some(10));
        // Off: nothing is agreed.
        let off = DeflateSettings {
            enabled: false,
            ..settings()
        };
        assert_eq!(negotiate(["permessage-deflate"], &off), None);
    }

    #[test]
    fn client_context_takeover_is_left_to_the_client_when_allowed() {
        let keep = DeflateSettings {
            client_context_takeover: true,
            ..settings()
        };
        let agreed = negotiate(["permessage-deflate"], &keep).unwrap();
        assert!(!agreed.client_no_context_takeover);
        assert_eq!(
            agreed.response(),
            "permessage-deflate; server_no_context_takeover"
        );
        let asked = negotiate(["permessage-deflate; client_no_context_takeover"], &keep).unwrap();
        assert!(asked.client_no_context_takeover);
    }

    /// What a client sends: raw deflate, sync-flushed, tail removed; with
    /// `compress` kept across messages when the client takes its context over.
    fn client_message(compress: &mut Compress, message: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(message.len() + 64);
        compress
            .compress_vec(message, &mut out, FlushCompress::Sync)
            .unwrap();
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - 4);
        out
    }

    fn agreed(no_context_takeover: bool) -> Agreed {
        Agreed {
            server_window_bits: 15,
            client_no_context_takeover: no_context_takeover,
            client_window_bits: None,
        }
    }

    #[test]
    fn messages_inflate_with_and_without_client_context_takeover() {
        // Without repetition inside a message, so that only a context taken
        // over makes the second copy small.
        let mut seed = 7u32;
        let text: Vec<u8> = (0..4000)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (seed >> 16) as u8
            })
            .collect();
        for bits in [9u8, 12, 15] {
            // Context kept: the second message refers back into the first.
            let mut client = Compress::new_with_window_bits(Compression::default(), false, bits);
            let mut inflater = Inflater::new(&agreed(false));
            let first = client_message(&mut client, &text);
            let second = client_message(&mut client, &text);
            if bits == 15 {
                assert!(second.len() < first.len() / 4, "context taken over");
            }
            assert_eq!(inflater.inflate(&first, 1 << 20).unwrap(), text);
            assert_eq!(inflater.inflate(&second, 1 << 20).unwrap(), text);

            // Context reset: each message on its own; the inflater keeps nothing.
            let mut inflater = Inflater::new(&agreed(true));
            for _ in 0..3 {
                let mut client =
                    Compress::new_with_window_bits(Compression::default(), false, bits);
                let message = client_message(&mut client, &text);
                assert_eq!(inflater.inflate(&message, 1 << 20).unwrap(), text);
                assert!(inflater.kept.is_none());
            }
        }
        // An empty message and a message ending its stream (BFINAL) inflate too.
        let mut inflater = Inflater::new(&agreed(false));
        let mut client = Compress::new(Compression::default(), false);
        assert_eq!(
            inflater
                .inflate(&client_message(&mut client, b""), 10)
                .unwrap(),
            b""[..]
        );
        let mut finished = Vec::with_capacity(256);
        Compress::new(Compression::default(), false)
            .compress_vec(b"final", &mut finished, FlushCompress::Finish)
            .unwrap();
        assert_eq!(inflater.inflate(&finished, 10).unwrap(), b"final"[..]);
        assert_eq!(
            inflater
                .inflate(
                    &client_message(&mut Compress::new(Compression::default(), false), b"next"),
                    10
                )
                .unwrap(),
            b"next"[..]
        );
    }

    #[test]
    fn a_small_frame_that_inflates_past_the_limit_is_refused_early() {
        let zeros = vec![0u8; 50 * 1024 * 1024];
        let mut client = Compress::new(Compression::best(), false);
        let bomb = client_message(&mut client, &zeros);
        assert!(bomb.len() < 64 * 1024, "{} bytes", bomb.len());
        let mut inflater = Inflater::new(&agreed(true));
        assert_eq!(
            inflater.inflate(&bomb, 1024 * 1024),
            Err(InflateError::TooBig(1024 * 1024))
        );
        // Exactly at the limit passes.
        let mut client = Compress::new(Compression::best(), false);
        let at_limit = client_message(&mut client, &zeros[..1000]);
        assert_eq!(inflater.inflate(&at_limit, 1000).unwrap().len(), 1000);
        assert_eq!(
            inflater.inflate(&at_limit, 999),
            Err(InflateError::TooBig(999))
        );
    }

    #[test]
    fn garbage_is_refused_as_corrupt() {
        let mut inflater = Inflater::new(&agreed(true));
        assert!(matches!(
            inflater.inflate(&[0xff, 0xff, 0xff, 0xff, 0x00], 1 << 20),
            Err(InflateError::Corrupt(_))
        ));
    }

    #[test]
    fn a_server_message_compresses_once_and_inflates_for_any_client() {
        let message: Vec<u8> = (0..20_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for bits in [9u8, 10, 15] {
            let compressed = compress(&message, bits, 6);
            assert!(compressed.len() < message.len() / 2);
            assert!(!compressed.ends_with(&TAIL));
            // The client inflates with the window it allowed.
            let mut client = Decompress::new_with_window_bits(false, bits);
            let mut input = compressed.to_vec();
            input.extend_from_slice(&TAIL);
            let mut out = Vec::with_capacity(message.len() + 16);
            client
                .decompress_vec(&input, &mut out, FlushDecompress::Sync)
                .unwrap();
            assert_eq!(out, message);
        }
        let empty = compress(b"", 15, 6);
        let mut input = empty.to_vec();
        input.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity(16);
        Decompress::new(false)
            .decompress_vec(&input, &mut out, FlushDecompress::Sync)
            .unwrap();
        assert!(out.is_empty() && empty.len() <= 2, "{empty:?}");
    }
}
