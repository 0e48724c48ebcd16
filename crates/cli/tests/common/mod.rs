//! Test support: a real `tether serve` process on a loopback port, and a raw gRPC client that
//! can send any bytes to any method.

#![allow(dead_code)]

pub mod client;
pub mod raw;
pub mod signaling;

#[allow(unused_imports, reason = "not every test binary authenticates")]
pub use signaling::authenticate;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// A running `tether serve`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the server with extra arguments, bound to 127.0.0.1 on a free port.
    pub fn start(args: &[&str]) -> Server {
        let mut all = vec!["--bind", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Server::start_exact(&all)
    }

    /// Starts `tether serve` with exactly these arguments (the config decides the address).
    pub fn start_exact(args: &[&str]) -> Server {
        Server::start_command("serve", args)
    }

    /// Starts `tether signal` (a standalone signaling service) with these arguments.
    pub fn start_signal(args: &[&str]) -> Server {
        Server::start_command("signal", args)
    }

    /// Starts `tether COMMAND ARGS`, and waits for it to say where it listens.
    pub fn start_command(command: &str, args: &[&str]) -> Server {
        Server::start_under(&[], command, args)
    }

    /// Starts `WRAPPER… tether COMMAND ARGS` (a wrapper such as `faketime -f +60s`), and
    /// waits for it to say where it listens.
    pub fn start_under(wrapper: &[&str], command: &str, args: &[&str]) -> Server {
        // TETHER_SERVER_BIN runs the same tests against another build (e.g. an older one, to
        // show an attack test failing before its fix).
        let bin = std::env::var("TETHER_SERVER_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_tether").to_string());
        let mut line: Vec<&str> = wrapper.to_vec();
        line.push(&bin);
        let mut child = Command::new(line[0])
            .args(&line[1..])
            .arg(command)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tether");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    // The line goes into the log before the address is announced, so a test
                    // that reads the log once start returns sees the "listening on" line too.
                    let addr = line
                        .split("listening on ")
                        .nth(1)
                        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string());
                    log.lock().unwrap().push(line);
                    if let Some(addr) = addr {
                        let _ = tx.send(addr);
                    }
                }
            });
        }
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("server did not start; log: {:?}", log.lock().unwrap()));
        Server { child, addr, log }
    }

    /// Waits up to `limit` for a log line containing `text`.
    pub fn wait_for_log(&self, text: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.log.lock().unwrap().iter().any(|l| l.contains(text)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// A fresh HTTP/2 connection to the server.
    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connect")
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config's `"auth"` member with one API key (`"auth": {…}`, no comma).
pub fn api_key_auth(id: &str, key: &str) -> String {
    format!(r#""auth": {{"handlers": [{{"type": "api-key", "config": {{"{id}": "{key}"}}}}]}}"#)
}

/// `GET path` over plain HTTP/1.1 on a fresh connection; returns the whole reply.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

/// A loopback port free right now, for a server that must come back on the same address.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The lines a child process writes to `out`, as they come.
pub fn lines_of(out: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Writes `text` to a temporary file named `prefix` and a suffix no other call in this run
/// gets (tests run in parallel), and returns its path.
pub fn unique_temp_file(prefix: &str, text: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    temp_file(&format!("{prefix}-{n}.json"), text)
}

/// Writes `text` to a fresh temporary file and returns its path.
pub fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `tether serve --config FILE` expecting it to refuse; returns (exit code, stderr).
pub fn refused(config: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A codec that sends and receives raw message bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

/// See [`RawCodec`].
#[derive(Debug)]
pub struct Raw;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// A unary call with raw bytes.
pub async fn raw_unary(
    channel: &Channel,
    path: &str,
    body: impl Into<Bytes>,
) -> Result<tonic::Response<Bytes>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone())
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    grpc.unary(tonic::Request::new(body.into()), path, RawCodec)
        .await
}

/// A unary call with raw bytes and extra request metadata.
pub async fn raw_unary_with(
    channel: &Channel,
    path: &str,
    body: impl Into<Bytes>,
    metadata: &[(&'static str, &str)],
) -> Result<tonic::Response<Bytes>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    let mut request = tonic::Request::new(body.into());
    for (k, v) in metadata {
        request.metadata_mut().insert(*k, v.parse().unwrap());
    }
    grpc.unary(request, path, RawCodec).await
}

/// A bidi call sending one raw message and collecting every raw reply.
pub async fn raw_stream_once(
    channel: &Channel,
    path: &str,
    body: impl Into<Bytes>,
) -> Result<Vec<Bytes>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    let once = tonic::codegen::tokio_stream::once(body.into());
    let mut replies = grpc
        .streaming(tonic::Request::new(once), path, RawCodec)
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = replies.message().await? {
        out.push(m);
    }
    Ok(out)
}

/// A TCP proxy on loopback between a client and a server, that tests can cut and restore.
pub struct Proxy {
    pub addr: String,
    up: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Forwards a fresh loopback port to `target`.
    pub async fn start(target: &str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (up, _) = tokio::sync::watch::channel(true);
        let target = target.to_string();
        let state = up.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !*state.borrow() {
                    drop(client); // cut: refuse new connections
                    continue;
                }
                let mut down = state.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        // cut: drop both sides of every open connection
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Proxy { addr, up, task }
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether motor `name` is moving, asked over `ch` (a call that commands nothing).
pub async fn motor_moving(ch: &Channel, name: &str) -> bool {
    use tether_proto::viam::component::motor::v1::IsMovingRequest;
    use tether_proto::viam::component::motor::v1::motor_service_client::MotorServiceClient;
    MotorServiceClient::new(ch.clone())
        .is_moving(IsMovingRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
        .is_moving
}

/// How long after `since` motor `name` stopped, polling over `ch` for up to `limit`.
pub async fn motor_stopped_after(
    ch: &Channel,
    name: &str,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    while since.elapsed() < limit {
        if !motor_moving(ch, name).await {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}
