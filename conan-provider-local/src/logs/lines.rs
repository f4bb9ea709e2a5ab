//! Cutting a stream of bytes into log lines, holding at most one piece of a line.
//!
//! A line is emitted when its newline arrives. A line longer than [`MAX_LINE_BYTES`] is
//! emitted in pieces as soon as each piece is complete, every piece but the last ending in
//! [`SPLIT_MARKER`], so at most one piece (64 KiB) of a stream is ever held in memory however
//! long the line. What is held when the app stops writing (a prompt, a progress bar, a last
//! line without a newline) is emitted by [`LineSplitter::flush`] — the capture calls it
//! after a quiet period ([`QUIET`](super::QUIET)) — and the rest of that line, if the app
//! completes it later, becomes a line of its own: nothing is shown twice.

use super::store::Batch;
use super::{MAX_LINE_BYTES, SPLIT_MARKER};

/// Above this capacity the held buffer is freed once it is empty again (after a long line),
/// so an idle stream holds no memory.
const KEEP_CAPACITY: usize = 4 * 1024;

/// The line being assembled for one stream.
#[derive(Debug, Default)]
pub(super) struct LineSplitter {
    /// The start of a line whose newline has not arrived: at most [`MAX_LINE_BYTES`].
    held: Vec<u8>,
}

impl LineSplitter {
    /// How many bytes are held (the start of an unterminated line).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The memory the splitter holds (its buffer's capacity).
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.held.capacity()
    }

    /// Cuts `data` into lines (and pieces of long lines) appended to `batch`, holding what
    /// follows the last newline.
    pub fn feed(&mut self, data: &[u8], batch: &mut Batch) {
        let mut rest = data;
        while let Some(nl) = memchr(b'\n', rest) {
            let (line, tail) = rest.split_at(nl);
            rest = &tail[1..];
            if self.held.is_empty() {
                push_line(batch, line);
            } else {
                self.hold(line, batch);
                let whole = std::mem::take(&mut self.held);
                push_line(batch, &whole);
                self.held = whole;
                self.held.clear();
                self.release_capacity();
            }
        }
        self.hold(rest, batch);
    }

    /// Emits what is held as a line of its own (the app stopped writing before a newline).
    pub fn flush(&mut self, batch: &mut Batch) {
        if !self.held.is_empty() {
            push_line(batch, &self.held);
            self.held.clear();
        }
        self.release_capacity();
    }

    fn release_capacity(&mut self) {
        if self.held.is_empty() && self.held.capacity() > KEEP_CAPACITY {
            self.held = Vec::new();
        }
    }

    /// Appends `bytes` (no newline) to the held line, emitting a piece each time it would
    /// exceed [`MAX_LINE_BYTES`].
    fn hold(&mut self, mut bytes: &[u8], batch: &mut Batch) {
        while self.held.len() + bytes.len() > MAX_LINE_BYTES {
            let held = self.held.len();
            // The piece ends at a character boundary of held ++ bytes, at most MAX.
            let at = |i: usize| {
                if i < held {
                    self.held[i]
                } else {
                    bytes[i - held]
                }
            };
            let mut cut = MAX_LINE_BYTES;
            while cut > MAX_LINE_BYTES - 3 && is_continuation(at(cut)) {
                cut -= 1;
            }
            if is_continuation(at(cut)) {
                cut = MAX_LINE_BYTES;
            }
            if cut >= held {
                self.held.extend_from_slice(&bytes[..cut - held]);
                bytes = &bytes[cut - held..];
                push_piece(batch, &self.held);
                self.held.clear();
            } else {
                push_piece(batch, &self.held[..cut]);
                self.held.drain(..cut);
            }
        }
        self.held.extend_from_slice(bytes);
    }
}

fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// The longest prefix of `bytes` of at most `max` bytes that ends at a character boundary
/// (or `max` bytes when no boundary is near: invalid UTF-8).
fn char_boundary(bytes: &[u8], max: usize) -> usize {
    let mut cut = max.min(bytes.len());
    while cut > 0 && cut < bytes.len() && is_continuation(bytes[cut]) {
        cut -= 1;
    }
    if cut == 0 { max.min(bytes.len()) } else { cut }
}

