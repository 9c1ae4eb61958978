//! What the server processes cost, read from `/proc` (Linux): resident memory, open descriptors
//! and CPU time; and the open-files limit of this process.

use serde::Serialize;

/// One process at one moment.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Sample {
    pub pid: u32,
    pub rss_kib: u64,
    pub fds: u64,
    /// User + system CPU time so far, in milliseconds.
    pub cpu_ms: u64,
}

/// Reads `pid` now; `None` when it is gone or unreadable.
pub fn sample(pid: u32) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces, so split after its closing paren):
    // utime is the 14th field of the line and stime the 15th.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Sample { pid, rss_kib, fds, cpu_ms: ticks * 1000 / per_sec })
}

/// Samples every pid (those that cannot be read are left out).
pub fn sample_all(pids: &[u32]) -> Vec<Sample> {
    pids.iter().filter_map(|&p| sample(p)).collect()
}

/// The kernel's memory for sockets, machine-wide: TCP's buffers (`/proc/net/sockstat`, counted
/// in pages) and the slab (`/proc/meminfo`), where each socket, its inode, file and epoll entry
/// live. Both ends of a loopback stream are on this machine, so a stream costs two sockets.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct KernelSample {
    pub tcp_sockets: u64,
    pub tcp_buffers_kib: u64,
    pub slab_kib: u64,
}

/// Reads the kernel's socket memory now; `None` off Linux or when unreadable.
pub fn kernel() -> Option<KernelSample> {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let tcp: Vec<&str> = sockstat.lines().find(|l| l.starts_with("TCP:"))?.split_whitespace().collect();
    let field = |name: &str| tcp.iter().position(|w| *w == name).and_then(|i| tcp.get(i + 1)?.parse::<u64>().ok());
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let slab_kib = meminfo.lines().find(|l| l.starts_with("Slab:"))?.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page_kib = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64) / 1024;
    Some(KernelSample { tcp_sockets: field("inuse")?, tcp_buffers_kib: field("mem")? * page_kib, slab_kib })
}

/// Raises this process's open-files limit to its hard limit; returns the new soft limit.
pub fn raise_open_files() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain get/set of this process's own limit with a valid pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let me = super::sample(std::process::id()).expect("this process is readable");
        assert!(me.rss_kib > 0 && me.fds > 0, "{me:?}");
    }

    #[test]
    fn reads_the_kernels_socket_memory() {
        let k = super::kernel().expect("/proc/net/sockstat and /proc/meminfo are readable");
        assert!(k.slab_kib > 0, "{k:?}");
    }
}
