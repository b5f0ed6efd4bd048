//! TLS for the gRPC port (rustls with the ring provider, through tonic) and the HTTP
//! port (rustls directly): the server's certificate chain and key, and with `client_ca`
//! set, mutual TLS: every client must present a certificate signed by one of those CAs,
//! or the handshake fails.

use crate::config::Tls;
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
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

/// The certificates of a PEM file.
fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(&read_pem(path, what)?)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| {
            format!(
                "[tls] {what}: {} holds no valid certificate",
                path.display()
            )
        })
}

/// The rustls configuration of the HTTP port for `[tls]` (the same files as gRPC's),
/// offering HTTP/2 and HTTP/1.1 by ALPN; `None` when TLS is off.
pub fn http_config(tls: &Tls) -> Result<Option<Arc<rustls::ServerConfig>>> {
    if !tls.enabled() {
        return Ok(None);
    }
    let certs = certificates(&tls.cert, "cert")?;
    let key = PrivateKeyDer::from_pem_slice(&read_pem(&tls.key, "key")?)
        .with_context(|| format!("[tls] key: {} holds no private key", tls.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("[tls]: no TLS version available")?;
    let builder = if tls.client_ca.as_os_str().is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for ca in certificates(&tls.client_ca, "client_ca")? {
            roots
                .add(ca)
                .context("[tls] client_ca: an unusable CA certificate")?;
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .context("[tls] client_ca")?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("[tls]: the key does not fit the certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
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
