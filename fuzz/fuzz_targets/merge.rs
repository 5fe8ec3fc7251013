//! Merging the entries of one stream read: the input is split into messages
//! (each preceded by a one-byte length), as the subscriber hands them over.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut messages = Vec::new();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        messages.push(&tail[..len]);
        rest = &tail[len..];
    }
    let _ = websocket::protocol::merge_messages(&messages);
});
