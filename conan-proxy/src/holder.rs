//! Who holds a TCP port: the listening socket's inode from `/proc/net/tcp{,6}`, then the
//! process with that socket among `/proc/*/fd` (Linux; only processes we may inspect).

use std::net::SocketAddr;

/// `pid N (comm)` of the process listening on `addr`'s port, if it can be found.
#[must_use]
pub fn holder_of(addr: SocketAddr) -> Option<String> {
    let inode = listening_inode(addr.port())?;
    let target = format!("socket:[{inode}]");
    let procs = std::fs::read_dir("/proc").ok()?;
    for entry in procs.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()) {
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                return Some(format!("pid {pid} ({})", comm.trim()));
            }
        }
    }
    None
}

/// The inode of a socket listening on `port` (any address).
fn listening_inode(port: u16) -> Option<u64> {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|path| {
        let text = std::fs::read_to_string(path).ok()?;
        text.lines().skip(1).find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let local = f.get(1)?;
            let state = f.get(3)?;
            let (_, hex_port) = local.rsplit_once(':')?;
            (*state == "0A" && u16::from_str_radix(hex_port, 16).ok()? == port)
                .then(|| f.get(9)?.parse().ok())
                .flatten()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let held = holder_of(l.local_addr().unwrap()).expect("found");
        assert!(
            held.starts_with(&format!("pid {} (", std::process::id())),
            "{held}"
        );
    }
}
