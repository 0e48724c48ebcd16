//! Session heartbeats as datagrams: Tether's own addition to the WebRTC transport, used by
//! Tether's client and machine only (Viam's SDKs never open the channel, so nothing changes
//! for them).
//!
//! On the unordered, never-retransmitted channel `tether-heartbeat` (negotiated id 1000), the
//! client sends, every heartbeat period, one message holding a `SendSessionHeartbeatRequest`
//! exactly as it would send it as a call's message. The machine applies it as that call (the
//! same owner checks, on behalf of the peer connection's authenticated caller) and answers
//! with one message: an [`Ack`] byte followed by the request's bytes, so the client knows
//! which session it concerns. The same heartbeat still goes as a call on the reliable `data`
//! channel; a datagram that is lost costs nothing, and one lost packet no longer stalls the
//! heartbeats behind it.

use bytes::{BufMut, Bytes, BytesMut};

/// The largest heartbeat datagram either side accepts (an id is 36 bytes); larger ones are
/// dropped unread.
pub const MAX_DATAGRAM: usize = 256;

/// The machine's answer to one heartbeat datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// The session lives on.
    Alive = 0,
    /// The machine has no such session for this caller (as `SESSION_EXPIRED`).
    Expired = 1,
    /// The heartbeat was refused for another reason (malformed, or an error).
    Refused = 2,
}

/// The answer to the heartbeat `request`.
pub fn encode_ack(ack: Ack, request: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(1 + request.len());
    out.put_u8(ack as u8);
    out.put_slice(request);
    out.freeze()
}

/// The ack and the request it answers, if `message` is an answer at all.
pub fn decode_ack(message: &[u8]) -> Option<(Ack, &[u8])> {
    if message.len() > MAX_DATAGRAM + 1 {
        return None;
    }
    let (&first, request) = message.split_first()?;
    let ack = match first {
        0 => Ack::Alive,
        1 => Ack::Expired,
        2 => Ack::Refused,
        _ => return None,
    };
    Some((ack, request))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_round_trip_and_junk_is_not_an_ack() {
        for ack in [Ack::Alive, Ack::Expired, Ack::Refused] {
            let encoded = encode_ack(ack, b"\x0a\x02id");
            assert_eq!(decode_ack(&encoded), Some((ack, &b"\x0a\x02id"[..])));
        }
        assert_eq!(decode_ack(b""), None);
        assert_eq!(decode_ack(b"\x07abc"), None);
        assert_eq!(decode_ack(&vec![0u8; MAX_DATAGRAM + 2]), None);
    }
}
