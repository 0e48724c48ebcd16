//! Authentication, TLS and connection hygiene against a real `tether serve` process.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is the test failing"
)]

mod common;

use std::io::{Read, Write};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{Server, raw_unary, raw_unary_with, refused, unique_temp_file};
use prost_types::value::Kind;
use ring::signature::{Ed25519KeyPair, KeyPair};
use tether_proto::proto::rpc::v1::auth_service_client::AuthServiceClient;
use tether_proto::proto::rpc::v1::{AuthenticateRequest, Credentials};
use tonic::Code;
use tonic::transport::Channel;

const KEY_ID: &str = "5a3a0c6e-1d52-4b8e-9c4b-6d0f2a7e9b11";
const KEY: &str = "s3cret-key-for-tests-0123456789";
const OTHER_ID: &str = "0f4c7d9a-8b3e-4f2a-a1c5-9e8d7c6b5a40";
const OTHER_KEY: &str = "another-key-9876543210";

fn auth_config(network: &str) -> std::path::PathBuf {
    let text = format!(
        r#"{{"components": [
            {{"name": "left", "api": "rdk:component:motor", "model": "fake"}},
            {{"name": "base", "api": "rdk:component:base", "model": "fake"}},
            {{"name": "button", "api": "rdk:component:button", "model": "fake"}}
        ],
        "auth": {{"handlers": [{{"type": "api-key", "config": {{"{KEY_ID}": "{KEY}", "{OTHER_ID}": "{OTHER_KEY}"}}}}]}},
        "network": {{"sessions": {{"heartbeat_window": "500ms"}}{network}}}}}"#
    );
    unique_temp_file("auth", &text)
}

use common::authenticate;

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A JWT with our header fields and the given claims, signed by a key the server never saw.
fn forged(kid: Option<&str>, alg: &str, claims: serde_like::Json) -> String {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let own_kid = B64.encode(pair.public_key().as_ref());
    let header = format!(
        r#"{{"alg":"{alg}","typ":"JWT","kid":"{}"}}"#,
        kid.unwrap_or(&own_kid)
    );
    let input = format!("{}.{}", B64.encode(header), B64.encode(claims.0));
    if alg == "none" {
        return format!("{input}.");
    }
    let sig = pair.sign(input.as_bytes());
    format!("{input}.{}", B64.encode(sig.as_ref()))
}

mod serde_like {
    /// A JSON text.
    pub struct Json(pub String);
}

fn claims(sub: &str) -> serde_like::Json {
    serde_like::Json(format!(
        r#"{{"sub":"{sub}","aud":["tether"],"iss":"tether","iat":1,"jti":"x","rpc_creds_type":"api-key"}}"#
    ))
}

/// Every gRPC method the machine serves, from our descriptors, plus reflection.
fn served_methods() -> Vec<String> {
    let pool = tether_proto::descriptor_pool();
    let mut paths: Vec<String> = pool
        .services()
        .filter(|s| {
            let n = s.full_name();
            n == "viam.robot.v1.RobotService" || n.starts_with("viam.component.")
        })
        .flat_map(|s| {
            s.methods()
                .map(|m| format!("/{}/{}", s.full_name(), m.name()))
                .collect::<Vec<_>>()
        })
        .collect();
    paths.push("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo".into());
    paths.push("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo".into());
    paths
}

async fn history_len(ch: &Channel, token: &str, path: &str, name: &str) -> usize {
    // DoCommandRequest { name, command: {"command": "history"} }
    let mut cmd = prost_types::Struct::default();
    cmd.fields.insert(
        "command".into(),
        prost_types::Value {
            kind: Some(Kind::StringValue("history".into())),
        },
    );
    let req = tether_proto::viam::common::v1::DoCommandRequest {
        name: name.into(),
        command: Some(cmd),
    };
    let body = prost::Message::encode_to_vec(&req);
    let reply = raw_unary_with(ch, path, body, &[("authorization", &bearer(token))])
        .await
        .unwrap()
        .into_inner();
    let resp: tether_proto::viam::common::v1::DoCommandResponse =
        prost::Message::decode(reply).unwrap();
    match &resp.result.unwrap().fields["history"].kind {
        Some(Kind::ListValue(l)) => l.values.len(),
        other => panic!("no history: {other:?}"),
    }
}

