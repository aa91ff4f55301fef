//! Relay datagrams too large for the path (docs/relay-protocol.md, "Datagrams too large for the
//! path"): a QUIC connection starts at a 1,200-byte packet size and raises it by MTU discovery,
//! so quinn's largest datagram is about 1,150 bytes until then, while publishers send RTP
//! packets of up to ~1,300. quinn refuses a larger datagram (and would refuse every NACK
//! resend of it), so such a datagram goes on a unidirectional stream of its own, to an edge
//! that reads them ([`Out`] at the upstream, [`Incoming`] at the edge).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};

use crate::metrics::RelayMetrics;

/// Large datagrams on their way over streams to one edge, at most: beyond it they are dropped
/// (counted), so a path whose datagram size stays too small cannot pile up tasks.
pub const IN_FLIGHT: usize = 64;
/// Large datagrams read from streams and not yet handled at an edge, at most (more are
/// dropped, as a full datagram receive buffer drops).
const QUEUE: usize = 256;
/// The largest datagram a stream may carry (a relay datagram is one RTP packet).
const MAX: usize = 64 << 10;

/// Where one edge's media goes out, at its upstream.
pub(crate) struct Out {
    conn: quinn::Connection,
    /// The edge reads large datagrams from streams: the permits for those on their way.
    large: Option<Arc<Semaphore>>,
    metrics: Arc<RelayMetrics>,
}

impl Out {
    /// Media out on `conn`; `large`: the edge's hello said it reads large datagrams.
    pub fn new(conn: quinn::Connection, large: bool, metrics: Arc<RelayMetrics>) -> Self {
        Self {
            conn,
            large: large.then(|| Arc::new(Semaphore::new(IN_FLIGHT))),
            metrics,
        }
    }

    /// Send one relay datagram: as a datagram, or on a stream of its own when it is larger
    /// than the path takes now. A full datagram queue discards its oldest to make room:
    /// counted, since it means the path (or the edge reading it) does not keep up. The
    /// connection closing: dropped, like a lost packet.
    pub fn send(&self, datagram: Bytes) {
        let conn = &self.conn;
        if conn
            .max_datagram_size()
            .is_some_and(|max| datagram.len() > max)
        {
            self.metrics.large(1);
            let permit = self
                .large
                .as_ref()
                .and_then(|l| l.clone().try_acquire_owned().ok());
            let Some(permit) = permit else {
                self.metrics.large_dropped(1);
                return;
            };
            let conn = conn.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Ok(mut s) = conn.open_uni().await {
                    if s.write_all(&datagram).await.is_ok() {
                        let _ = s.finish();
                    }
                }
            });
            return;
        }
        if conn.datagram_send_buffer_space() < datagram.len() {
            self.metrics.overflow(1);
        }
        let _ = conn.send_datagram(datagram);
    }
}

/// An edge's relay datagrams: the connection's own, and the large ones from streams.
pub(crate) struct Incoming {
    large: mpsc::Receiver<Bytes>,
    /// The stream reader holds the connection: it stops when this is dropped.
    reader: tokio::task::JoinHandle<()>,
}

impl Incoming {
    /// Start reading `conn`'s streams.
    pub fn new(conn: &quinn::Connection) -> Self {
        let (to, large) = mpsc::channel(QUEUE);
        Self {
            large,
            reader: tokio::spawn(read_streams(conn.clone(), to)),
        }
    }

    /// The next relay datagram (cancel-safe: for `select!`).
    pub async fn next(
        &mut self,
        conn: &quinn::Connection,
    ) -> Result<Bytes, quinn::ConnectionError> {
        tokio::select! {
            biased;
            d = conn.read_datagram() => d,
            Some(d) = self.large.recv() => Ok(d),
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Read every unidirectional stream the upstream opens as one relay datagram.
async fn read_streams(conn: quinn::Connection, to: mpsc::Sender<Bytes>) {
    while let Ok(mut s) = conn.accept_uni().await {
        let one = to.clone();
        tokio::spawn(async move {
            if let Ok(d) = s.read_to_end(MAX).await {
                let _ = one.try_send(Bytes::from(d));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A connected pair on loopback: (upstream's side, edge's side).
    async fn pair() -> (quinn::Connection, quinn::Connection) {
        let server = crate::quic::server(([127, 0, 0, 1], 0).into(), None).unwrap();
        let client = crate::quic::client(None).unwrap();
        let addr = server.local_addr().unwrap();
        let accept = tokio::spawn(async move { server.accept().await.unwrap().await.unwrap() });
        let edge = client.connect(addr, "upstream").unwrap().await.unwrap();
        (accept.await.unwrap(), edge)
    }

    fn datagram(len: usize, tag: u8) -> Bytes {
        Bytes::from(vec![tag; len])
    }

    #[tokio::test]
    async fn a_datagram_larger_than_the_path_arrives_on_a_stream_and_small_ones_stay_datagrams() {
        let (up, edge) = pair().await;
        let metrics = Arc::new(RelayMetrics::new());
        let out = Out::new(up.clone(), true, metrics.clone());
        let max = up.max_datagram_size().unwrap();
        // Larger than any path MTU quinn discovers (its upper bound is 1,452).
        out.send(datagram(4000, 1));
        out.send(datagram(max.min(1000), 2));
        let mut incoming = Incoming::new(&edge);
        let mut got = Vec::new();
        for _ in 0..2 {
            let d = tokio::time::timeout(Duration::from_secs(5), incoming.next(&edge))
                .await
                .expect("both arrive")
                .unwrap();
            got.push((d.len(), d[0]));
        }
        got.sort();
        assert_eq!(got, vec![(max.min(1000), 2), (4000, 1)]);
        let text = metrics.render();
        assert!(
            text.contains("aethex_relay_large_datagrams_total 1"),
            "{text}"
        );
        assert!(
            text.contains("aethex_relay_large_dropped_total 0"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_edge_that_reads_no_streams_gets_no_large_datagram_and_it_is_counted() {
        let (up, edge) = pair().await;
        let metrics = Arc::new(RelayMetrics::new());
        let out = Out::new(up.clone(), false, metrics.clone());
        out.send(datagram(4000, 1));
        out.send(datagram(100, 2));
        let mut incoming = Incoming::new(&edge);
        let d = tokio::time::timeout(Duration::from_secs(5), incoming.next(&edge))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((d.len(), d[0]), (100, 2));
        let text = metrics.render();
        assert!(
            text.contains("aethex_relay_large_dropped_total 1"),
            "{text}"
        );
    }
}
