//! Finding out what a new connection speaks: TLS (when configured) with ALPN, or a sniff of
//! the first bytes to tell HTTP/2 with prior knowledge (h2c, what gRPC clients send) from
//! HTTP/1.1 — all under the header-read timeout, so a silent peer cannot hold a slot. The bytes
//! read to decide are replayed by [`Prefixed`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http2,
    Http1,
}

/// A connection's byte stream, plaintext or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Reads just enough to tell HTTP/2 prior knowledge from HTTP/1; returns the bytes read.
async fn sniff<I: AsyncRead + Unpin>(stream: &mut I) -> io::Result<(Protocol, Vec<u8>)> {
    let mut buf = vec![0u8; H2_PREFACE.len()];
    let mut have = 0;
    while have < H2_PREFACE.len() {
        let n = stream.read(&mut buf[have..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before sending a request",
            ));
        }
        have += n;
        if buf[..have] != H2_PREFACE[..have] {
            buf.truncate(have);
            return Ok((Protocol::Http1, buf));
        }
    }
    Ok((Protocol::Http2, buf))
}

/// Completes TLS (if configured) and finds the protocol, all within `timeout`.
pub(crate) async fn negotiate(
    stream: TcpStream,
    tls: Option<&Arc<rustls::ServerConfig>>,
    timeout: Duration,
) -> Result<(Box<dyn Io>, Protocol), String> {
    let work = async {
        match tls {
            Some(config) => {
                let mut tls = tokio_rustls::TlsAcceptor::from(config.clone())
                    .accept(stream)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                match tls.get_ref().1.alpn_protocol() {
                    Some(b"h2") => Ok((Box::new(tls) as Box<dyn Io>, Protocol::Http2)),
                    Some(_) => Ok((Box::new(tls) as Box<dyn Io>, Protocol::Http1)),
                    // No ALPN: the client may still speak HTTP/2 with prior knowledge.
                    None => {
                        let (protocol, prefix) =
                            sniff(&mut tls).await.map_err(|e| e.to_string())?;
                        Ok((
                            Box::new(Prefixed::new(prefix, tls)) as Box<dyn Io>,
                            protocol,
                        ))
                    }
                }
            }
            None => {
                let mut stream = stream;
                let (protocol, prefix) = sniff(&mut stream).await.map_err(|e| e.to_string())?;
                Ok((
                    Box::new(Prefixed::new(prefix, stream)) as Box<dyn Io>,
                    protocol,
                ))
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no request within {timeout:?}"))?
}

/// A stream that first yields bytes already read from it.
struct Prefixed<I> {
    prefix: Vec<u8>,
    read: usize,
    inner: I,
}

impl<I> Prefixed<I> {
    fn new(prefix: Vec<u8>, inner: I) -> Self {
        Self {
            prefix,
            read: 0,
            inner,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read < self.prefix.len() {
            let n = (self.prefix.len() - self.read).min(buf.remaining());
            let start = self.read;
            buf.put_slice(&self.prefix[start..start + n]);
            self.read += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
