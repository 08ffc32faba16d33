//! Reading an agent's output a line at a time without trusting it: a line may be at most
//! a given length, and the buffer never grows past it.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Longest line an agent may print on stdout (a protocol message: a big tool result, a
/// file's content). Longer fails the conversation.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// What ended a read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("the agent printed a line longer than {} MiB", .0 / (1024 * 1024))]
    TooLong(usize),
    #[error("cannot read the agent's output: {0}")]
    Io(#[from] std::io::Error),
}

/// Read the next line into `buf` (without its newline). `Ok(false)` at the end of input;
/// a last line without a newline counts as a line. A line longer than `max` bytes is an
/// error, with the first `max` bytes in `buf` and the rest of the line not read; `buf`'s
/// capacity stays at most `max` (plus what it had).
pub async fn next_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<bool, LineError> {
    buf.clear();
    if buf.capacity() > 1024 * 1024 {
        // Do not keep a huge buffer for the rest of the agent's life.
        buf.shrink_to(64 * 1024);
    }
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(!buf.is_empty());
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (available.len(), false),
        };
        if buf.len() + take > max {
            let room = max - buf.len();
            grow(buf, room, max);
            buf.extend_from_slice(&available[..room]);
            r.consume(room);
            return Err(LineError::TooLong(max));
        }
        grow(buf, take, max);
        buf.extend_from_slice(&available[..take]);
        r.consume(if done { take + 1 } else { take });
        if done {
            return Ok(true);
        }
    }
}

/// Reserve room for `more` bytes, doubling as `Vec` does but never past `max`.
fn grow(buf: &mut Vec<u8>, more: usize, max: usize) {
    let need = buf.len() + more;
    if need > buf.capacity() {
        let target = need.max(buf.capacity() * 2).min(max.max(need));
        buf.reserve_exact(target - buf.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, BufReader};

    #[tokio::test]
    async fn lines_split_on_newlines_and_a_last_line_without_one_counts() {
        let mut r = BufReader::with_capacity(3, &b"ab\n\ncdef\ng"[..]);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        while next_line(&mut r, &mut buf, 100).await.unwrap() {
            got.push(String::from_utf8(buf.clone()).unwrap());
        }
        assert_eq!(got, ["ab", "", "cdef", "g"]);
    }

    #[tokio::test]
    async fn agent_line_longer_than_the_cap_fails_with_bounded_memory() {
        // 100 MiB without a newline, against a 1 MiB cap.
        let max = 1024 * 1024;
        let endless = tokio::io::repeat(b'x').take(100 * 1024 * 1024);
        let mut r = BufReader::new(endless);
        let mut buf = Vec::new();
        let err = next_line(&mut r, &mut buf, max).await.unwrap_err();
        assert!(matches!(err, LineError::TooLong(m) if m == max), "{err}");
        assert_eq!(buf.len(), max);
        assert!(buf.capacity() <= max, "capacity {}", buf.capacity());
        assert_eq!(
            LineError::TooLong(MAX_LINE).to_string(),
            "the agent printed a line longer than 16 MiB"
        );
    }
}