#[tokio::test]
async fn every_method_refuses_missing_malformed_and_forged_tokens_before_any_handler() {
    let server = Server::start(&["--config", auth_config("").to_str().unwrap()]);
    let ch = server.channel().await;
    let token = authenticate(&ch, KEY_ID, KEY).await.unwrap();
    let our_kid = {
        let header = token.split('.').next().unwrap();
        let json = String::from_utf8(B64.decode(header).unwrap()).unwrap();
        json.split(r#""kid":""#)
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string()
    };
    let cases: Vec<(String, Option<String>, &str)> = vec![
        ("no token".into(), None, "authentication required"),
        (
            "basic".into(),
            Some("Basic ZmFrZTpmYWtl".into()),
            "expected authorization header with prefix: Bearer ",
        ),
        (
            "bearer, lower case".into(),
            Some(format!("bearer {token}")),
            "expected authorization header with prefix: Bearer ",
        ),
        (
            "garbage token".into(),
            Some(bearer("not.a.jwt")),
            "unauthenticated: token is malformed",
        ),
        (
            "alg none".into(),
            Some(bearer(&forged(Some(&our_kid), "none", claims(KEY_ID)))),
            "unsupported signing algorithm \"none\"",
        ),
        (
            "signed by another key, our kid".into(),
            Some(bearer(&forged(Some(&our_kid), "EdDSA", claims(KEY_ID)))),
            "token signature is invalid",
        ),
        (
            "unknown key id (kid)".into(),
            Some(bearer(&forged(None, "EdDSA", claims(KEY_ID)))),
            "signed by an unknown key",
        ),
        (
            "HS256".into(),
            Some(bearer(&forged(Some(&our_kid), "HS256", claims(KEY_ID)))),
            "unsupported signing algorithm \"HS256\"",
        ),
    ];
    let methods = served_methods();
    assert!(methods.len() > 100, "only {} methods found", methods.len());
    for path in &methods {
        for (what, header, expected) in &cases {
            let md: Vec<(&'static str, &str)> = header
                .as_deref()
                .map(|h| vec![("authorization", h)])
                .unwrap_or_default();
            // Field 1 = "left": a monitored method would drive the motor if it got through.
            let err = raw_unary_with(&ch, path, &b"\x0a\x04left"[..], &md)
                .await
                .unwrap_err();
            assert_eq!(
                err.code(),
                Code::Unauthenticated,
                "{path} with {what}: {err:?}"
            );
            assert!(
                err.message().contains(expected),
                "{path} with {what}: {}",
                err.message()
            );
        }
    }
    // Nothing reached a handler: no resource recorded a command, no session exists.
    for (path, name) in [
        ("/viam.component.motor.v1.MotorService/DoCommand", "left"),
        ("/viam.component.base.v1.BaseService/DoCommand", "base"),
        (
            "/viam.component.button.v1.ButtonService/DoCommand",
            "button",
        ),
    ] {
        assert_eq!(
            history_len(&ch, &token, path, name).await,
            0,
            "{name} was commanded"
        );
    }
    let sessions = raw_unary_with(
        &ch,
        "/viam.robot.v1.RobotService/GetSessions",
        Vec::new(),
        &[("authorization", &bearer(&token))],
    )
    .await
    .unwrap()
    .into_inner();
    assert!(sessions.is_empty(), "a session was started without a token");
    // The readiness probe stays open.
    let reply = common::http_get(&server.addr, "/");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

#[tokio::test]
async fn authenticate_semantics_and_sessions_bound_to_the_key() {
    let server = Server::start(&["--config", auth_config("").to_str().unwrap()]);
    let ch = server.channel().await;
    for (id, key) in [(KEY_ID, "wrong"), ("no-such-id", KEY), (KEY_ID, "")] {
        let err = authenticate(&ch, id, key).await.unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::Unauthenticated, "invalid credentials")
        );
    }
    let mut auth = AuthServiceClient::new(ch.clone());
    let err = auth
        .authenticate(AuthenticateRequest {
            entity: KEY_ID.into(),
            credentials: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "credentials required")
    );
    let err = auth
        .authenticate(AuthenticateRequest {
            entity: KEY_ID.into(),
            credentials: Some(Credentials {
                r#type: "robot-secret".into(),
                payload: KEY.into(),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("do not know how to handle credential type")
    );

    // Sessions belong to the key: another key's token cannot use them, another token of the
    // same key can (the Python SDK heartbeats on a second, separately authenticated connection).
    let a1 = authenticate(&ch, KEY_ID, KEY).await.unwrap();
    let a2 = authenticate(&server.channel().await, KEY_ID, KEY)
        .await
        .unwrap();
    let b = authenticate(&ch, OTHER_ID, OTHER_KEY).await.unwrap();
    assert_ne!(a1, a2);
    let start = raw_unary_with(
        &ch,
        "/viam.robot.v1.RobotService/StartSession",
        Vec::new(),
        &[("authorization", &bearer(&a1))],
    )
    .await
    .unwrap()
    .into_inner();
    let response: tether_proto::viam::robot::v1::StartSessionResponse =
        prost::Message::decode(start).unwrap();
    let heartbeat = prost::Message::encode_to_vec(
        &tether_proto::viam::robot::v1::SendSessionHeartbeatRequest {
            id: response.id.clone(),
        },
    );
    let path = "/viam.robot.v1.RobotService/SendSessionHeartbeat";
    let err = raw_unary_with(
        &ch,
        path,
        heartbeat.clone(),
        &[("authorization", &bearer(&b))],
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "SESSION_EXPIRED")
    );
    raw_unary_with(
        &ch,
        path,
        heartbeat.clone(),
        &[("authorization", &bearer(&a2))],
    )
    .await
    .unwrap();
    // A monitored command with key B's token and A's session is refused too.
    let err = raw_unary_with(
        &ch,
        "/viam.component.motor.v1.MotorService/SetPower",
        &b"\x0a\x04left"[..],
        &[("authorization", &bearer(&b)), ("viam-sid", &response.id)],
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "SESSION_EXPIRED")
    );
    // Re-authenticating on an authenticated call is refused.
    let mut request = tonic::Request::new(AuthenticateRequest {
        entity: KEY_ID.into(),
        credentials: Some(Credentials {
            r#type: "api-key".into(),
            payload: KEY.into(),
        }),
    });
    request
        .metadata_mut()
        .insert("authorization", bearer(&a1).parse().unwrap());
    let err = auth.authenticate(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn failed_attempts_are_rate_limited_per_address_only() {
    let server = Server::start(&["--config", auth_config("").to_str().unwrap()]);
    let ch = server.channel().await;
    for _ in 0..10 {
        let err = authenticate(&ch, KEY_ID, "guess").await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    let err = authenticate(&ch, KEY_ID, "guess").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("retry in"), "{}", err.message());
    assert!(err.metadata().get("retry-after").is_some());
    // Even the right key waits while this address is blocked...
    assert_eq!(
        authenticate(&ch, KEY_ID, KEY).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    // ...but another address is not slowed at all.
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let elsewhere = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .local_address(Some(other))
        .connect()
        .await
        .unwrap();
    authenticate(&elsewhere, KEY_ID, KEY).await.unwrap();
    // The bucket refills: about a second later one more attempt is allowed.
    // The bucket refills at one attempt per second: a second later the right key gets in.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    authenticate(&ch, KEY_ID, KEY).await.unwrap();
}

/// Opens a raw HTTP/2 connection that sends the preface and SETTINGS, then nothing.
fn idle_h2(addr: &str) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    s
}

#[tokio::test]
async fn idle_connections_are_reaped_and_a_flood_locks_nobody_out_for_long() {
    let config = auth_config(r#", "idle_timeout": "1s", "max_connections": 3"#);
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    // An idle connection is closed after the idle timeout.
    let mut idle = idle_h2(&server.addr);
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let t0 = Instant::now();
    let mut sink = Vec::new();
    let _ = idle.read_to_end(&mut sink);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // A flood of idle connections fills every slot; a legitimate client is told so clearly...
    let flood: Vec<_> = (0..3).map(|_| idle_h2(&server.addr)).collect();
    std::thread::sleep(Duration::from_millis(100));
    let ch = server.channel().await;
    let err = raw_unary(&ch, AUTH_PATH, Vec::new()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // ...and gets in once the idle ones are reaped (within about the idle timeout).
    let t1 = Instant::now();
    loop {
        let ch = server.channel().await;
        match authenticate(&ch, KEY_ID, KEY).await {
            Ok(_) => break,
            Err(e)
                if e.code() == Code::ResourceExhausted && t1.elapsed() < Duration::from_secs(5) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("still locked out after {:?}: {e:?}", t1.elapsed()),
        }
    }
    assert!(t1.elapsed() < Duration::from_secs(3), "{:?}", t1.elapsed());
    drop(flood);
}

const AUTH_PATH: &str = "/proto.rpc.v1.AuthService/Authenticate";

async fn tls_connect(addr: &str, cert: &std::path::Path, alpn: &[&[u8]]) -> Option<Vec<u8>> {
    let tls = common::raw::tls(addr, cert, alpn).await;
    tls.get_ref().1.alpn_protocol().map(|p| p.to_vec())
}

#[tokio::test]
async fn tls_with_alpn_h2_and_http1_on_one_port_and_no_tls_override() {
    let dir = std::env::temp_dir().join(format!("tether-tls-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = common::raw::generate_cert(&dir);
    let tls = format!(
        r#", "tls_cert_file": "{}", "tls_key_file": "{}""#,
        cert.display(),
        key.display()
    );
    let config = auth_config(&tls);
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    assert!(server.log().contains("TLS"), "{}", server.log());
    assert_eq!(
        tls_connect(&server.addr, &cert, &[b"h2", b"http/1.1"])
            .await
            .as_deref(),
        Some(&b"h2"[..])
    );
    assert_eq!(
        tls_connect(&server.addr, &cert, &[b"http/1.1"])
            .await
            .as_deref(),
        Some(&b"http/1.1"[..])
    );
    // A plaintext client cannot talk to the TLS port; the server keeps serving.
    let plain = server.channel().await;
    assert!(raw_unary(&plain, AUTH_PATH, Vec::new()).await.is_err());
    assert_eq!(
        tls_connect(&server.addr, &cert, &[b"h2"]).await.as_deref(),
        Some(&b"h2"[..])
    );
    drop(server);

    // --no-tls serves plaintext even with certificates configured.
    let server = Server::start(&["--config", config.to_str().unwrap(), "--no-tls"]);
    let ch = server.channel().await;
    authenticate(&ch, KEY_ID, KEY).await.unwrap();

    // Certificate problems are clear config errors.
    let bad = auth_config(&format!(
        r#", "tls_cert_file": "{}", "tls_key_file": "{}""#,
        key.display(),
        cert.display()
    ));
    let (code, stderr) = refused(&bad);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("tls_cert_file"), "{stderr}");
    let missing = auth_config(
        r#", "tls_cert_file": "/nonexistent/c.pem", "tls_key_file": "/nonexistent/k.pem""#,
    );
    let (code, stderr) = refused(&missing);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("/nonexistent/c.pem"), "{stderr}");
}
