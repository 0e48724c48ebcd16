//! Golden tests of the data-channel framing: every rule of the fact sheet (§7.5), frame by
//! frame, and a bounded random-input test of the machine's decoder.

use super::*;

fn md(pairs: &[(&str, &[&str])]) -> Metadata {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
        .collect()
}

/// Decodes the frames a `Fail` carries: headers, then trailers with this code and message.
fn assert_failed(event: &ServerEvent, want_stream: u64, want_code: i32, want_message: &str) {
    let ServerEvent::Fail { stream, frames } = event else {
        panic!("expected Fail, got {event:?}")
    };
    assert_eq!(*stream, want_stream);
    let mut client = ClientStreams::new(want_stream);
    client.open("/x", &[], None);
    assert!(matches!(
        client.receive(&frames[0]).unwrap(),
        Some(ClientEvent::Headers { .. })
    ));
    match client.receive(&frames[1]).unwrap() {
        Some(ClientEvent::Trailers { code, message, .. }) => {
            assert_eq!((code, message.as_str()), (want_code, want_message));
        }
        other => panic!("expected trailers, got {other:?}"),
    }
}

#[test]
fn goutils_unary_headers_then_message_with_eos_in_one_frame() {
    let mut server = ServerStreams::default();
    let mut client = ClientStreams::new(1);
    let meta = md(&[("viam-sid", &["abc"]), ("x", &["1", "2"])]);
    let (id, headers) = client.open(
        "/viam.robot.v1.RobotService/GetVersion",
        &meta,
        Some(Duration::from_secs(5)),
    );
    assert_eq!(id, 1);
    assert_eq!(
        server.receive(&headers).unwrap(),
        vec![ServerEvent::Open {
            stream: 1,
            method: "/viam.robot.v1.RobotService/GetVersion".into(),
            metadata: meta,
            timeout: Some(Duration::from_secs(5)),
        }]
    );
    let frames = client.message(id, b"\x0a\x04left", true);
    assert_eq!(frames.len(), 1);
    assert_eq!(
        server.receive(&frames[0]).unwrap(),
        vec![
            ServerEvent::Message {
                stream: 1,
                payload: Bytes::from_static(b"\x0a\x04left")
            },
            ServerEvent::HalfClose { stream: 1 },
        ]
    );
}

#[test]
fn rust_utils_unary_from_stream_zero_with_a_separate_eos_frame() {
    let mut server = ServerStreams::default();
    let mut client = ClientStreams::new(0);
    let (id, headers) = client.open("/m", &[], None);
    assert_eq!(id, 0);
    let opened = server.receive(&headers).unwrap();
    assert!(matches!(
        &opened[0],
        ServerEvent::Open {
            stream: 0,
            timeout: None,
            ..
        }
    ));
    let msg = client.message(0, b"payload", false);
    assert_eq!(
        server.receive(&msg[0]).unwrap(),
        vec![ServerEvent::Message {
            stream: 0,
            payload: Bytes::from_static(b"payload")
        }]
    );
    assert_eq!(
        server.receive(&client.half_close(0)).unwrap(),
        vec![ServerEvent::HalfClose { stream: 0 }]
    );
}

#[test]
fn large_messages_are_packetized_and_reassembled_and_frames_fit_a_data_channel_message() {
    let mut server = ServerStreams::default();
    let mut client = ClientStreams::new(u64::MAX - 1); // the widest stream ids: worst-case wrapper
    let (id, headers) = client.open("/m", &[], None);
    server.receive(&headers).unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let frames = client.message(id, &payload, true);
    assert_eq!(frames.len(), 4);
    assert!(
        frames.iter().all(|f| f.len() <= 65_535),
        "{:?}",
        frames.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let mut events = Vec::new();
    for f in &frames {
        events.extend(server.receive(f).unwrap());
    }
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0],
        ServerEvent::Message {
            stream: id,
            payload: Bytes::from(payload.clone())
        }
    );
    assert_eq!(server.buffered_bytes(), 0);
    // And back: response packets fit too, and reassemble.
    let out = encode_response_message(id, &payload);
    assert_eq!(out.len(), 4);
    assert!(out.iter().all(|f| f.len() <= 65_535));
    assert!(
        client
            .receive(&encode_response_headers(id, &[]))
            .unwrap()
            .is_some()
    );
    let mut got = None;
    for f in &out {
        got = client.receive(f).unwrap().or(got);
    }
    assert_eq!(
        got,
        Some(ClientEvent::Message {
            stream: id,
            payload: Bytes::from(payload)
        })
    );
}

