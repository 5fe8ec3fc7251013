//! The permessage-deflate inflater on arbitrary compressed client messages:
//! any input must inflate or be refused, never panic, and never give more
//! than the size limit; and what the server compresses must inflate back to
//! itself.
//!
//! Input layout: byte 0 sets the size limit (in units of 64 bytes) and, in its
//! top bit, whether the client keeps its compression context between
//! messages; byte 1 cuts the rest into two messages at that fraction, so that
//! a context carried from one message into the next is reached too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use websocket::socket::deflate::{compress, Agreed, InflateError, Inflater};

fuzz_target!(|data: &[u8]| {
    let [flags, cut, rest @ ..] = data else {
        return;
    };
    let limit = usize::from(flags & 0x7F) * 64;
    let agreed = Agreed {
        server_window_bits: 15,
        client_no_context_takeover: flags & 0x80 == 0,
        client_window_bits: None,
    };
    let at = rest.len() * usize::from(*cut) / 256;
    let mut inflater = Inflater::new(&agreed);
    for message in [&rest[..at], &rest[at..]] {
        match inflater.inflate(message, limit) {
            Ok(inflated) => assert!(inflated.len() <= limit),
            Err(InflateError::TooBig(l)) => assert_eq!(l, limit),
            Err(InflateError::Corrupt(_)) => break,
        }
    }
    // The server's own compression inflates back, for any window it uses.
    for bits in [9u8, 15] {
        let compressed = compress(rest, bits, 6);
        let back = Inflater::new(&agreed)
            .inflate(&compressed, rest.len())
            .expect("the server's compression inflates");
        assert_eq!(back, rest);
    }
});
