//! Mutual TLS on the relay, over real QUIC sockets on loopback: nodes with certificates of the
//! cluster CA connect; a node without one, or with another CA's, is refused in the handshake.

use std::net::SocketAddr;
use std::time::Duration;

use edge::quic::{self, Pki};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// A node certificate of `ca` for `names`, usable as server and client; the node's PKI.
fn node(ca: &Ca, names: &[&str]) -> Pki {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    Pki::from_pem(
        cert.pem().as_bytes(),
        key.serialize_pem().as_bytes(),
        ca.pem.as_bytes(),
    )
    .unwrap()
}

/// Try a connection (and one round trip on a stream, so the server's verdict on the client
/// certificate has arrived).
async fn connects(server: &Pki, client: Option<&Pki>) -> Result<(), String> {
    let endpoint = quic::server(SocketAddr::from(([127, 0, 0, 1], 0)), Some(server)).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let accept = endpoint.clone();
    let serving = tokio::spawn(async move {
        let conn = accept.accept().await?.await.ok()?;
        let (mut send, mut recv) = conn.accept_bi().await.ok()?;
        let got = recv.read_to_end(16).await.ok()?;
        send.write_all(&got).await.ok()?;
        send.finish().ok()?;
        conn.closed().await;
        Some(())
    });
    let client_endpoint = quic::client(client).unwrap();
    let attempt = async {
        let conn = client_endpoint
            .connect(addr, "localhost")
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(b"ping").await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        let echo = recv.read_to_end(16).await.map_err(|e| e.to_string())?;
        conn.close(0u32.into(), b"done");
        (echo == b"ping").then_some(()).ok_or("no echo".to_string())
    };
    let result = tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".into()));
    serving.abort();
    endpoint.close(0u32.into(), b"");
    result
}

#[tokio::test]
async fn nodes_with_certificates_of_the_cluster_ca_connect() {
    let ca = ca();
    let result = connects(&node(&ca, &["localhost"]), Some(&node(&ca, &["edge-1"]))).await;
    assert_eq!(result, Ok(()));
}

#[tokio::test]
async fn an_edge_without_a_certificate_or_with_another_cas_is_refused() {
    let ca = ca();
    let server = node(&ca, &["localhost"]);
    let stranger = node(&self::ca(), &["edge-1"]);
    let refused = connects(&server, Some(&stranger)).await;
    assert!(refused.is_err(), "another CA's certificate was accepted");
    // Without PKI the edge accepts any server certificate but presents none: refused too.
    let refused = connects(&server, None).await;
    assert!(
        refused.is_err(),
        "a client without a certificate was accepted"
    );
}

#[tokio::test]
async fn an_upstream_whose_certificate_does_not_name_the_host_is_refused() {
    let ca = ca();
    let result = connects(
        &node(&ca, &["elsewhere.example"]),
        Some(&node(&ca, &["edge-1"])),
    )
    .await;
    let err = result.unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}
