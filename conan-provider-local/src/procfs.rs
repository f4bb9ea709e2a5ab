//! Reading `/proc`: process start times (so a recycled pid is never mistaken for ours),
//! process groups, parents, the marker variable in a process's environment, and which pid
//! holds a listening TCP port.

use std::collections::HashMap;
use std::fs;

/// What `/proc/PID/stat` says about a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub pid: u32,
    pub ppid: u32,
    pub pgid: u32,
    /// `Z` for a zombie (dead, not yet reaped).
    pub state: char,
    /// Clock ticks after boot at which the process started (field 22): with the pid it
    /// identifies a process for the lifetime of the machine.
    pub start_time: u64,
}

impl ProcStat {
    /// Whether the process has exited (a zombie counts as gone).
    pub fn is_dead(&self) -> bool {
        self.state == 'Z' || self.state == 'X'
    }
}

/// Parses the text of `/proc/PID/stat`. The command name (field 2) may contain spaces and
/// parentheses, so fields are counted after the last `)`.
pub(crate) fn parse_stat(pid: u32, text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// The stat of `pid`, if it exists.
pub(crate) fn stat(pid: u32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

/// What `/proc/PID/stat` says about a process's resource use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcUsage {
    /// Start time in clock ticks after boot (with the pid, the process's identity).
    pub start_time: u64,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident set size, in pages.
    pub rss_pages: u64,
}

/// Parses the resource fields of `/proc/PID/stat`: utime and stime (fields 14 and 15),
/// starttime (22) and rss (24), counted after the command name like [`parse_stat`].
pub(crate) fn parse_usage(text: &str) -> Option<ProcUsage> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // Field 3 (the state) is the first after the name: field N is at index N - 3.
    let mut nth = |skip: usize| -> Option<u64> { fields.nth(skip)?.parse().ok() };
    let utime = nth(11)?;
    let stime = nth(0)?;
    let start_time = nth(6)?;
    nth(0)?; // vsize
    let rss_pages = nth(0)?;
    Some(ProcUsage {
        start_time,
        cpu_ticks: utime.saturating_add(stime),
        rss_pages,
    })
}

/// The resource use of `pid`, if it is alive (one read of one file).
pub(crate) fn usage(pid: u32) -> Option<ProcUsage> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = text[text.rfind(')')? + 1..].split_whitespace().next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    parse_usage(&text)
}

/// Whether `pid` is alive (not a zombie) and, when given, started at `start_time`.
pub(crate) fn is_alive(pid: u32, start_time: Option<u64>) -> bool {
    stat(pid).is_some_and(|s| !s.is_dead() && start_time.is_none_or(|t| t == s.start_time))
}

/// Every process's stat.
pub(crate) fn all() -> Vec<ProcStat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat)
        .collect()
}

/// Whether the environment `pid` was started with contains exactly `entry` (`KEY=value`).
pub(crate) fn environ_has(pid: u32, entry: &str) -> bool {
    fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|&b| b == 0).any(|e| e == entry.as_bytes()))
        .unwrap_or(false)
}

/// Every live process (not this one) whose environment has an entry starting with
/// `prefix`, with the rest of that entry: `("CONAN_INSTANCE=<id>/", ..)` finds the
/// processes of every instance of a deployment, with their instance keys.
pub(crate) fn environ_with_prefix(prefix: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut out = Vec::new();
    for p in all() {
        if p.is_dead() || p.pid == me {
            continue;
        }
        let Ok(env) = fs::read(format!("/proc/{}/environ", p.pid)) else {
            continue;
        };
        if let Some(rest) = env
            .split(|&b| b == 0)
            .find_map(|e| e.strip_prefix(prefix.as_bytes()))
        {
            out.push((p.pid, String::from_utf8_lossy(rest).into_owned()));
        }
    }
    out
}

