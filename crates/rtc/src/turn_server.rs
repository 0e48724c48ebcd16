//! An in-process TURN server (which also answers STUN binding requests) on loopback, for
//! tests and benchmarks of the relayed path. Static credentials; relays bound to 127.0.0.1.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use turn::auth::{AuthHandler, generate_auth_key};
use turn::relay::relay_static::RelayAddressGeneratorStatic;
use turn::server::Server;
use turn::server::config::{ConnConfig, ServerConfig};
use webrtc_util::vnet::net::Net;

use crate::IceServer;

const REALM: &str = "tether.test";

struct StaticUsers(HashMap<String, Vec<u8>>);

impl AuthHandler for StaticUsers {
    fn auth_handle(
        &self,
        username: &str,
        _realm: &str,
        _src: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        self.0
            .get(username)
            .cloned()
            .ok_or(turn::Error::ErrNoSuchUser)
    }
}

/// A running TURN server; stops when dropped or closed.
pub struct TurnServer {
    server: Option<Server>,
    address: SocketAddr,
    username: String,
    password: String,
}

impl TurnServer {
    /// Starts a server on 127.0.0.1 (an ephemeral UDP port) accepting one user.
    pub async fn start(username: &str, password: &str) -> std::io::Result<Self> {
        let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let address = socket.local_addr()?;
        let users = HashMap::from([(
            username.to_string(),
            generate_auth_key(username, REALM, password),
        )]);
        let server = Server::new(ServerConfig {
            conn_configs: vec![ConnConfig {
                conn: Arc::new(socket),
                relay_addr_generator: Box::new(RelayAddressGeneratorStatic {
                    relay_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    address: "127.0.0.1".into(),
                    net: Arc::new(Net::new(None)),
                }),
            }],
            realm: REALM.into(),
            auth_handler: Arc::new(StaticUsers(users)),
            channel_bind_timeout: std::time::Duration::from_secs(0),
            alloc_close_notify: None,
        })
        .await
        .map_err(std::io::Error::other)?;
        Ok(Self {
            server: Some(server),
            address,
            username: username.into(),
            password: password.into(),
        })
    }

    /// The server's address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The ICE server entry (a `turn:` URL with credentials) that reaches it.
    pub fn ice_server(&self) -> IceServer {
        IceServer {
            urls: vec![format!("turn:{}?transport=udp", self.address)],
            username: self.username.clone(),
            credential: self.password.clone(),
        }
    }

    /// Stops the server.
    pub async fn close(mut self) {
        if let Some(s) = self.server.take() {
            let _ = s.close().await;
        }
    }
}
