//! Tokens as clients present them: in the query string or the
//! `Sec-WebSocket-Protocol` header, then verified against a fixed key.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use websocket::auth::{self, Authenticator};

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        let (_private, public) = auth::generate_key_pair().expect("key pair");
        Authenticator::new(&public, "http://127.0.0.1:9/", Duration::from_secs(1))
            .expect("authenticator")
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = authenticator().verify_token(&text);
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(data) {
        headers.insert("sec-websocket-protocol", value);
    }
    if let Some(token) = auth::token_from_request(&headers, Some(&text)) {
        let _ = authenticator().verify_token(&token.token);
    }
});
