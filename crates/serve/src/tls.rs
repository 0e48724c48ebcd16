//! TLS: the server's rustls configuration (ring provider, ALPN `h2` and `http/1.1` on the same
//! port) loaded from PEM files, and self-signed certificates for a machine name.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Loads a certificate chain and its private key (PEM) into a server configuration. Every
/// failure names the file and what was wrong with it.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| format!("network.tls_cert_file {}: {e}", cert_file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("network.tls_cert_file {}: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "network.tls_cert_file {}: no PEM certificate found",
            cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("network.tls_key_file {}: {e}", key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "network.tls_cert_file {} / tls_key_file {}: {e}",
                cert_file.display(),
                key_file.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot generate a certificate for {names:?}: {reason}")]
pub struct CertificateError {
    /// The names it was for.
    pub names: Vec<String>,
    /// Why.
    pub reason: String,
}

/// A self-signed certificate and its key (both PEM) valid for `names` (DNS names or IPs).
pub fn self_signed(names: &[String]) -> Result<(String, String), CertificateError> {
    let certified =
        rcgen::generate_simple_self_signed(names.to_vec()).map_err(|e| CertificateError {
            names: names.to_vec(),
            reason: e.to_string(),
        })?;
    Ok((certified.cert.pem(), certified.signing_key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_load_and_bad_files_are_named() {
        let dir = std::env::temp_dir().join(format!("tether-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, &cert).unwrap();
        std::fs::write(&k, &key).unwrap();
        let config = server_config(&c, &k).unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        // Swapped files, a missing file, a key that does not match the certificate.
        assert!(server_config(&k, &c).unwrap_err().contains("tls_cert_file"));
        assert!(
            server_config(&dir.join("nope.pem"), &k)
                .unwrap_err()
                .contains("nope.pem")
        );
        let (_, other_key) = self_signed(&["localhost".into()]).unwrap();
        std::fs::write(dir.join("other.pem"), other_key).unwrap();
        let e = server_config(&c, &dir.join("other.pem")).unwrap_err();
        assert!(e.contains("tls_key_file"), "{e}");
    }
}
