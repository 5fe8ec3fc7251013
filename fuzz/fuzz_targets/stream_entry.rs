//! A stream entry (field `m`) as another instance, or anyone with Redis access,
//! may have written it: read as y-redis reads it, and its awareness prefix.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|entry: &[u8]| {
    let _ = websocket::protocol::decode_stream_entry(entry);
    let _ = websocket::protocol::AwarenessUpdate::decode(entry);
    let _ = websocket::protocol::AwarenessUpdate::decode_prefix(entry);
});
