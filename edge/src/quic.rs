//! QUIC endpoints for the relay (quinn over rustls with aws-lc-rs).
//!
//! By default the upstream presents a self-signed certificate made at start, and the edge accepts
//! any certificate: who is on the other end is proven by the cluster-secret handshake, which is
//! bound to this TLS session's exporter (see `docs/relay-protocol.md`), so a relaying third
//! party fails it. With [`Pki`] (`relay.tls_cert`, `relay.tls_key`, `relay.tls_ca`) both ends
//! also present certificates of the cluster's CA and check each other's (mutual TLS); the
//! secret handshake still runs. Both sides bound idle time and keep the connection alive.

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

/// Outgoing relay datagrams buffered per connection, at most.
pub const DATAGRAM_SEND_BUFFER: usize = 512 << 10;

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    // IDLE_TIMEOUT is far below quinn's 2^62 ms limit; the conversion cannot fail.
    if let Ok(idle) = quinn::IdleTimeout::try_from(IDLE_TIMEOUT) {
        t.max_idle_timeout(Some(idle));
    }
    // Live media, not bulk data: a datagram that waits long in a buffer is worse than lost.
    // Under loss (and a starved CPU) Cubic shrinks the window and 4 MiB of queued datagrams
    // was seconds of delay: viewers at the edge fell 2.7 s behind live, and NACK resends
    // queued behind the backlog arrived after the edge gave up on them. BBR does not take
    // random loss for congestion, and 512 KiB (three large keyframes) bounds the queue: when
    // it is full the oldest datagrams go (repaired by NACK, or by the next keyframe).
    t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    t.datagram_receive_buffer_size(Some(1 << 20));
    t.datagram_send_buffer_size(DATAGRAM_SEND_BUFFER);
    Arc::new(t)
}

/// A node's certificate chain and key, and the cluster CA that signs every node's certificate
/// (mutual TLS on the relay).
pub struct Pki {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<rustls::RootCertStore>,
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> QuicError {
    QuicError::Tls(format!("{what}: {e}"))
}

impl Pki {
    /// From PEM text: the node's certificate (chain), its private key, the CA certificate(s).
    pub fn from_pem(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<Self, QuicError> {
        use rustls::pki_types::pem::PemObject;
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_err("certificate", e))?;
        if chain.is_empty() {
            return Err(QuicError::Tls(
                "certificate: no CERTIFICATE in the PEM".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| tls_err("private key", e))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca) {
            roots
                .add(ca.map_err(|e| tls_err("CA", e))?)
                .map_err(|e| tls_err("CA", e))?;
        }
        if roots.is_empty() {
            return Err(QuicError::Tls("CA: no CERTIFICATE in the PEM".into()));
        }
        Ok(Self {
            chain,
            key,
            roots: Arc::new(roots),
        })
    }

    /// From PEM files.
    pub fn load(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
    ) -> Result<Self, QuicError> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| QuicError::Tls(format!("{}: {e}", p.display())))
        };
        Self::from_pem(&read(cert)?, &read(key)?, &read(ca)?)
    }
}

/// A listening upstream endpoint on `addr`: with `pki`, its certificate, and edges must present
/// one of the same CA; without, a fresh self-signed certificate.
pub fn server(addr: SocketAddr, pki: Option<&Pki>) -> Result<quinn::Endpoint, QuicError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| QuicError::Tls(e.to_string()))?;
    let mut tls = match pki {
        Some(pki) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                pki.roots.clone(),
                provider(),
            )
            .build()
            .map_err(|e| tls_err("client verifier", e))?;
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(pki.chain.clone(), pki.key.clone_key())
                .map_err(|e| tls_err("certificate", e))?
        }
        None => {
            let cert = rcgen::generate_simple_self_signed(vec!["aethex-relay".to_string()])
                .map_err(|e| QuicError::Tls(e.to_string()))?;
            let key =
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
            let chain = vec![CertificateDer::from(cert.cert.der().to_vec())];
            builder
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .map_err(|e| QuicError::Tls(e.to_string()))?
        }
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| QuicError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport());
    quinn::Endpoint::server(config, addr).map_err(|e| QuicError::Bind(addr, e))
}

/// A client endpoint for connecting to an upstream: with `pki`, it checks the upstream's
/// certificate against the CA (for the name it connects to) and presents its own; without, it
/// accepts any certificate (the secret handshake authenticates).
pub fn client(pki: Option<&Pki>) -> Result<quinn::Endpoint, QuicError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| QuicError::Tls(e.to_string()))?;
    let mut tls = match pki {
        Some(pki) => builder
            .with_root_certificates(pki.roots.clone())
            .with_client_auth_cert(pki.chain.clone(), pki.key.clone_key())
            .map_err(|e| tls_err("certificate", e))?,
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SecretAuthenticated(provider())))
            .with_no_client_auth(),
    };
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
