//! UDP GSO batching of the core's datagrams.

use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// Datagrams of one destination and size, sent with one `sendmsg` (UDP GSO, Linux >= 4.18)
/// where the kernel supports it. A subscriber's packets for one frame come out of the core back
/// to back with equal sizes (the last may be shorter), which is what GSO can batch.
pub(super) struct Batch {
    buf: Vec<u8>,
    to: Option<SocketAddr>,
    segment: usize,
    count: usize,
    /// A shorter datagram ended the batch: nothing more may follow it.
    closed: bool,
}

/// At most this many bytes in one GSO send (the kernel limit is 64 KiB).
const GSO_MAX_BYTES: usize = 60_000;

impl Batch {
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(GSO_MAX_BYTES),
            to: None,
            segment: 0,
            count: 0,
            closed: false,
        }
    }

    pub fn fits(&self, to: SocketAddr, len: usize, max_segments: usize) -> bool {
        self.to == Some(to)
            && !self.closed
            && len <= self.segment
            && self.count < max_segments
            && self.buf.len() + len <= GSO_MAX_BYTES
    }

    pub fn push(&mut self, to: SocketAddr, data: &[u8]) {
        if self.count == 0 {
            self.to = Some(to);
            self.segment = data.len();
        } else if data.len() < self.segment {
            self.closed = true;
        }
        self.buf.extend_from_slice(data);
        self.count += 1;
    }

    pub async fn send(&mut self, socket: &UdpSocket, state: &quinn_udp::UdpSocketState) {
        let Some(to) = self.to.take() else { return };
        let transmit = quinn_udp::Transmit {
            destination: to,
            ecn: None,
            contents: &self.buf,
            segment_size: (self.count > 1).then_some(self.segment),
            src_ip: None,
        };
        // Bounded: a socket that stays full for 8 waits loses this batch (UDP may drop).
        for _ in 0..8 {
            match socket.try_io(tokio::io::Interest::WRITABLE, || {
                state.try_send(socket.into(), &transmit)
            }) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if socket.writable().await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, %to, "udp send failed");
                    break;
                }
            }
        }
        self.buf.clear();
        self.count = 0;
        self.closed = false;
    }
}
