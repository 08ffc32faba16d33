//! The transcript store: `transcript.jsonl`, one [`Event`] a line, append-only, the source
//! of truth of a conversation.
//!
//! Crash safety:
//! - [`Writer::open`] repairs the file first: a last line without its newline (the daemon
//!   died in the middle of a write) is completed when it is a whole event, and cut off
//!   otherwise, so the next event never gets glued to it; every complete line is kept.
//! - [`Writer::append`] reports every write or sync failure, and undoes a partial write, so
//!   the caller acknowledges only what is on disk and a failed append leaves no torn line.
//! - [`read`] never fails: lines that are not events (there should be none) are skipped.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use claude_vm_protocol::api::Event;

/// Where transcript lines go: the file, or (in tests) something that fails on demand.
pub trait Sink: Send {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cut the sink back to `len` bytes (to undo a partial write).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

impl Sink for std::fs::File {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Write::write_all(self, buf)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        std::fs::File::sync_data(self)
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)
    }
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the workspace disk is full")]
    DiskFull,
    #[error("cannot write the transcript: {0}")]
    Io(io::Error),
}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> StoreError {
        let full = matches!(
            e.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        ) || matches!(
            e.raw_os_error(),
            Some(c) if c == nix::errno::Errno::ENOSPC as i32 || c == nix::errno::Errno::EDQUOT as i32
        );
        if full {
            StoreError::DiskFull
        } else {
            StoreError::Io(e)
        }
    }
}

/// What [`repair`] did to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Repair {
    /// Bytes of a torn last line that were cut off.
    pub dropped: u64,
    /// Whether a last line that was a whole event only missing its newline was completed.
    pub completed: bool,
}

/// A torn tail longer than this is cut without trying to read it as an event.
const MAX_TAIL_PARSE: u64 = 64 * 1024 * 1024;

/// Make `file` end with a newline (or be empty), keeping every complete line.
pub fn repair_file(file: &mut std::fs::File) -> io::Result<Repair> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(Repair::default());
    }
    // Find the last newline, reading backwards.
    let mut end = len;
    let mut last_newline: Option<u64> = None;
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk[..n])?;
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            last_newline = Some(start + i as u64);
            break;
        }
        end = start;
    }
    let tail_start = last_newline.map_or(0, |i| i + 1);
    if tail_start == len {
        return Ok(Repair::default());
    }
    let tail_len = len - tail_start;
    let whole_event = tail_len <= MAX_TAIL_PARSE && {
        let mut tail = vec![0u8; tail_len as usize];
        file.seek(SeekFrom::Start(tail_start))?;
        file.read_exact(&mut tail)?;
        serde_json::from_slice::<Event>(&tail).is_ok()
    };
    let repair = if whole_event {
        file.seek(SeekFrom::End(0))?;
        Write::write_all(file, b"\n")?;
        Repair {
            dropped: 0,
            completed: true,
        }
    } else {
        file.set_len(tail_start)?;
        Repair {
            dropped: tail_len,
            completed: false,
        }
    };
    file.sync_data()?;
    Ok(repair)
}

/// Appends events to a transcript.
pub struct Writer {
    sink: Box<dyn Sink>,
    /// Bytes known to be written whole.
    len: u64,
    /// A failed write could not be undone: undo it before the next one.
    dirty: bool,
}

impl Writer {
    /// Open (creating it, owner-only) and repair the transcript at `path`.
    pub fn open(path: &Path) -> io::Result<(Writer, Repair)> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        let repair = repair_file(&mut file)?;
        let len = file.metadata()?.len();
        Ok((Writer::new(Box::new(file), len), repair))
    }

    /// A writer over any sink already `len` bytes long.
    pub fn new(sink: Box<dyn Sink>, len: u64) -> Writer {
        Writer {
            sink,
            len,
            dirty: false,
        }
    }

    /// Append `event` as one line, synced to disk when `durable`. On error nothing of it
    /// stays in the sink (unless even the undo failed, then the next append undoes it first).
    pub fn append(&mut self, event: &Event, durable: bool) -> Result<(), StoreError> {
        let mut line = serde_json::to_vec(event).expect("an event serializes");
        line.push(b'\n');
        if self.dirty {
            self.sink.truncate(self.len)?;
            self.dirty = false;
        }
        let written = self.sink.write_all(&line).and_then(|()| {
            if durable {
                self.sink.sync_data()
            } else {
                Ok(())
            }
        });
        match written {
            Ok(()) => {
                self.len += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.dirty = self.sink.truncate(self.len).is_err();
                Err(e.into())
            }
        }
    }
}

/// The events of `bytes` with a sequence number above `after`, skipping lines that are
/// not events (a torn line, junk).
pub fn parse(bytes: &[u8], after: u64) -> Vec<Event> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice::<Event>(l).ok())
        .filter(|e| e.seq > after)
        .collect()
}

