//! Heartbeat datagrams over UDP ([`tether_rpc::heartbeat::udp`]) at the machine's port
//! number, on every address it listens on.
//!
//! One task per socket reads a datagram at a time and answers it (or not) at once: the work
//! per datagram is two HMACs and one short lock, so a flood costs CPU in proportion and delays
//! nothing else. Only a datagram signed with a live or recently known session's key is
//! answered, with an answer of the same size: the port reflects nothing to a forger.

use std::net::SocketAddr;
use std::sync::Arc;

use tether_rpc::heartbeat::udp::REQUEST_LEN;
use tokio::net::UdpSocket;

use crate::sessions::Sessions;

/// Binds UDP at each TCP listener's address. An address that cannot be bound (its port is
/// taken on UDP) is logged and skipped: direct clients then heartbeat over TCP only.
pub async fn bind(addresses: &[SocketAddr]) -> Vec<UdpSocket> {
    let mut sockets = Vec::new();
    for address in addresses {
        match UdpSocket::bind(address).await {
            Ok(s) => sockets.push(s),
            Err(e) => tracing::warn!(
                %address,
                error = %e,
                "cannot listen for heartbeat datagrams; direct clients heartbeat over TCP only"
            ),
        }
    }
    sockets
}

/// Serves heartbeat datagrams on `socket` until the task is aborted.
pub async fn serve(socket: UdpSocket, sessions: Arc<Sessions>) {
    // One byte more than a request, so a longer datagram is seen as too long, not cut short.
    let mut buf = [0u8; REQUEST_LEN + 1];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                // An ICMP error reported by a previous send, or a transient failure: nothing
                // to do but go on, without spinning if it persists.
                tracing::debug!(error = %e, "heartbeat datagram socket");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if let Some(ack) = sessions.datagram(&buf[..n]) {
            let _ = socket.send_to(&ack, from).await;
        }
    }
}