#[test]
fn empty_messages_are_one_empty_packet_with_eom() {
    let mut server = ServerStreams::default();
    let mut client = ClientStreams::new(1);
    let (id, headers) = client.open("/m", &[], None);
    server.receive(&headers).unwrap();
    let frames = client.message(id, b"", true);
    assert_eq!(frames.len(), 1);
    assert_eq!(
        server.receive(&frames[0]).unwrap(),
        vec![
            ServerEvent::Message {
                stream: id,
                payload: Bytes::new()
            },
            ServerEvent::HalfClose { stream: id }
        ]
    );
    assert_eq!(encode_response_message(id, b"").len(), 1);
}

#[test]
fn protocol_violations_get_the_sheets_errors() {
    let mut server = ServerStreams::default();
    let mut client = ClientStreams::new(1);
    // Frames for a stream that never sent headers are dropped.
    assert_eq!(
        server.receive(&client.message(9, b"x", true)[0]).unwrap(),
        vec![]
    );
    assert_eq!(server.receive(&client.reset(9)).unwrap(), vec![]);
    // A second headers frame.
    let (id, headers) = client.open("/m", &[], None);
    server.receive(&headers).unwrap();
    let events = server.receive(&headers).unwrap();
    assert_failed(
        &events[0],
        id,
        code::INVALID_ARGUMENT,
        "headers already received",
    );
    assert_eq!(server.open_streams(), 0);
    // has_message without a packet.
    let (id, headers) = client.open("/m", &[], None);
    server.receive(&headers).unwrap();
    let bad = wire::Request {
        stream: Some(wire::Stream { id }),
        r#type: Some(wire::request::Type::Message(wire::RequestMessage {
            has_message: true,
            packet_message: None,
            eos: false,
        })),
    }
    .encode_to_vec();
    assert_failed(
        &server.receive(&bad).unwrap()[0],
        id,
        code::INVALID_ARGUMENT,
        "message without a packet",
    );
    // A message after end of stream; end of stream in the middle of a message.
    let (id, headers) = client.open("/m", &[], None);
    server.receive(&headers).unwrap();
    server.receive(&client.half_close(id)).unwrap();
    assert_failed(
        &server
            .receive(&client.message(id, b"late", false)[0])
            .unwrap()[0],
        id,
        code::INVALID_ARGUMENT,
        "message after end of stream",
    );
    let (id, headers) = client.open("/m", &[], None);
    server.receive(&headers).unwrap();
    let partial = wire::Request {
        stream: Some(wire::Stream { id }),
        r#type: Some(wire::request::Type::Message(wire::RequestMessage {
            has_message: true,
            packet_message: Some(wire::PacketMessage {
                data: b"half".to_vec(),
                eom: false,
            }),
            eos: true,
        })),
    }
    .encode_to_vec();
    assert_failed(
        &server.receive(&partial).unwrap()[0],
        id,
        code::INVALID_ARGUMENT,
        "end of stream inside a message",
    );
    // Not a frame at all; a frame without a type.
    assert!(server.receive(b"\xff\xff\xff").is_err());
    assert!(
        server
            .receive(
                &wire::Request {
                    stream: Some(wire::Stream { id: 1 }),
                    r#type: None
                }
                .encode_to_vec()
            )
            .is_err()
    );
}

#[test]
fn rst_stream_cancels_and_frees_the_id() {
    let mut server = ServerStreams::default();
    let mut client = ClientStreams::new(1);
    let (id, headers) = client.open("/m", &[], None);
    server.receive(&headers).unwrap();
    server
        .receive(&client.message(id, &[7; 10], false)[0])
        .unwrap();
    assert_eq!(
        server.receive(&client.reset(id)).unwrap(),
        vec![ServerEvent::Cancel { stream: id }]
    );
    assert_eq!((server.open_streams(), server.buffered_bytes()), (0, 0));
    // The id may be opened again.
    assert!(matches!(
        server.receive(&headers).unwrap()[0],
        ServerEvent::Open { .. }
    ));
}

