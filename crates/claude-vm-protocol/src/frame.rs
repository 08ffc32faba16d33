//! Framing of streamed bodies (`POST /v1/exec`, `POST /v1/backup/read-many`): each frame
//! is a one-byte kind, a big-endian u32 length, and that many bytes.

/// Kinds of frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Client → daemon, first frame: JSON [`crate::api::ExecRequest`].
    Start = 0,
    /// Client → daemon: bytes for stdin.
    Stdin = 1,
    /// Client → daemon: stdin is closed.
    StdinEof = 2,
    /// Client → daemon: terminal size, `rows: u16, cols: u16` big-endian.
    Resize = 3,
    /// Client → daemon: deliver a signal (one byte: the signal number).
    Signal = 4,
    /// Daemon → client: bytes from stdout (or the terminal).
    Stdout = 5,
    /// Daemon → client: bytes from stderr.
    Stderr = 6,
    /// Daemon → client, last frame: exit code, i32 big-endian (128+n for signal n).
    Exit = 7,
    /// Daemon → client, last frame: the command could not run; UTF-8 message.
    Error = 8,
    /// Daemon → client: the process started; its pid as u32 big-endian.
    Started = 9,
    /// `read-many`, daemon → client: the whole content of the next file asked.
    File = 10,
    /// `read-many`: the next file asked is gone (deleted since the scan); UTF-8 message.
    Missing = 11,
    /// `read-many`: the next file asked could not be read; UTF-8 message.
    Failed = 12,
    /// `read-many`: the next file asked is larger than a frame; read it on its own.
    Large = 13,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0 => Kind::Start,
            1 => Kind::Stdin,
            2 => Kind::StdinEof,
            3 => Kind::Resize,
            4 => Kind::Signal,
            5 => Kind::Stdout,
            6 => Kind::Stderr,
            7 => Kind::Exit,
            8 => Kind::Error,
            9 => Kind::Started,
            10 => Kind::File,
            11 => Kind::Missing,
            12 => Kind::Failed,
            13 => Kind::Large,
            _ => return None,
        })
    }
}

/// What a client sends after the start frame, decoded: the input side of a running
/// command, whoever feeds it (`POST /v1/exec`, or an SSH session channel in the daemon).
#[derive(Debug)]
pub enum Input {
    Stdin(Vec<u8>),
    StdinEof,
    Resize {
        rows: u16,
        cols: u16,
    },
    Signal(i32),
    /// The client went away (the request stream was reset or failed).
    Gone,
}

/// Largest frame payload accepted.
pub const MAX_FRAME: usize = 1 << 20;

/// Most paths one `POST /v1/backup/read-many` may ask for.
pub const READ_MANY_MAX_PATHS: usize = 4096;

/// The five bytes before a frame's payload of `len` bytes.
pub fn header(kind: Kind, len: usize) -> [u8; 5] {
    let l = (len as u32).to_be_bytes();
    [kind as u8, l[0], l[1], l[2], l[3]]
}

/// Encode one frame.
pub fn encode(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.extend_from_slice(&header(kind, payload.len()));
    out.extend_from_slice(payload);
    out
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame of {0} bytes is larger than the limit of {MAX_FRAME}")]
    TooLarge(usize),
}

/// Incremental decoder: feed bytes, take whole frames.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf` (frames taken are dropped on the next push, so
    /// a chunk holding many frames is not shifted once per frame).
    start: usize,
}

impl Decoder {
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<(Kind, Vec<u8>)>, FrameError> {
        let buf = &self.buf[self.start..];
        if buf.len() < 5 {
            return Ok(None);
        }
        let kind = Kind::from_u8(buf[0]).ok_or(FrameError::UnknownKind(buf[0]))?;
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if buf.len() < 5 + len {
            return Ok(None);
        }
        let payload = buf[5..5 + len].to_vec();
        self.start += 5 + len;
        Ok(Some((kind, payload)))
    }

    /// Bytes buffered but not yet a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_any_chunking() {
        let mut wire = Vec::new();
        wire.extend(encode(Kind::Start, b"{\"cmd\":[\"true\"]}"));
        wire.extend(encode(Kind::Stdin, &[0u8; 70000]));
        wire.extend(encode(Kind::StdinEof, b""));
        for chunk in [1, 3, 5, 4096, wire.len()] {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for c in wire.chunks(chunk) {
                d.push(c);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got.len(), 3, "chunk {chunk}");
            assert_eq!(got[1].1.len(), 70000);
            assert_eq!(got[2], (Kind::StdinEof, vec![]));
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let mut d = Decoder::default();
        d.push(&[42, 0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::UnknownKind(42)));
        let mut d = Decoder::default();
        d.push(&[1, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge(0xffff_ffff)));
    }
}
