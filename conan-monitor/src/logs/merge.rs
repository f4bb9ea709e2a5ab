//! Merging many deployments' log streams into one, by timestamp.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use conan_core::{Error, LogLine, LogStream, OutputStream};
use futures::{Stream, StreamExt};

use super::{TaggedLine, TaggedLogStream};

/// Merges `streams` (each a deployment's name and its lines, oldest first) into one:
/// among the lines available at a time, the oldest comes first. Streams whose lines are
/// all available (histories) come out in exact timestamp order; live lines in the order
/// they arrive. A stream that fails ends with a [`OutputStream::System`] line saying why;
/// the others go on. One task polls every stream; a line costs no allocation of its own.
#[must_use]
pub fn merge(streams: Vec<(Arc<str>, LogStream)>) -> TaggedLogStream {
    let len = streams.len();
    Merge {
        streams: streams
            .into_iter()
            .map(|(name, stream)| Source {
                name,
                stream: Some(stream),
                head: None,
            })
            .collect(),
        open: len,
    }
    .boxed()
}

/// A stream that answers one line saying why a deployment's logs cannot be read.
pub(crate) fn notice(e: &Error) -> LogStream {
    let line = LogLine::new(
        OutputStream::System,
        format!("[conan] cannot read these logs: {e}"),
    );
    futures::stream::iter([Ok(line)]).boxed()
}

struct Source {
    name: Arc<str>,
    /// `None` once it ended.
    stream: Option<LogStream>,
    /// The next line, polled ahead.
    head: Option<LogLine>,
}

struct Merge {
    streams: Vec<Source>,
    /// Sources with a stream or a head left.
    open: usize,
}

impl Stream for Merge {
    type Item = TaggedLine;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TaggedLine>> {
        let this = &mut *self;
        // Poll ahead every source without a head: each that is pending registers the
        // waker, so a line arriving on any of them wakes this task.
        for source in &mut this.streams {
            if source.head.is_some() {
                continue;
            }
            let Some(stream) = source.stream.as_mut() else {
                continue;
            };
            match stream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(line))) => source.head = Some(line),
                Poll::Ready(Some(Err(e))) => {
                    source.stream = None;
                    source.head = Some(LogLine::new(
                        OutputStream::System,
                        format!("[conan] these logs ended with an error: {e}"),
                    ));
                }
                Poll::Ready(None) => {
                    source.stream = None;
                    this.open -= 1;
                }
                Poll::Pending => {}
            }
        }
        let pick = this
            .streams
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.head.as_ref().map(|h| (h.timestamp, i)))
            .min();
        if let Some((_, i)) = pick {
            let source = &mut this.streams[i];
            let line = source.head.take().map(|line| TaggedLine {
                deployment: Arc::clone(&source.name),
                line,
            });
            if source.stream.is_none() {
                this.open -= 1;
            }
            return Poll::Ready(line);
        }
        if this.open == 0 {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}
