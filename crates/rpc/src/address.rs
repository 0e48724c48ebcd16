//! `host:port` addresses as config files and `rpc-host` write them.

/// An address that is not `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// No `:port`.
    #[error("{0:?} is not host:port")]
    NoPort(String),
    /// The port is not a number in 0-65535.
    #[error("{address:?}: port {port:?} is not a number in 0-65535")]
    BadPort { address: String, port: String },
}

/// Splits `host:port`, `[v6]:port` or `:port` (every interface). The host may be a name.
pub fn split_host_port(address: &str) -> Result<(String, u16), AddressError> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| AddressError::NoPort(address.to_string()))?;
    let port: u16 = port.parse().map_err(|_| AddressError::BadPort {
        address: address.to_string(),
        port: port.to_string(),
    })?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    Ok((host.to_string(), port))
}

/// Whether `name` can be a host name as `rpc-host` and configs carry it: not empty, at most
/// 253 bytes, no spaces or control characters.
pub fn is_host_name(name: &str) -> bool {
    !name.trim().is_empty()
        && name.len() <= 253
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(split_host_port(":8080").unwrap(), ("0.0.0.0".into(), 8080));
        assert_eq!(split_host_port("[::1]:9").unwrap(), ("::1".into(), 9));
        assert_eq!(
            split_host_port("robot.local:1").unwrap(),
            ("robot.local".into(), 1)
        );
        assert!(split_host_port("localhost").is_err());
        assert!(
            split_host_port("h:99999")
                .unwrap_err()
                .to_string()
                .contains("port")
        );
    }
}
