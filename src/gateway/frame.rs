//! WebSocket frames read and written a piece at a time, so that the relay
//! (`ws`) holds a fixed buffer per WebSocket rather than whole messages.
//!
//! tungstenite parses and formats the frame headers; it has no way to pass a
//! frame's payload through without holding the whole message (it reserves a
//! frame's full length as soon as its header arrives, and keeps each
//! connection's buffers at the largest message it carried), which let
//! sixteen WebSockets take a gateway to 75 MB. Only this streaming part is
//! ours.

use std::io::{self, Cursor};

use bytes::Buf;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tungstenite::protocol::frame::coding::{CloseCode, Control, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// RFC 6455 5.5: a control frame carries at most 125 bytes.
pub const MAX_CONTROL: u64 = 125;

/// One frame's header and the length of the payload that follows it.
#[derive(Debug)]
pub struct Head {
    pub header: FrameHeader,
    pub len: u64,
}

impl Head {
    pub fn is_control(&self) -> bool {
        matches!(self.header.opcode, OpCode::Control(_))
    }

    /// What RFC 6455 (section 5) requires of every frame from `peer`, with no
    /// extension negotiated: a client masks and a server does not, no
    /// reserved bit is set, and a control frame is whole and short.
    pub fn check(&self, from_client: bool) -> Result<(), &'static str> {
        let h = &self.header;
        if h.mask.is_some() != from_client {
            return Err(match from_client {
                true => "a client frame must be masked",
                false => "a server frame must not be masked",
            });
        }
        if h.rsv1 || h.rsv2 || h.rsv3 {
            return Err("no extension was negotiated");
        }
        if self.is_control() && (!h.is_final || self.len > MAX_CONTROL) {
            return Err("a control frame must be one frame of at most 125 bytes");
        }
        Ok(())
    }
}

