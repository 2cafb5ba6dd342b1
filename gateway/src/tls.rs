//! TLS from `--ssl_config_file`: TF Serving's `SSLConfig` (the PEM text itself, not
//! paths), for gRPC on every listener and, with `--rest_api_enable_ssl` (beyond TF
//! Serving, its issue #1503), for REST. `client_verify` requires a client certificate
//! that chains to `custom_ca`, as gRPC's
//! `GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY` does. Everything is
//! checked at startup: a config that cannot be honoured stops the server, never
//! downgrading it to plaintext.

use crate::error::ServingError;
use crate::text_format;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use tfgate_proto::tensorflow::serving::SslConfig;
use tokio_rustls::rustls;

/// A checked `--ssl_config_file`.
#[derive(Clone)]
pub struct Tls {
    ssl: SslConfig,
    /// For REST (HTTP/2 and HTTP/1.1 offered by ALPN).
    rest: Arc<rustls::ServerConfig>,
    /// For gRPC (HTTP/2 only).
    grpc: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("client_verify", &self.ssl.client_verify)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads and checks the file (`ParseProtoTextFile<SSLConfig>`).
    pub fn read_file(path: &str) -> Result<Tls, ServingError> {
        let ssl: SslConfig = text_format::read_file(path, "tensorflow.serving.SSLConfig")?;
        Tls::new(ssl).map_err(|why| ServingError::invalid_argument(format!("{path}: {why}")))
    }

    /// Checks a parsed config: certificates and key parse and match, the CA when
    /// `client_verify` asks for one.
    pub(crate) fn new(ssl: SslConfig) -> Result<Tls, String> {
        let rest = Arc::new(server_config(&ssl, &[b"h2", b"http/1.1"])?);
        let grpc = Arc::new(server_config(&ssl, &[b"h2"])?);
        Ok(Tls { ssl, rest, grpc })
    }

    /// gRPC's acceptor (offering `h2`, as gRPC C++ does).
    pub fn grpc(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.grpc.clone())
    }

    /// REST's acceptor.
    pub fn rest(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.rest.clone())
    }
}

/// The rustls server configuration `ssl` describes, or why there is none.
fn server_config(ssl: &SslConfig, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, String> {
    let certs = CertificateDer::pem_slice_iter(ssl.server_cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("server_cert is not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("server_cert holds no PEM certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(ssl.server_key.as_bytes())
        .map_err(|e| format!("server_key is not a PEM private key: {e}"))?;
    let builder = rustls::ServerConfig::builder();
    let builder = if ssl.client_verify {
        if ssl.custom_ca.trim().is_empty() {
            return Err(
                "client_verify needs custom_ca, the CA client certificates must chain to (tfgate does not trust the system's roots for clients)"
                    .into(),
            );
        }
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ssl.custom_ca.as_bytes()) {
            let ca = ca.map_err(|e| format!("custom_ca is not PEM certificates: {e}"))?;
            roots
                .add(ca)
                .map_err(|e| format!("custom_ca holds a certificate rustls refuses: {e}"))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .map_err(|e| format!("custom_ca cannot verify clients: {e}"))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("server_cert and server_key do not make a TLS identity: {e}"))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Result<Tls, ServingError> {
        let file =
            std::env::temp_dir().join(format!("tfgate-ssl-{}-{}", std::process::id(), text.len()));
        std::fs::write(&file, text).unwrap();
        let r = Tls::read_file(&file.to_string_lossy());
        std::fs::remove_file(&file).unwrap();
        r
    }

    #[test]
    fn unusable_configs_are_startup_errors() {
        let e = config("server_key: \"nope\" server_cert: \"nope\"").unwrap_err();
        assert!(
            e.message.ends_with("server_cert holds no PEM certificate"),
            "{}",
            e.message
        );
        let e = config("not a config").unwrap_err();
        assert!(
            e.message.starts_with("Invalid protobuf file: "),
            "{}",
            e.message
        );
        let e = Tls::read_file("/nonexistent/ssl.config").unwrap_err();
        assert_eq!(
            e.message,
            "/nonexistent/ssl.config; No such file or directory"
        );
    }
}
