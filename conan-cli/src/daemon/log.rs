//! The daemon's log writer. The tracing subscriber formats each event on the thread that
//! logs it and hands the line to a thread of its own, which writes it to stderr
//! (`daemon.log` when the daemon was auto-started): a slow disk or a full pipe never stalls
//! the daemon's runtime, which runs on a single thread.

use std::io::{self, Write};
use std::sync::mpsc;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

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
    /// Starts the writer thread, writing to stderr.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn spawn() -> io::Result<Self> {
        Self::spawn_to(io::stderr())
    }

    fn spawn_to(mut out: impl Write + Send + 'static) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("conan-log".to_owned())
            .spawn(move || {
                for message in rx {
                    match message {
                        Message::Line(line) => {
                            let _ = out.write_all(&line);
                        }
                        Message::Flush(done) => {
                            let _ = out.flush();
                            let _ = done.send(());
                        }
                    }
                }
                let _ = out.flush();
            })?;
        Ok(Self { tx })
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
        let writer = LogWriter::spawn_to(out.clone()).unwrap();
        for i in 0..100 {
            writeln!(&writer, "line {i}").unwrap();
        }
        writer.flush(Duration::from_secs(10));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected);
    }
}