#[test]
fn limits_message_size_streams_and_buffered_bytes() {
    let mut client = ClientStreams::new(1);
    // Message size: 100 bytes allowed, 101 refused, the stream freed.
    let mut server = ServerStreams::new(100, 8, 1000);
    let (id, headers) = client.open("/m", &[], None);
    server.receive(&headers).unwrap();
    assert!(matches!(
        server
            .receive(&client.message(id, &[0; 100], false)[0])
            .unwrap()[0],
        ServerEvent::Message { .. }
    ));
    let events = server
        .receive(&client.message(id, &[0; 101], false)[0])
        .unwrap();
    assert_failed(
        &events[0],
        id,
        code::RESOURCE_EXHAUSTED,
        "received message larger than max (101 vs. 100)",
    );
    assert_eq!((server.open_streams(), server.buffered_bytes()), (0, 0));
    // Concurrent streams: the third is refused, the two open ones are untouched.
    let mut server = ServerStreams::new(100, 2, 1000);
    for _ in 0..2 {
        let (_, h) = client.open("/m", &[], None);
        server.receive(&h).unwrap();
    }
    let (id, h) = client.open("/m", &[], None);
    assert_failed(
        &server.receive(&h).unwrap()[0],
        id,
        code::RESOURCE_EXHAUSTED,
        "too many concurrent streams (limit 2)",
    );
    assert_eq!(server.open_streams(), 2);
    // Buffered bytes across the channel: two half-received messages may not exceed the bound.
    let mut server = ServerStreams::new(100, 8, 100);
    let partial = |id: u64, n: usize| {
        wire::Request {
            stream: Some(wire::Stream { id }),
            r#type: Some(wire::request::Type::Message(wire::RequestMessage {
                has_message: true,
                packet_message: Some(wire::PacketMessage {
                    data: vec![1; n],
                    eom: false,
                }),
                eos: false,
            })),
        }
        .encode_to_vec()
    };
    let (a, ha) = client.open("/m", &[], None);
    let (b, hb) = client.open("/m", &[], None);
    server.receive(&ha).unwrap();
    server.receive(&hb).unwrap();
    assert_eq!(server.receive(&partial(a, 60)).unwrap(), vec![]);
    assert_eq!(server.buffered_bytes(), 60);
    let events = server.receive(&partial(b, 60)).unwrap();
    assert_failed(
        &events[0],
        b,
        code::RESOURCE_EXHAUSTED,
        "too many bytes buffered on this channel; retry later",
    );
    server.finish(a);
    assert_eq!(server.buffered_bytes(), 0);
}

#[test]
fn client_side_rules_trailers_and_violations() {
    let mut client = ClientStreams::new(1);
    let (id, _) = client.open("/m", &[], None);
    // A message before headers is a violation and ends the stream.
    let early = encode_response_message(id, b"x");
    assert!(matches!(
        client.receive(&early[0]).unwrap(),
        Some(ClientEvent::Violation { .. })
    ));
    // Success may come with no status at all (goutils omits it): code 0.
    let (id, _) = client.open("/m", &[], None);
    client
        .receive(&encode_response_headers(id, &md(&[("opid", &["1"])])))
        .unwrap();
    let no_status = wire::Response {
        stream: Some(wire::Stream { id }),
        r#type: Some(wire::response::Type::Trailers(wire::ResponseTrailers {
            status: None,
            metadata: None,
        })),
    }
    .encode_to_vec();
    assert_eq!(
        client.receive(&no_status).unwrap(),
        Some(ClientEvent::Trailers {
            stream: id,
            code: 0,
            message: String::new(),
            metadata: vec![]
        })
    );
    // Frames for unknown streams are ignored.
    assert_eq!(
        client.receive(&encode_trailers(77, 0, "", &[])).unwrap(),
        None
    );
}

/// A small deterministic generator (xorshift) for the random-input test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_and_mutated_frames_never_panic_or_exceed_the_limits() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut server = ServerStreams::new(4096, 16, 16 * 1024);
    let mut client = ClientStreams::new(0);
    let mut valid: Vec<Vec<u8>> = Vec::new();
    for _ in 0..64 {
        let (id, h) = client.open("/m", &md(&[("k", &["v"])]), None);
        valid.push(h);
        valid.extend(client.message(
            id,
            &vec![3; (rng.next() % 3000) as usize],
            rng.next().is_multiple_of(2),
        ));
        valid.push(client.half_close(id));
        valid.push(client.reset(id));
    }
    for _ in 0..50_000 {
        let frame = match rng.next() % 3 {
            0 => (0..rng.next() % 64).map(|_| rng.next() as u8).collect(),
            1 => valid[(rng.next() as usize) % valid.len()].clone(),
            _ => {
                let mut f = valid[(rng.next() as usize) % valid.len()].clone();
                for _ in 0..1 + rng.next() % 4 {
                    if !f.is_empty() {
                        let i = (rng.next() as usize) % f.len();
                        f[i] = rng.next() as u8;
                    }
                }
                f
            }
        };
        if let Ok(events) = server.receive(&frame) {
            for e in events {
                if let ServerEvent::Message { payload, .. } = e {
                    assert!(payload.len() <= 4096);
                }
            }
        }
        assert!(server.open_streams() <= 16);
        assert!(server.buffered_bytes() <= 16 * 1024);
    }
}
