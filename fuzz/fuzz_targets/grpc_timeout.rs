//! `grpc-timeout` as a peer sends it, on the data channel and as an HTTP header.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = tether_rpc::framing::parse_grpc_timeout(&text);
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-timeout", value);
        let _ = tether_machine::deadline::requested(&headers);
    }
});
