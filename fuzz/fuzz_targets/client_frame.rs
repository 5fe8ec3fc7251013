//! A client's WebSocket frame: decoded strictly and turned into what the
//! server does with it. Any input must give a value or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    let _ = websocket::protocol::decode_message(frame);
    let _ = websocket::protocol::client_action(frame);
});
