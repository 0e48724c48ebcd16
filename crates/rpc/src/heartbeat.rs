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
//!
//! Every heartbeat Tether's client sends says when it was sent, on the client's steady clock
//! ([`steady_micros`]): a datagram in field 15 of its request ([`encode_datagram`]), a call
//! in header [`SENT_HEADER`], a UDP datagram in its sequence number. The machine counts the
//! session's window from then rather than from the arrival (the session manager's
//! `heartbeat_sent`), so heartbeats that sat in a backlog and arrive after their client died
//! keep nothing alive.
//! Viam's SDKs send neither; their heartbeats count from their arrival, as on viam-server.
//!
//! On direct gRPC the same role is played by [`udp`]: authenticated heartbeat datagrams to the
//! machine's port number over UDP, beside the TCP connections that still carry every call.

use bytes::{BufMut, Bytes, BytesMut};

/// The header of a heartbeat call that says when it was sent: [`steady_micros`] in decimal.
pub const SENT_HEADER: &str = "tether-sent-us";

/// A heartbeat datagram's message as Tether reads and writes it: a
/// `SendSessionHeartbeatRequest` (field 1, the id) with, in field 15, when it was sent
/// (fixed64, [`steady_micros`]). Viam's message has field 1 only; its decoders skip 15.
#[derive(Clone, PartialEq, prost::Message)]
struct TimedHeartbeat {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(fixed64, optional, tag = "15")]
    sent_us: Option<u64>,
}

/// The heartbeat datagram for session `id`, sent at `sent_us`.
pub fn encode_datagram(id: &str, sent_us: u64) -> Bytes {
    use prost::Message;
    Bytes::from(
        TimedHeartbeat {
            id: id.to_string(),
            sent_us: Some(sent_us),
        }
        .encode_to_vec(),
    )
}

/// The session id and send time (if given) of a heartbeat datagram.
pub fn decode_datagram(message: &[u8]) -> Option<(String, Option<u64>)> {
    use prost::Message;
    TimedHeartbeat::decode(message)
        .ok()
        .map(|h| (h.id, h.sent_us))
}

/// Microseconds on this process's steady clock, from an origin near the Unix epoch time at
/// which it was first read: they always rise (a wall clock stepped back does not move
/// them), and a later process starts above an earlier one.
pub fn steady_micros() -> u64 {
    use std::sync::OnceLock;
    use std::time::{Instant, SystemTime, UNIX_EPOCH};
    static ORIGIN: OnceLock<(Instant, u64)> = OnceLock::new();
    let (at, epoch_us) = *ORIGIN.get_or_init(|| {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        (Instant::now(), since)
    });
    epoch_us.saturating_add(at.elapsed().as_micros() as u64)
}

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

pub mod udp {
    //! Heartbeat datagrams over UDP, for sessions started on direct gRPC: Tether's own
    //! addition (Viam's SDKs never see the key header, so nothing changes for them).
    //!
    //! A TCP connection that loses one segment holds back every byte behind it until the
    //! segment is retransmitted, which on a lossy, jittery link takes longer than a short
    //! window; UDP holds back nothing. So the machine also listens for heartbeats on UDP at
    //! its gRPC port number, and tells a direct client so in StartSession's response header
    //! [`KEY_HEADER`]: the session's heartbeat key, derived from a secret of the machine's
    //! process and the session id ([`derive_key`]), so the machine stores no keys.
    //!
    //! A request is `"THB1"`, the session id (16 bytes), a sequence number (8 bytes, big
    //! endian: the sender's [`super::steady_micros`] when it sent it) and HMAC-SHA256 with
    //! the session's key over those (32 bytes): 60 bytes. The machine answers only a request
    //! whose tag verifies and whose sequence number is above every one it accepted for the
    //! session (a replayed datagram keeps nothing alive), with `"THA1"`, the id, the sequence
    //! number, an [`Ack`] byte and HMAC-SHA256 over those: 61 bytes. Anything else gets no
    //! answer, so the port reflects nothing to a forger.
    //!
    //! Whoever holds the key can keep the session alive: it travels only inside the
    //! connection that started the session (TLS, when the machine serves TLS).