/// The live processes that belong to a tree: members of process group `pgid`, descendants
/// of `root` (by parent links), and any process whose environment carries `marker` (which
/// finds grandchildren that moved to a new session and whose parent already exited).
/// Processes that started before `since` (the tree's first start time) are never members.
pub(crate) fn tree_members(
    pgid: Option<u32>,
    root: Option<u32>,
    marker: &str,
    since: u64,
) -> Vec<ProcStat> {
    let me = std::process::id();
    let procs = all();
    let parents: HashMap<u32, u32> = procs.iter().map(|p| (p.pid, p.ppid)).collect();
    let descends = |mut pid: u32| -> bool {
        let Some(root) = root else { return false };
        for _ in 0..64 {
            if pid == root {
                return true;
            }
            match parents.get(&pid) {
                Some(&pp) if pp > 1 => pid = pp,
                _ => return false,
            }
        }
        false
    };
    procs
        .iter()
        .filter(|p| !p.is_dead() && p.pid != me)
        .filter(|p| {
            // Everything of the tree started after its first process: older processes are
            // strangers even when a recycled pid makes them look related.
            p.start_time >= since
                && (pgid.is_some_and(|g| p.pgid == g)
                    || descends(p.pid)
                    || environ_has(p.pid, marker))
        })
        .copied()
        .collect()
}

/// The live descendants of `root`, by the kernel's `/proc/PID/task/TID/children` lists:
/// reads only the tree, not every process (cheap enough to run at every spawn). A
/// descendant whose parent already exited was reparented and is not found here.
pub(crate) fn descendants(root: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![root];
    // Bounded: a fork bomb must not keep the caller busy.
    while let Some(pid) = todo.pop() {
        if out.len() >= 4096 {
            break;
        }
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(text) = fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            for child in text
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
            {
                if !out.contains(&child) {
                    out.push(child);
                    todo.push(child);
                }
            }
        }
    }
    out
}

/// The pid of a process listening on TCP `port` (IPv4 or IPv6), found through
/// `/proc/net/tcp*` (the socket inode) and `/proc/*/fd` (who holds that inode).
pub(crate) fn port_holder(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && local_port == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let dir = fs::read_dir("/proc").ok()?;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = fs::read_link(fd.path())
                && inodes.iter().any(|i| target.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let text = "42 (my (odd) app) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 123456 0 0";
        let s = parse_stat(42, text).unwrap();
        assert_eq!(
            (s.ppid, s.pgid, s.state, s.start_time),
            (1, 42, 'S', 123456)
        );
    }

    #[test]
    fn parses_usage_fields_after_the_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime priority nice threads itreal starttime vsize rss ...
        let text = "7 (a) b) S 1 7 7 0 -1 0 0 0 0 0 150 25 9 9 20 0 1 0 98765 1000 321 0 0";
        let u = parse_usage(text).unwrap();
        assert_eq!((u.cpu_ticks, u.start_time, u.rss_pages), (175, 98765, 321));
        let me = usage(std::process::id()).unwrap();
        assert!(me.rss_pages > 0);
        assert_eq!(
            Some(me.start_time),
            stat(std::process::id()).map(|s| s.start_time)
        );
    }

    #[test]
    fn descendants_are_found_through_the_children_lists() {
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "/bin/sleep 30 & wait"])
            .spawn()
            .unwrap();
        let sh = child.id();
        let mut found = Vec::new();
        for _ in 0..500 {
            found = descendants(sh);
            if !found.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let sleep = found.first().copied();
        let parent = sleep.and_then(stat).map(|s| s.ppid);
        let _ = child.kill();
        let _ = child.wait();
        let sleep = sleep.expect("the shell's child");
        assert_eq!(parent, Some(sh));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(sleep).unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    #[test]
    fn our_own_process_is_alive_with_its_start_time() {
        let me = std::process::id();
        let s = stat(me).unwrap();
        assert!(is_alive(me, Some(s.start_time)));
        assert!(!is_alive(me, Some(s.start_time + 1)));
    }
}
