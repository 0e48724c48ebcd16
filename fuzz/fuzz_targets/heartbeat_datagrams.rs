//! Heartbeat datagrams as a peer sends them: a UDP request the machine reads (its fields
//! before the tag, then the tag), a UDP ack the client reads, and an ack on the WebRTC
//! heartbeat channel. Nothing may panic, and nothing but a request signed with the key may
//! pass as signed: a forged input that verifies would be a break of HMAC-SHA256.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_rpc::heartbeat::{decode_ack, udp};

fuzz_target!(|data: &[u8]| {
    let secret = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7u8; 32]);
    if let Some((id, seq)) = udp::request_fields(data) {
        let key = udp::derive_key(&secret, &id);
        let signed = udp::request_is_signed_by(&key, data);
        // Only what the key's holder could have made verifies.
        assert_eq!(signed, udp::encode_request(&key, &id, seq)[..] == data[..]);
    }
    let id: [u8; 16] = data
        .get(4..20)
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0u8; 16]);
    let key = udp::derive_key(&secret, &id);
    if let Some((seq, ack)) = udp::decode_ack(&key, &id, data) {
        assert_eq!(udp::encode_ack(&key, &id, seq, ack)[..], data[..]);
    }
    let _ = decode_ack(data);
});