/// Read the transcript at `path` (missing: no events).
pub fn read(path: &Path, after: u64) -> Vec<Event> {
    match std::fs::read(path) {
        Ok(bytes) => parse(&bytes, after),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use claude_vm_protocol::api::EventBody;
    use std::sync::{Arc, Mutex};

    fn event(seq: u64, text: &str) -> Event {
        Event {
            seq,
            ts: "2024-01-01T00:00:00Z".into(),
            body: EventBody::Assistant { text: text.into() },
        }
    }

    fn line(e: &Event) -> Vec<u8> {
        let mut l = serde_json::to_vec(e).unwrap();
        l.push(b'\n');
        l
    }

    /// A sink over shared bytes that fails (after writing half) while `fail` is set.
    #[derive(Clone, Default)]
    pub(crate) struct FlakySink {
        pub bytes: Arc<Mutex<Vec<u8>>>,
        pub fail: Arc<std::sync::atomic::AtomicBool>,
        pub fail_sync: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Sink for FlakySink {
        fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
            let mut b = self.bytes.lock().unwrap();
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                b.extend_from_slice(&buf[..buf.len() / 2]);
                return Err(io::Error::from_raw_os_error(
                    nix::errno::Errno::ENOSPC as i32,
                ));
            }
            b.extend_from_slice(buf);
            Ok(())
        }
        fn sync_data(&mut self) -> io::Result<()> {
            if self.fail_sync.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(nix::errno::Errno::EIO as i32));
            }
            Ok(())
        }
        fn truncate(&mut self, len: u64) -> io::Result<()> {
            self.bytes.lock().unwrap().truncate(len as usize);
            Ok(())
        }
    }

    #[test]
    fn torn_transcript_tail_is_repaired_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("transcript.jsonl");
        let (a, b) = (event(1, "one"), event(2, "two"));
        let mut bytes = [line(&a), line(&b)].concat();
        // The daemon died in the middle of the third line.
        let torn = line(&event(3, "three"));
        bytes.extend_from_slice(&torn[..torn.len() / 2]);
        std::fs::write(&path, &bytes).unwrap();

        let (mut w, repair) = Writer::open(&path).unwrap();
        assert_eq!(repair.dropped, (torn.len() / 2) as u64);
        assert!(!repair.completed);
        // The next event is not glued to the torn line: every event reads back.
        w.append(&event(3, "three again"), true).unwrap();
        let got = read(&path, 0);
        assert_eq!(got, vec![a.clone(), b.clone(), event(3, "three again")]);

        // A last line that is a whole event, only missing its newline, is kept.
        let mut bytes = std::fs::read(&path).unwrap();
        let four = line(&event(4, "four"));
        bytes.extend_from_slice(&four[..four.len() - 1]);
        std::fs::write(&path, &bytes).unwrap();
        let (mut w, repair) = Writer::open(&path).unwrap();
        assert!(repair.completed);
        w.append(&event(5, "five"), false).unwrap();
        let seqs: Vec<u64> = read(&path, 0).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);

        // A file that is nothing but a torn line becomes empty.
        std::fs::write(&path, b"{\"seq\":1,\"ts").unwrap();
        let (_, repair) = Writer::open(&path).unwrap();
        assert_eq!(repair.dropped, 12);
        assert_eq!(std::fs::read(&path).unwrap(), b"");
    }

    #[test]
    fn failed_transcript_writes_are_reported_and_leave_no_torn_line() {
        let sink = FlakySink::default();
        let mut w = Writer::new(Box::new(sink.clone()), 0);
        w.append(&event(1, "kept"), true).unwrap();
        sink.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let err = w.append(&event(2, "lost"), true).unwrap_err();
        assert!(matches!(err, StoreError::DiskFull), "{err}");
        assert_eq!(err.to_string(), "the workspace disk is full");
        sink.fail.store(false, std::sync::atomic::Ordering::SeqCst);
        // A failed sync is reported too, and its line undone.
        sink.fail_sync
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let err = w.append(&event(2, "not synced"), true).unwrap_err();
        assert!(matches!(err, StoreError::Io(_)), "{err}");
        sink.fail_sync
            .store(false, std::sync::atomic::Ordering::SeqCst);
        w.append(&event(2, "after"), true).unwrap();
        let bytes = sink.bytes.lock().unwrap().clone();
        assert_eq!(parse(&bytes, 0), vec![event(1, "kept"), event(2, "after")]);
        assert_eq!(
            bytes,
            [line(&event(1, "kept")), line(&event(2, "after"))].concat()
        );
    }

    #[test]
    fn a_full_disk_is_reported_as_such_by_dev_full() {
        let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return;
        };
        let mut w = Writer::new(Box::new(full), 0);
        let err = w.append(&event(1, "x"), true).unwrap_err();
        assert!(matches!(err, StoreError::DiskFull), "{err}");
    }

    #[test]
    fn reading_skips_junk_and_invalid_utf8() {
        let mut bytes = line(&event(1, "a"));
        bytes.extend_from_slice(b"\xff\xfe not json\n\n");
        bytes.extend_from_slice(&line(&event(2, "b")));
        assert_eq!(parse(&bytes, 0), vec![event(1, "a"), event(2, "b")]);
        assert_eq!(parse(&bytes, 1), vec![event(2, "b")]);
    }
}
