//! The machine's side of gRPC over a data channel: any sequence of data-channel messages
//! (each input byte pair gives the next message's length) must give events or errors, never
//! a panic, and keep the codec's limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_rpc::framing::ServerStreams;

fuzz_target!(|data: &[u8]| {
    let mut codec = ServerStreams::default();
    let mut rest = data;
    while rest.len() >= 2 {
        let n = (usize::from(rest[0]) << 8 | usize::from(rest[1])).min(rest.len() - 2);
        let (message, tail) = rest[2..].split_at(n);
        let _ = codec.receive(message);
        rest = tail;
    }
    assert!(codec.open_streams() <= 256);
});
