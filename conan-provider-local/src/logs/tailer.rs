//! The shared tailer: one thread and one inotify descriptor for every capture of the
//! process.
//!
//! Each capture registers a watch (`IN_MODIFY`) on its two spool files; the thread blocks in
//! `poll(2)` on the inotify descriptor and on the read end of a wake-up pipe, with no
//! timeout, so an idle deployment costs no wake-ups at all. An inotify event names a watch
//! descriptor, which names the captures to read. Registering a capture writes a byte to the
//! pipe so its backlog (lines written while no manager ran) is read at once.
//!
//! Captures are read in rounds of at most [`ROUND_CHUNKS`] chunks each, so one app writing
//! without pause cannot starve the others. The thread holds captures weakly: a capture
//! unregisters itself when it finishes, detaches or is dropped.
//!
//! A capture that has caught up may ask to be read again at a given time (a line without a
//! newline becomes due after [`QUIET`](super::QUIET), a quiet capture closes its files after
//! [`IDLE`](super::IDLE)): the poll's timeout is the earliest of those times, so the thread
//! still sleeps with no timeout once every capture is idle.
//!
//! Without inotify (a kernel without it, or its instance limit reached) the thread falls
//! back to reading every capture each [`FALLBACK_POLL`]; a capture whose spools could not
//! be watched (the watch limit) is read that way too.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use super::capture::{Capture, READ_CHUNK, Tail};

/// The most chunks one capture reads before the others get their turn.
pub(super) const ROUND_CHUNKS: usize = 16;

/// How often every capture is read when inotify is unavailable.
const FALLBACK_POLL: Duration = Duration::from_millis(25);

/// The process's tailer, started by the first capture.
static TAILER: Mutex<Option<Arc<Tailer>>> = Mutex::new(None);

#[derive(Default)]
struct Registry {
    captures: HashMap<u64, Weak<Capture>>,
    /// Several captures may share a watch (the same spool file, when a capture that was
    /// handed over is still alive): the watch is removed with the last of them.
    watches: HashMap<WatchDescriptor, Vec<u64>>,
    pending: Vec<u64>,
    /// Captures whose spools could not be watched: read every [`FALLBACK_POLL`].
    unwatched: HashSet<u64>,
    next_id: u64,
}

/// The shared tailer (see the module docs).
pub(super) struct Tailer {
    inotify: Option<Inotify>,
    wake_tx: OwnedFd,
    registry: Mutex<Registry>,
}

impl std::fmt::Debug for Tailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tailer")
            .field("inotify", &self.inotify.is_some())
            .finish_non_exhaustive()
    }
}

/// What a capture keeps to unregister itself.
#[derive(Debug)]
pub(super) struct Registration {
    pub id: u64,
    pub watches: Vec<WatchDescriptor>,
}

impl Tailer {
    /// The process's tailer, starting its thread on first use.
    pub fn global() -> io::Result<Arc<Self>> {
        let mut slot = TAILER.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = slot.as_ref() {
            return Ok(Arc::clone(t));
        }
        let (wake_rx, wake_tx) =
            nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| tracing::warn!(error = %e, "inotify unavailable; polling the log spools"))
            .ok();
        let tailer = Arc::new(Self {
            inotify,
            wake_tx,
            registry: Mutex::new(Registry::default()),
        });
        let runner = Arc::clone(&tailer);
        std::thread::Builder::new()
            .name("conan-log-tail".into())
            .stack_size(512 * 1024)
            .spawn(move || runner.run(&wake_rx))?;
        *slot = Some(Arc::clone(&tailer));
        Ok(tailer)
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh capture id.
    pub fn next_id(&self) -> u64 {
        let mut reg = self.registry();
        reg.next_id += 1;
        reg.next_id
    }

