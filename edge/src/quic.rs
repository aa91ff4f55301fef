//! QUIC endpoints for the relay (quinn over rustls with aws-lc-rs).
//!
//! The upstream presents a self-signed certificate made at start. The edge accepts any
//! certificate: who is on the other end is proven by the cluster-secret handshake, which is bound
//! to this TLS session's exporter (see `docs/relay-protocol.md`), so a relaying third party fails
//! it. Both sides also bound idle time and keep the connection alive.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::proto::{ALPN, EXPORTER_LABEL};

pub use quinn::Endpoint;

/// A relay peer that sends nothing for this long is gone (keepalives come every 500 ms, so
/// this is six lost in a row). It bounds how long an edge's viewers freeze when the upstream
/// dies without closing (a crash, a power cut): measured in docs/benchmarks.md.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
const KEEP_ALIVE: Duration = Duration::from_millis(500);

/// Errors setting up a relay endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicError {
    /// Certificate or TLS configuration.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// Binding the UDP socket.
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    // IDLE_TIMEOUT is far below quinn's 2^62 ms limit; the conversion cannot fail.
    if let Ok(idle) = quinn::IdleTimeout::try_from(IDLE_TIMEOUT) {
        t.max_idle_timeout(Some(idle));
    }
    t.datagram_receive_buffer_size(Some(4 << 20));
    t.datagram_send_buffer_size(4 << 20);
    Arc::new(t)
}

/// A listening upstream endpoint on `addr` with a fresh self-signed certificate.
pub fn server(addr: SocketAddr) -> Result<quinn::Endpoint, QuicError> {
    let cert = rcgen::generate_simple_self_signed(vec!["aethex-relay".to_string()])
        .map_err(|e| QuicError::Tls(e.to_string()))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let chain = vec![CertificateDer::from(cert.cert.der().to_vec())];
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| QuicError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| QuicError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| QuicError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport());
    quinn::Endpoint::server(config, addr).map_err(|e| QuicError::Bind(addr, e))
}

/// A client endpoint for connecting to an upstream.
pub fn client() -> Result<quinn::Endpoint, QuicError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| QuicError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SecretAuthenticated(provider())))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| QuicError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport());
    let any = SocketAddr::from(([0, 0, 0, 0], 0));
    let mut endpoint = quinn::Endpoint::client(any).map_err(|e| QuicError::Bind(any, e))?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// The connection's TLS exporter value for the handshake's channel binding.
pub fn exporter(conn: &quinn::Connection) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, EXPORTER_LABEL, b"")
        .ok()?;
    Some(out)
}

/// Accepts the upstream's certificate whatever it is (signatures are still checked, so the
/// TLS handshake itself is sound): identity comes from the cluster-secret handshake.
#[derive(Debug)]
struct SecretAuthenticated(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for SecretAuthenticated {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
