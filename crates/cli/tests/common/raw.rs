//! Raw HTTP/1.1 and HTTP/2 requests, for what a well-behaved gRPC client never sends: any
//! header (a malformed `grpc-timeout`, a foreign `Host`, a wrong content type) and bodies
//! that stall.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A request body.
pub type RawBody = BoxBody<Bytes, Infallible>;

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> RawBody {
    Full::new(bytes.into()).boxed()
}

/// A body fed by hand: send frames on the sender, drop it to end the body.
pub fn fed() -> (mpsc::Sender<Bytes>, RawBody) {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    (tx, StreamBody::new(stream).boxed())
}

/// A gRPC message with its 5-byte prefix (tether-rpc's).
pub fn grpc_frame(message: &[u8]) -> Bytes {
    [
        &tether_rpc::grpc::message_prefix(message.len())[..],
        message,
    ]
    .concat()
    .into()
}

/// HTTP/2 (prior knowledge) over `tcp`, its connection driven on a task of its own.
async fn handshake(
    tcp: TcpStream,
) -> Result<hyper::client::conn::http2::SendRequest<RawBody>, hyper::Error> {
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tcp))
        .await?;
    tokio::spawn(conn);
    Ok(send)
}

/// An HTTP/2 (prior knowledge) connection.
pub async fn h2(addr: &str) -> hyper::client::conn::http2::SendRequest<RawBody> {
    handshake(TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap()
}

/// An HTTP/2 connection from another loopback address (`127.0.0.2`): another host, as far as
/// the machine can tell; `None` if the machine refused it.
pub async fn try_h2_from(
    addr: &str,
    local_ip: &str,
) -> Option<hyper::client::conn::http2::SendRequest<RawBody>> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(format!("{local_ip}:0").parse().ok()?).ok()?;
    let tcp = socket.connect(addr.parse().ok()?).await.ok()?;
    handshake(tcp).await.ok()
}

/// [`try_h2_from`], which must succeed.
pub async fn h2_from(
    addr: &str,
    local_ip: &str,
) -> hyper::client::conn::http2::SendRequest<RawBody> {
    try_h2_from(addr, local_ip).await.unwrap()
}

/// An HTTP/1.1 connection.
pub async fn h1(addr: &str) -> hyper::client::conn::http1::SendRequest<RawBody> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// A gRPC POST to `path` with extra headers.
pub fn grpc_request(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: RawBody,
) -> Request<RawBody> {
    let mut r = Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(body).unwrap()
}

/// What came back: the HTTP status, the headers, the body, and `grpc-status`/`grpc-message`
/// from the trailers (or the headers, for a trailers-only answer).
#[derive(Debug)]
pub struct RawReply {
    pub status: http::StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub grpc_status: Option<i32>,
    pub grpc_message: String,
}

/// Reads a whole answer within `limit`.
pub async fn read(response: Response<Incoming>, limit: Duration) -> RawReply {
    let (parts, body) = response.into_parts();
    let collected = tokio::time::timeout(limit, body.collect())
        .await
        .expect("the answer's body within the limit")
        .expect("a body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status_from = |h: &HeaderMap| {
        h.get("grpc-status")
            .and_then(|v| v.to_str().ok()?.parse().ok())
    };
    let grpc_status = status_from(&trailers).or_else(|| status_from(&parts.headers));
    let grpc_message = trailers
        .get("grpc-message")
        .or_else(|| parts.headers.get("grpc-message"))
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    RawReply {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        grpc_status,
        grpc_message,
    }
}

/// A self-signed certificate and key (PEM) for `robot.local` and localhost, made by
/// `tether cert` in `dir`.
pub fn generate_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["cert", "--name", "robot.local", "--force", "--cert"])
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// A TLS connection to `addr` (as `localhost`) that trusts `cert`, offering `alpn`.
pub async fn tls(
    addr: &str,
    cert: &std::path::Path,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

/// HTTP/1.1 over TLS (ALPN `http/1.1`), trusting `cert`.
pub async fn h1_tls(
    addr: &str,
    cert: &std::path::Path,
) -> hyper::client::conn::http1::SendRequest<RawBody> {
    let stream = tls(addr, cert, &[b"http/1.1"]).await;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// HTTP/2 over TLS (ALPN `h2`), trusting `cert`.
pub async fn h2_tls(
    addr: &str,
    cert: &std::path::Path,
) -> hyper::client::conn::http2::SendRequest<RawBody> {
    let stream = tls(addr, cert, &[b"h2"]).await;
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}
