//! The daemon's log writer. The tracing subscriber formats each event on the thread that
//! logs it and hands the line to a thread of its own, which writes it to stderr: a slow
//! disk or a full pipe never stalls the daemon's runtime, which runs on a single thread.
//!
//! Bounded: repeated lines are rate-limited before they are formatted ([`limit`]), and
//! when stderr is `daemon.log` (an auto-started daemon) the file is rotated by size
//! ([`rotate`]: 10 MiB, two older files kept).

pub mod limit;
pub mod rotate;

use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

use limit::Limiter;
use rotate::RotatingFile;

/// How often the writer thread writes the summaries of rate-limit windows that ended.
const SWEEP: Duration = Duration::from_secs(1);

/// Lines waiting to be written before logging blocks (back pressure as a last resort).
const QUEUE: usize = 4096;

enum Message {
    Line(Vec<u8>),
    Flush(mpsc::Sender<()>),
}

/// Hands formatted log lines to the writer thread.
#[derive(Clone, Debug)]
pub struct LogWriter {
    tx: mpsc::SyncSender<Message>,
}

impl LogWriter {
    /// Starts the writer thread, writing to stderr — rotated by size when stderr is the
    /// file `log` (see [`rotate`]) — and writing the sweeps of `limiter`.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn spawn(log: &Path, limiter: Option<Arc<Limiter>>) -> io::Result<Self> {
        match stderr_file(log) {
            Some(file) => Self::spawn_to(
                RotatingFile::for_stdio(log, file, rotate::MAX_BYTES, rotate::KEEP),
                limiter,
            ),
            None => Self::spawn_to(io::stderr(), limiter),
        }
    }

    fn spawn_to(
        mut out: impl Write + Send + 'static,
        limiter: Option<Arc<Limiter>>,
    ) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("conan-log".to_owned())
            .spawn(move || {
                let mut swept = Instant::now();
                loop {
                    match rx.recv_timeout(SWEEP) {
                        Ok(Message::Line(line)) => {
                            let _ = out.write_all(&line);
                        }
                        Ok(Message::Flush(done)) => {
                            if let Some(limiter) = &limiter {
                                for summary in limiter.sweep(Instant::now()) {
                                    let _ = out.write_all(summary.as_bytes());
                                }
                            }
                            let _ = out.flush();
                            let _ = done.send(());
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                    if let Some(limiter) = &limiter
                        && swept.elapsed() >= SWEEP
                    {
                        swept = Instant::now();
                        for summary in limiter.sweep(swept) {
                            let _ = out.write_all(summary.as_bytes());
                        }
                    }
                }
                let _ = out.flush();
            })?;
        Ok(Self { tx })
    }

    /// Queues one whole line, written as it is (a rate-limit summary).
    pub fn write_raw(&self, line: Vec<u8>) {
        let _ = self.tx.send(Message::Line(line));
    }

    /// Waits (at most `within`) until every line logged so far is written.
    pub fn flush(&self, within: Duration) {
        let (done_tx, done) = mpsc::channel();
        if self.tx.send(Message::Flush(done_tx)).is_ok() {
            let _ = done.recv_timeout(within);
        }
    }
}

impl Write for &LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The writer thread only ends with the process; a failed send loses the line.
        let _ = self.tx.send(Message::Line(buf.to_vec()));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = &'a LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

/// Our stderr as a file, when it is the file at `log` (the auto-started daemon's stdio).
fn stderr_file(log: &Path) -> Option<std::fs::File> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::File::from(io::stderr().as_fd().try_clone_to_owned().ok()?);
    let ours = file.metadata().ok()?;
    let named = std::fs::metadata(log).ok()?;
    (ours.is_file() && ours.dev() == named.dev() && ours.ino() == named.ino()).then_some(file)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_written_in_order_by_the_time_flush_returns() {
        let out = Shared::default();
        let writer = LogWriter::spawn_to(out.clone(), None).unwrap();
        for i in 0..100 {
            writeln!(&writer, "line {i}").unwrap();
        }
        writer.flush(Duration::from_secs(10));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected);
    }
}
