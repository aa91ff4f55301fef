//! What both ends of a relay connection share: the framed control stream, and the conversion
//! between the core's stream descriptions and the protocol's `tracks` message.

use sfu::{RelayTracks, StreamId};

use crate::proto::{Codec, Control, FrameReader, ProtoError, Track};

/// The control stream: length-prefixed JSON frames both ways.
pub(crate) struct ControlStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    reader: FrameReader,
    buf: Vec<u8>,
}

impl ControlStream {
    pub fn new(send: quinn::SendStream, recv: quinn::RecvStream) -> Self {
        Self {
            send,
            recv,
            reader: FrameReader::new(),
            buf: vec![0; 16 * 1024],
        }
    }

    /// The next message; `Ok(None)` when the peer finished the stream. Cancel-safe: a frame
    /// half read stays buffered in the reader.
    pub async fn read(&mut self) -> Result<Option<Control>, ProtoError> {
        loop {
            if let Some(msg) = self.reader.next_frame()? {
                return Ok(Some(msg));
            }
            match self.recv.read(&mut self.buf).await {
                Ok(Some(n)) => self.reader.push(&self.buf[..n]),
                Ok(None) => return Ok(None),
                Err(e) => return Err(ProtoError::Malformed(format!("control stream: {e}"))),
            }
        }
    }

    pub async fn write(&mut self, msg: &Control) -> Result<(), quinn::WriteError> {
        self.send.write_all(&msg.encode()).await
    }

    /// Send an error and finish the stream (the caller then drops the connection).
    pub async fn error(&mut self, code: &str, message: &str) {
        let _ = self
            .write(&Control::Error {
                code: code.to_string(),
                message: message.to_string(),
            })
            .await;
        let _ = self.send.finish();
    }
}

/// The `tracks` message for a stream whose block of track ids starts at `base`.
pub(crate) fn tracks_message(t: &RelayTracks, base: u16, private: bool) -> Control {
    Control::Tracks {
        channel: t.stream.to_string(),
        generation: t.generation,
        tracks: t
            .tracks
            .iter()
            .map(|(id, video)| Track {
                id: base + id,
                kind: if *video { "video" } else { "audio" }.to_string(),
            })
            .collect(),
        codecs: t.codecs.iter().map(Codec::from).collect(),
        private,
    }
}

/// The core's description of a stream from a `tracks` message, with track ids relative to the
/// stream's block (the lowest id in the message).
pub(crate) fn relay_tracks(
    channel: &str,
    generation: u64,
    tracks: &[Track],
    codecs: &[Codec],
) -> Option<(RelayTracks, u16)> {
    let stream = StreamId::parse(channel).ok()?;
    let base = tracks.iter().map(|t| t.id).min().unwrap_or(0);
    let base = base - base % crate::upstream::TRACK_BLOCK;
    Some((
        RelayTracks {
            stream,
            generation,
            tracks: tracks
                .iter()
                .map(|t| (t.id - base, t.kind == "video"))
                .collect(),
            codecs: codecs.iter().map(sfu::RelayCodec::from).collect(),
        },
        base,
    ))
}