    /// Watches `paths` for `capture` and has its backlog read now.
    pub fn register(&self, capture: &Arc<Capture>, id: u64, paths: &[&Path]) -> Registration {
        let mut watches = Vec::new();
        if let Some(inotify) = &self.inotify {
            for p in paths {
                match inotify.add_watch(*p, AddWatchFlags::IN_MODIFY) {
                    Ok(wd) => watches.push(wd),
                    Err(e) => tracing::warn!(error = %e, path = %p.display(),
                        "cannot watch a log spool; polling it"),
                }
            }
        }
        {
            let mut reg = self.registry();
            reg.captures.insert(id, Arc::downgrade(capture));
            for wd in &watches {
                reg.watches.entry(*wd).or_default().push(id);
            }
            if self.inotify.is_some() && watches.len() < paths.len() {
                reg.unwatched.insert(id);
            }
            reg.pending.push(id);
        }
        self.wake();
        Registration { id, watches }
    }

    /// Stops reading for a capture. Idempotent.
    pub fn unregister(&self, registration: Registration) {
        let mut reg = self.registry();
        reg.captures.remove(&registration.id);
        reg.unwatched.remove(&registration.id);
        for wd in registration.watches {
            let last = match reg.watches.get_mut(&wd) {
                Some(ids) => {
                    ids.retain(|i| *i != registration.id);
                    ids.is_empty()
                }
                None => false,
            };
            if last {
                reg.watches.remove(&wd);
                if let Some(inotify) = &self.inotify {
                    // Fails (harmlessly) when the file is gone: the kernel dropped the watch.
                    let _ = inotify.rm_watch(wd);
                }
            }
        }
    }

    fn wake(&self) {
        match nix::unistd::write(&self.wake_tx, &[1]) {
            // A full pipe already guarantees a wake-up.
            Ok(_) | Err(Errno::EAGAIN) => {}
            Err(e) => tracing::warn!(error = %e, "cannot wake the log tailer"),
        }
    }