/// Adds one raw line to `batch` (split at 64 KiB with a marker; invalid UTF-8 replaced).
pub(super) fn push_line(batch: &mut Batch, raw: &[u8]) {
    let mut raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    while raw.len() > MAX_LINE_BYTES {
        let cut = char_boundary(raw, MAX_LINE_BYTES);
        push_piece(batch, &raw[..cut]);
        raw = &raw[cut..];
    }
    match std::str::from_utf8(raw) {
        Ok(s) => batch.push(s),
        Err(_) => batch.push(&String::from_utf8_lossy(raw)),
    }
}

fn push_piece(batch: &mut Batch, piece: &[u8]) {
    let text = String::from_utf8_lossy(piece);
    batch.push_parts(&text, SPLIT_MARKER);
}

#[cfg(test)]
mod tests {
    use conan_core::{OutputStream, Timestamp};

    use super::*;

    fn batch() -> Batch {
        Batch::new(Timestamp::now(), OutputStream::Stdout)
    }

    fn lines(raw: &[u8]) -> Vec<String> {
        let mut b = batch();
        push_line(&mut b, raw);
        b.lines().map(|l| l.message).collect()
    }

    #[test]
    fn long_lines_are_split_with_a_marker() {
        let out = lines(&vec![b'x'; MAX_LINE_BYTES * 2 + 10]);
        assert_eq!(out.len(), 3);
        assert!(out[0].ends_with(SPLIT_MARKER));
        assert!(out[1].ends_with(SPLIT_MARKER));
        assert_eq!(out[2].len(), 10);
    }

    #[test]
    fn splitting_respects_utf8() {
        let mut raw = vec![b'a'; MAX_LINE_BYTES - 1];
        raw.extend_from_slice("é and more".as_bytes());
        let out = lines(&raw);
        assert_eq!(out.len(), 2);
        assert!(out[1].starts_with('é'));
    }

    /// Regression (issue 10, finding 9): a line without a newline was held whole (only one
    /// piece cut per read), so a 300 MB write raised the daemon's memory by hundreds of MB.
    #[test]
    fn an_endless_line_is_emitted_piece_by_piece_holding_at_most_one() {
        let mut s = LineSplitter::default();
        let chunk = vec![b'y'; 256 * 1024];
        let mut emitted = 0usize;
        let mut max_held = 0;
        // 64 MiB without a newline, then "END" and the newline.
        for _ in 0..256 {
            let mut b = batch();
            s.feed(&chunk, &mut b);
            max_held = max_held.max(s.capacity());
            for l in b.lines() {
                assert!(l.message.ends_with(SPLIT_MARKER));
                emitted += l.message.len() - SPLIT_MARKER.len();
            }
        }
        assert!(max_held <= MAX_LINE_BYTES, "held {max_held} bytes");
        let mut b = batch();
        s.feed(b"yyEND\n", &mut b);
        let last: Vec<_> = b.lines().map(|l| l.message).collect();
        assert_eq!(last.last().map(String::as_str), Some("yyEND"));
        emitted += last
            .iter()
            .map(|m| m.strip_suffix(SPLIT_MARKER).unwrap_or(m).len())
            .sum::<usize>();
        assert_eq!(emitted, 64 * 1024 * 1024 + 5, "every byte arrives");
        assert_eq!(s.held(), 0);
        assert!(s.capacity() <= KEEP_CAPACITY, "the buffer is released");
    }

    #[test]
    fn pieces_cut_across_reads_respect_utf8() {
        let mut s = LineSplitter::default();
        let mut b = batch();
        let mut first = vec![b'a'; MAX_LINE_BYTES - 1];
        first.push(0xC3); // the first byte of "é", its second in the next read
        s.feed(&first, &mut b);
        s.feed(&[0xA9, b'!', b'\n'], &mut b);
        let out: Vec<_> = b.lines().map(|l| l.message).collect();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1], "é!");
    }

    #[test]
    fn a_flushed_partial_line_is_not_repeated_when_its_newline_arrives() {
        let mut s = LineSplitter::default();
        let mut b = batch();
        s.feed(b"one\nprompt> ", &mut b);
        s.flush(&mut b);
        s.feed(b"answer\n", &mut b);
        let out: Vec<_> = b.lines().map(|l| l.message).collect();
        assert_eq!(out, ["one", "prompt> ", "answer"]);
    }
}