fn invalid(what: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Waits until the stream has a byte to read or has ended (true), without
/// taking anything: safe to race against other work, unlike [`read_head`].
pub async fn readable<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<bool> {
    use tokio::io::AsyncBufReadExt;
    Ok(r.fill_buf().await?.is_empty())
}

/// Reads the next frame header; `None` when the stream ends before one.
pub async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Head>> {
    let mut buf = [0u8; 14];
    if r.read(&mut buf[..1]).await? == 0 {
        return Ok(None);
    }
    r.read_exact(&mut buf[1..2]).await?;
    let length_bytes = match buf[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask_bytes = if buf[1] & 0x80 != 0 { 4 } else { 0 };
    // At most 2 + 8 + 4 = 14, the buffer's length.
    let end = 2usize
        .saturating_add(length_bytes)
        .saturating_add(mask_bytes);
    let rest = buf
        .get_mut(2..end)
        .ok_or_else(|| invalid("a frame header longer than 14 bytes"))?;
    r.read_exact(rest).await?;
    let whole = buf.get(..end).unwrap_or_default();
    match FrameHeader::parse(&mut Cursor::new(whole)) {
        Ok(Some((header, len))) => Ok(Some(Head { header, len })),
        Ok(None) => Err(invalid("a truncated frame header")),
        Err(e) => Err(invalid(e)),
    }
}

/// Reads a whole (short) payload, unmasked.
pub async fn read_payload<R: AsyncRead + Unpin>(r: &mut R, head: &Head) -> io::Result<Vec<u8>> {
    let len = usize::try_from(head.len).map_err(invalid)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    if let Some(mask) = head.header.mask {
        unmask(&mut payload, mask, 0);
    }
    Ok(payload)
}

/// XORs `data` with `mask`, `offset` bytes into the frame's payload (the
/// same operation masks and unmasks).
pub fn unmask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut key = mask;
    key.rotate_left(offset & 3);
    for (b, k) in data.iter_mut().zip(key.iter().cycle()) {
        *b ^= k;
    }
}

/// Writes frames to one side, masked when the gateway is that side's client.
/// It knows whether the stream stands between frames, so that a Close frame
/// is only written where it cannot land inside another frame.
pub struct Writer<W> {
    io: W,
    masked: bool,
    /// Header bytes not yet written (sent with the first payload piece).
    head: Vec<u8>,
    /// Payload bytes the frame being written still owes.
    owed: u64,
    /// False from the start of a write until its frame is complete; a write
    /// cancelled half-way leaves it false for good.
    between_frames: bool,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    pub fn new(io: W, masked: bool) -> Self {
        Writer {
            io,
            masked,
            head: Vec::with_capacity(14),
            owed: 0,
            between_frames: true,
        }
    }

    /// Writes one whole frame (masking `payload` in place when masked).
    pub async fn frame(&mut self, opcode: OpCode, payload: &mut [u8]) -> io::Result<()> {
        let len = u64::try_from(payload.len()).map_err(invalid)?;
        if let Some(mask) = self.begin(opcode, true, len)? {
            unmask(payload, mask, 0);
        }
        self.payload(payload).await
    }

    /// Begins a frame of `len` payload bytes, to be given to
    /// [`Writer::payload`] piece by piece as they arrive (an empty frame
    /// takes one empty piece, which writes its header). Only unmasked: the
    /// gateway streams only to the client, as its server.
    pub fn start(&mut self, opcode: OpCode, is_final: bool, len: u64) -> io::Result<()> {
        if self.masked {
            return Err(invalid("a masked frame is written whole"));
        }
        self.begin(opcode, is_final, len).map(drop)
    }

    /// Formats the header (sent with the first payload piece); returns the
    /// frame's mask.
    fn begin(&mut self, opcode: OpCode, is_final: bool, len: u64) -> io::Result<Option<[u8; 4]>> {
        if !self.between_frames || self.owed != 0 {
            return Err(invalid("a frame started inside another"));
        }
        let mask = self.masked.then(rand::random::<[u8; 4]>);
        let header = FrameHeader {
            is_final,
            opcode,
            mask,
            ..FrameHeader::default()
        };
        self.head.clear();
        header.format(len, &mut self.head).map_err(invalid)?;
        self.owed = len;
        self.between_frames = false;
        Ok(mask)
    }

    /// Writes the next piece of the frame's payload, with the header before
    /// the first piece in the same write.
    pub async fn payload(&mut self, piece: &[u8]) -> io::Result<()> {
        let n = u64::try_from(piece.len()).map_err(invalid)?;
        self.owed = self
            .owed
            .checked_sub(n)
            .ok_or_else(|| invalid("more payload than the frame's length"))?;
        let mut out = Buf::chain(self.head.as_slice(), piece);
        self.io.write_all_buf(&mut out).await?;
        self.head.clear();
        if self.owed == 0 {
            self.io.flush().await?;
            self.between_frames = true;
        }
        Ok(())
    }

    /// Sends a Close frame if the stream stands between frames (else the
    /// frame would corrupt the one cut off), then shuts the stream down.
    pub async fn close(&mut self, code: CloseCode, reason: &str) {
        if self.between_frames {
            let mut payload = u16::from(code).to_be_bytes().to_vec();
            // A control frame's payload is at most 125 bytes.
            payload.extend(reason.bytes().take(123));
            let _ = self
                .frame(OpCode::Control(Control::Close), &mut payload)
                .await;
        }
        let _ = self.io.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::coding::Data;

    #[test]
    fn unmasking_xors_each_byte_with_the_key_byte_at_its_payload_position() {
        let mask = [0x11, 0x22, 0x44, 0x88];
        for offset in 0..8 {
            for len in 0..10 {
                let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let mut got = data.clone();
                unmask(&mut got, mask, offset);
                let want: Vec<u8> = (0..len).map(|i| data[i] ^ mask[(offset + i) % 4]).collect();
                assert_eq!(got, want, "offset {offset}, {len} bytes");
            }
        }
    }

    async fn written(masked: bool, steps: &[(&[u8], bool)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out, masked);
        for (payload, streamed) in steps {
            let mut p = payload.to_vec();
            if *streamed && !masked {
                w.start(OpCode::Data(Data::Text), true, p.len() as u64)
                    .unwrap();
                for piece in p.chunks(3) {
                    w.payload(piece).await.unwrap();
                }
                if p.is_empty() {
                    w.payload(&[]).await.unwrap();
                }
            } else {
                let op = if *streamed { Data::Text } else { Data::Binary };
                w.frame(OpCode::Data(op), &mut p).await.unwrap();
            }
        }
        out
    }

    #[tokio::test]
    async fn frames_written_read_back_with_tungstenite_parsing_either_way() {
        for masked in [false, true] {
            let big = vec![7u8; 70_000];
            let out = written(masked, &[(b"hello", true), (&big, false), (b"", true)]).await;
            let mut r = out.as_slice();
            for (want, op) in [
                (&b"hello"[..], Data::Text),
                (&big[..], Data::Binary),
                (&b""[..], Data::Text),
            ] {
                let head = read_head(&mut r).await.unwrap().unwrap();
                assert_eq!(head.header.opcode, OpCode::Data(op));
                assert_eq!(head.check(masked), Ok(()));
                assert_eq!(read_payload(&mut r, &head).await.unwrap(), want);
            }
            assert!(read_head(&mut r).await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn a_frame_cut_off_leaves_no_room_for_a_close_frame() {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out, false);
        w.start(OpCode::Data(Data::Text), true, 10).unwrap();
        w.payload(b"12345").await.unwrap();
        assert!(w.payload(b"123456").await.is_err(), "more than owed");
        assert!(w.start(OpCode::Data(Data::Text), true, 1).is_err());
        w.close(CloseCode::Away, "bye").await;
        assert_eq!(out.len(), 2 + 5, "no Close frame inside the cut frame");

        let mut out = Vec::new();
        let mut w = Writer::new(&mut out, false);
        w.close(CloseCode::Away, &"x".repeat(500)).await;
        let mut r = out.as_slice();
        let head = read_head(&mut r).await.unwrap().unwrap();
        assert_eq!(head.len, 125);
        assert_eq!(head.check(false), Ok(()));
    }

    #[tokio::test]
    async fn headers_that_break_the_rules_are_named() {
        // Unmasked text from a client; a masked one from a server.
        let mut r: &[u8] = &[0x81, 0x00];
        let head = read_head(&mut r).await.unwrap().unwrap();
        assert!(head.check(true).is_err());
        assert_eq!(head.check(false), Ok(()));
        // RSV1 (permessage-deflate, never negotiated), a fragmented ping, a
        // 126-byte ping.
        for bytes in [
            &[0xc1u8, 0x00][..],
            &[0x09, 0x00],
            &[0x89, 0x7e, 0x00, 0x7e],
        ] {
            let mut r = bytes;
            let head = read_head(&mut r).await.unwrap().unwrap();
            assert!(head.check(false).is_err(), "{bytes:?}");
        }
        // A reserved opcode, and a header cut short.
        let mut r: &[u8] = &[0x83, 0x00];
        assert!(read_head(&mut r).await.is_err());
        let mut r: &[u8] = &[0x81, 0xfe, 0x00];
        assert!(read_head(&mut r).await.is_err());
    }
}