    use super::Ack;
    use base64::Engine as _;
    use ring::hmac;

    /// StartSession's response header with the session's key (base64url, no padding), sent
    /// only to direct gRPC callers and only when the machine listens for datagrams.
    pub const KEY_HEADER: &str = "tether-heartbeat-key";
    /// A request's first bytes.
    pub const REQUEST_MAGIC: [u8; 4] = *b"THB1";
    /// An ack's first bytes.
    pub const ACK_MAGIC: [u8; 4] = *b"THA1";
    const TAG_LEN: usize = 32;
    const BODY_LEN: usize = 4 + 16 + 8;
    /// A request's size.
    pub const REQUEST_LEN: usize = BODY_LEN + TAG_LEN;
    /// An ack's size.
    pub const ACK_LEN: usize = BODY_LEN + 1 + TAG_LEN;

    /// One session's heartbeat key.
    #[derive(Clone)]
    pub struct SessionKey {
        raw: [u8; 32],
        key: hmac::Key,
    }

    impl std::fmt::Debug for SessionKey {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("SessionKey(..)")
        }
    }

    impl SessionKey {
        fn new(raw: [u8; 32]) -> Self {
            Self {
                raw,
                key: hmac::Key::new(hmac::HMAC_SHA256, &raw),
            }
        }

        /// The key as the header carries it.
        pub fn to_header(&self) -> String {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.raw)
        }

        /// The key a header carries, if it is one.
        pub fn from_header(value: &str) -> Option<Self> {
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(value)
                .ok()?;
            Some(Self::new(raw.try_into().ok()?))
        }
    }

    /// Session `id`'s key under the machine's `secret`.
    pub fn derive_key(secret: &hmac::Key, id: &[u8; 16]) -> SessionKey {
        let tag = hmac::sign(secret, &[&b"tether heartbeat key"[..], id].concat());
        let mut raw = [0u8; 32];
        raw.copy_from_slice(tag.as_ref());
        SessionKey::new(raw)
    }

    fn body(magic: [u8; 4], id: &[u8; 16], seq: u64) -> [u8; BODY_LEN] {
        let mut out = [0u8; BODY_LEN];
        out[..4].copy_from_slice(&magic);
        out[4..20].copy_from_slice(id);
        out[20..].copy_from_slice(&seq.to_be_bytes());
        out
    }

    /// The request heartbeating session `id` with sequence number `seq`.
    pub fn encode_request(key: &SessionKey, id: &[u8; 16], seq: u64) -> [u8; REQUEST_LEN] {
        let body = body(REQUEST_MAGIC, id, seq);
        let mut out = [0u8; REQUEST_LEN];
        out[..BODY_LEN].copy_from_slice(&body);
        out[BODY_LEN..].copy_from_slice(hmac::sign(&key.key, &body).as_ref());
        out
    }

    /// A request's session id and sequence number, read without checking its tag (the
    /// machine needs the id to derive the key that checks it).
    pub fn request_fields(datagram: &[u8]) -> Option<([u8; 16], u64)> {
        if datagram.len() != REQUEST_LEN || datagram[..4] != REQUEST_MAGIC {
            return None;
        }
        let id: [u8; 16] = datagram[4..20].try_into().ok()?;
        let seq = u64::from_be_bytes(datagram[20..BODY_LEN].try_into().ok()?);
        Some((id, seq))
    }

    /// Whether a request (as [`request_fields`] read it) was made with `key`.
    pub fn request_is_signed_by(key: &SessionKey, datagram: &[u8]) -> bool {
        datagram.len() == REQUEST_LEN
            && hmac::verify(&key.key, &datagram[..BODY_LEN], &datagram[BODY_LEN..]).is_ok()
    }

    /// The answer `ack` to request `seq` of session `id`.
    pub fn encode_ack(key: &SessionKey, id: &[u8; 16], seq: u64, ack: Ack) -> [u8; ACK_LEN] {
        let mut out = [0u8; ACK_LEN];
        out[..BODY_LEN].copy_from_slice(&body(ACK_MAGIC, id, seq));
        out[BODY_LEN] = ack as u8;
        let tag = hmac::sign(&key.key, &out[..=BODY_LEN]);
        out[BODY_LEN + 1..].copy_from_slice(tag.as_ref());
        out
    }

    /// The sequence number and ack of an answer about session `id` signed with `key`; `None`
    /// for anything else.
    pub fn decode_ack(key: &SessionKey, id: &[u8; 16], datagram: &[u8]) -> Option<(u64, Ack)> {
        if datagram.len() != ACK_LEN
            || datagram[..4] != ACK_MAGIC
            || datagram[4..20] != id[..]
            || hmac::verify(&key.key, &datagram[..=BODY_LEN], &datagram[BODY_LEN + 1..]).is_err()
        {
            return None;
        }
        let seq = u64::from_be_bytes(datagram[20..BODY_LEN].try_into().ok()?);
        let ack = match datagram[BODY_LEN] {
            0 => Ack::Alive,
            1 => Ack::Expired,
            2 => Ack::Refused,
            _ => return None,
        };
        Some((seq, ack))
    }
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

    #[test]
    fn a_timed_datagram_is_still_a_send_session_heartbeat_request() {
        use prost::Message;
        use tether_proto::viam::robot::v1::SendSessionHeartbeatRequest;
        let id = "5c671593-1a82-47f2-a9c4-ba9a1d19a495";
        let timed = encode_datagram(id, 1_796_000_000_123_456);
        assert_eq!(
            decode_datagram(&timed),
            Some((id.to_string(), Some(1_796_000_000_123_456)))
        );
        // Viam's decoder reads the id and skips the time.
        assert_eq!(
            SendSessionHeartbeatRequest::decode(&timed[..]).unwrap().id,
            id
        );
        // An untimed one (an older client) has no time; junk is nothing.
        let plain = SendSessionHeartbeatRequest { id: id.into() }.encode_to_vec();
        assert_eq!(decode_datagram(&plain), Some((id.to_string(), None)));
        assert_eq!(decode_datagram(b"\xff\xff"), None);
    }

    #[test]
    fn the_steady_clock_rises_from_about_the_epoch_time() {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        let a = steady_micros();
        let b = steady_micros();
        assert!(b >= a);
        assert!(a.abs_diff(wall) < 60_000_000, "{a} vs {wall}");
    }

    #[test]
    fn udp_requests_and_acks_are_signed_with_the_session_key() {
        use udp::*;
        let secret = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7u8; 32]);
        let id = [1u8; 16];
        let key = derive_key(&secret, &id);
        let other = derive_key(&secret, &[2u8; 16]);
        // The header round-trips the key; junk is not a key.
        let carried = SessionKey::from_header(&key.to_header()).unwrap();
        assert!(SessionKey::from_header("not base64!").is_none());
        assert!(SessionKey::from_header("AAAA").is_none());

        let request = encode_request(&carried, &id, 42);
        assert_eq!(request_fields(&request), Some((id, 42)));
        assert!(request_is_signed_by(&key, &request));
        assert!(!request_is_signed_by(&other, &request));
        // Any flipped bit breaks it: the fields are read, but the tag no longer verifies.
        for i in 0..REQUEST_LEN {
            let mut bad = request;
            bad[i] ^= 1;
            assert!(
                request_fields(&bad).is_none() || !request_is_signed_by(&key, &bad),
                "byte {i}"
            );
        }
        assert!(request_fields(&request[..REQUEST_LEN - 1]).is_none());

        for ack in [Ack::Alive, Ack::Expired, Ack::Refused] {
            let answer = encode_ack(&key, &id, 42, ack);
            assert_eq!(decode_ack(&carried, &id, &answer), Some((42, ack)));
            assert_eq!(decode_ack(&other, &id, &answer), None);
            assert_eq!(decode_ack(&key, &[2u8; 16], &answer), None);
            let mut bad = answer;
            bad[ACK_LEN - 1] ^= 1;
            assert_eq!(decode_ack(&key, &id, &bad), None);
        }
        // A request is not an ack.
        assert_eq!(decode_ack(&key, &id, &request), None);
    }
}
