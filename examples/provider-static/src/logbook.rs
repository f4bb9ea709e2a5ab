//! The access and lifecycle log of one deployment: a bounded ring for queries plus a
//! broadcast feed for followers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use conan_core::{LogLine, LogQuery, LogStream};
use tokio::sync::broadcast;

/// Lines kept per deployment; older ones are dropped.
pub const RING_LINES: usize = 1000;

/// Lines buffered per follower before it lags (it is then told how many it missed).
const FEED_CAPACITY: usize = 256;

/// One deployment's log, shared by its servers (they write) and the provider (it reads).
#[derive(Debug)]
pub(crate) struct LogBook {
    lines: Mutex<VecDeque<LogLine>>,
    feed: broadcast::Sender<std::sync::Arc<LogLine>>,
    /// Approximate heap bytes of the kept lines.
    bytes: AtomicUsize,
}

fn size_of_line(line: &LogLine) -> usize {
    std::mem::size_of::<LogLine>()
        + line.message.capacity()
        + line.source.as_ref().map_or(0, String::capacity)
}

impl LogBook {
    pub(crate) fn new() -> Self {
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        Self {
            lines: Mutex::new(VecDeque::with_capacity(64)),
            feed,
            bytes: AtomicUsize::new(0),
        }
    }

    fn lines(&self) -> MutexGuard<'_, VecDeque<LogLine>> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends a line and hands it to every follower. Both happen under the ring's lock,
    /// so a follower that subscribed while reading the ring misses nothing and sees
    /// nothing twice.
    pub(crate) fn push(&self, line: LogLine) {
        let mut lines = self.lines();
        if self.feed.receiver_count() > 0 {
            let _ = self.feed.send(std::sync::Arc::new(line.clone()));
        }
        if lines.len() == RING_LINES
            && let Some(old) = lines.pop_front()
        {
            self.bytes.fetch_sub(size_of_line(&old), Ordering::Relaxed);
        }
        self.bytes.fetch_add(size_of_line(&line), Ordering::Relaxed);
        lines.push_back(line);
    }

    /// Approximate bytes the kept lines occupy.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The last `n` lines (for failure bundles).
    pub(crate) fn last(&self, n: usize) -> Vec<LogLine> {
        self.query(&LogQuery::tail(n))
    }

    /// The kept lines matching `query` (`follow` aside).
    pub(crate) fn query(&self, query: &LogQuery) -> Vec<LogLine> {
        query.apply(self.lines().iter())
    }

    /// The answer to `query`: the kept lines, then (when following) new ones as they come.
    /// The follow ends when every server of the deployment is gone and the provider forgot
    /// it (the last sender drops).
    pub(crate) fn stream(&self, query: &LogQuery) -> LogStream {
        let lines = self.lines();
        let live = query.follow.then(|| self.feed.subscribe());
        let history = query.apply(lines.iter());
        drop(lines);
        query.clone().into_stream(history, live)
    }
}