    /// The thread: waits in the kernel, reads whatever became readable.
    fn run(&self, wake_rx: &OwnedFd) {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut ready: VecDeque<Arc<Capture>> = VecDeque::new();
        let mut queued: HashSet<u64> = HashSet::new();
        // Captures that asked to be read again at a time.
        let mut timers: HashMap<u64, (Weak<Capture>, Instant)> = HashMap::new();
        loop {
            let polling = self.inotify.is_none() || !self.registry().unwatched.is_empty();
            let mut wait = polling.then_some(FALLBACK_POLL);
            if let Some(first) = timers.values().map(|(_, t)| *t).min() {
                let until = first.saturating_duration_since(Instant::now());
                wait = Some(wait.map_or(until, |w| w.min(until)));
            }
            let timeout = if !ready.is_empty() {
                PollTimeout::ZERO
            } else {
                match wait {
                    // Rounded up: waking a little late is fine, spinning until due is not.
                    Some(w) => PollTimeout::from(
                        u16::try_from((w.as_micros() as u64).div_ceil(1000)).unwrap_or(u16::MAX),
                    ),
                    None => PollTimeout::NONE,
                }
            };
            let mut fds = vec![PollFd::new(wake_rx.as_fd(), PollFlags::POLLIN)];
            if let Some(i) = &self.inotify {
                fds.push(PollFd::new(i.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "log tailer poll failed");
                    std::thread::sleep(FALLBACK_POLL);
                }
            }
            drop(fds);
            // Drain the pipe and the events *before* reading: a write after this point
            // raises a new event, so none is missed.
            let mut scratch = [0u8; 64];
            while matches!(nix::unistd::read(wake_rx, &mut scratch), Ok(n) if n > 0) {}
            let mut all = self.inotify.is_none();
            let mut wds = Vec::new();
            if let Some(inotify) = &self.inotify {
                while let Ok(events) = inotify.read_events() {
                    if events.is_empty() {
                        break;
                    }
                    for ev in events {
                        if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                            all = true;
                        } else if ev.mask.contains(AddWatchFlags::IN_MODIFY) {
                            wds.push(ev.wd);
                        }
                    }
                }
            }
            // Collect weak references under the lock, upgrade outside it: dropping the
            // last strong reference unregisters, which takes the lock.
            let wanted: Vec<(u64, Weak<Capture>)> = {
                let mut reg = self.registry();
                let mut ids: Vec<u64> = std::mem::take(&mut reg.pending);
                if all {
                    ids.extend(reg.captures.keys().copied());
                } else {
                    ids.extend(reg.unwatched.iter().copied());
                    for wd in &wds {
                        if let Some(list) = reg.watches.get(wd) {
                            ids.extend(list.iter().copied());
                        }
                    }
                }
                ids.into_iter()
                    .filter(|id| !queued.contains(id))
                    .filter_map(|id| reg.captures.get(&id).map(|w| (id, w.clone())))
                    .collect()
            };
            let now = Instant::now();
            let due: Vec<(u64, Weak<Capture>)> = timers
                .iter()
                .filter(|(_, (_, t))| *t <= now)
                .map(|(id, (w, _))| (*id, w.clone()))
                .collect();
            for (id, _) in &due {
                timers.remove(id);
            }
            for (id, weak) in wanted.into_iter().chain(due) {
                if !queued.contains(&id)
                    && let Some(c) = weak.upgrade()
                {
                    queued.insert(id);
                    ready.push_back(c);
                }
            }
            // One round: every ready capture reads up to ROUND_CHUNKS chunks.
            for _ in 0..ready.len() {
                let Some(c) = ready.pop_front() else { break };
                // A panic must not end capture for every deployment of the process.
                let tail = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    c.tail(&mut buf, ROUND_CHUNKS)
                }));
                match tail {
                    Ok(Tail::More) => ready.push_back(c),
                    Ok(Tail::Idle(wake)) => {
                        queued.remove(&c.id());
                        match wake {
                            Some(t) => {
                                timers.insert(c.id(), (Arc::downgrade(&c), t));
                            }
                            None => {
                                timers.remove(&c.id());
                            }
                        }
                    }
                    Err(_) => {
                        tracing::error!(id = c.id(), "reading a log spool panicked");
                        queued.remove(&c.id());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Instant;

    use super::*;
    use crate::logs::{LogStore, LogStoreSettings};

    fn tailer_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|c| c.trim() == "conan-log-tail")
            .count()
    }

    fn wait_for(store: &LogStore, n: usize) -> Vec<String> {
        let t = Instant::now();
        loop {
            let got: Vec<String> = store
                .last(usize::MAX)
                .into_iter()
                .map(|l| l.message)
                .collect();
            if got.len() >= n || t.elapsed() > Duration::from_secs(10) {
                return got;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn one_thread_tails_every_capture_and_detached_ones_are_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let settings = LogStoreSettings {
            memory_bytes: 1 << 20,
            file_max_bytes: 1 << 20,
            files: 2,
        };
        let mut all = Vec::new();
        for i in 0..20 {
            let dir = root.path().join(format!("i{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            // A backlog written before the capture starts (adoption) is read at once.
            std::fs::write(dir.join("stdout.spool"), format!("backlog {i}\n")).unwrap();
            let store = Arc::new(LogStore::open(&dir.join("logs"), settings).unwrap());
            let capture = Capture::start(&dir, Arc::clone(&store)).unwrap();
            all.push((dir, store, capture));
        }
        assert_eq!(tailer_threads(), 1);
        for (i, (dir, store, _)) in all.iter().enumerate() {
            assert_eq!(wait_for(store, 1), vec![format!("backlog {i}")]);
            let (out, err) = Capture::open_for_app(dir).unwrap();
            (&out).write_all(format!("out {i}\n").as_bytes()).unwrap();
            (&err).write_all(format!("err {i}\n").as_bytes()).unwrap();
        }
        for (i, (_, store, _)) in all.iter().enumerate() {
            let mut got = wait_for(store, 3);
            got.sort();
            assert_eq!(
                got,
                vec![
                    format!("backlog {i}"),
                    format!("err {i}"),
                    format!("out {i}")
                ]
            );
        }
        // A detached capture reads nothing more: its successor resumes at its offsets.
        let (dir, store, capture) = &all[0];
        capture.detach();
        let (out, _) = Capture::open_for_app(dir).unwrap();
        (&out).write_all(b"after detach\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(store.last(usize::MAX).len(), 3);
        let next = Capture::start(dir, Arc::clone(store)).unwrap();
        assert_eq!(wait_for(store, 4).last().unwrap(), "after detach");
        next.finish();
        assert_eq!(tailer_threads(), 1);
    }
}
