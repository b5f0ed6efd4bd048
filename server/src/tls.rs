//! TLS for the gRPC port (rustls with the ring provider, through tonic): the server's
//! certificate chain and key, and with `client_ca` set, mutual TLS: every client must
//! present a certificate signed by one of those CAs, or the handshake fails.

use crate::config::Tls;
use anyhow::{Context, Result};
use std::path::Path;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>> {
    let pem = std::fs::read(path).with_context(|| format!("[tls] {what}: {}", path.display()))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN ") {
        anyhow::bail!("[tls] {what}: {} is not a PEM file", path.display());
    }
    Ok(pem)
}

/// The tonic TLS configuration for `[tls]`, `None` when TLS is off.
pub fn server_config(tls: &Tls) -> Result<Option<ServerTlsConfig>> {
    if !tls.enabled() {
        return Ok(None);
    }
    let identity = Identity::from_pem(read_pem(&tls.cert, "cert")?, read_pem(&tls.key, "key")?);
    let mut config = ServerTlsConfig::new()
        .identity(identity)
        .timeout(HANDSHAKE_TIMEOUT);
    if !tls.client_ca.as_os_str().is_empty() {
        let ca = Certificate::from_pem(read_pem(&tls.client_ca, "client_ca")?);
        config = config.client_ca_root(ca).client_auth_optional(false);
    }
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_without_cert_and_clear_errors_for_bad_files() {
        assert!(server_config(&Tls::default()).unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("cert.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let tls = Tls {
            cert: not_pem,
            key: dir.path().join("missing.pem"),
            ..Default::default()
        };
        let error = format!("{:#}", server_config(&tls).unwrap_err());
        assert!(error.contains("not a PEM file"), "{error}");
    }
}
