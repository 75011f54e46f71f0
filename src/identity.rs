//! How this process names itself to other replicas and operators: in a
//! generation's writer record and in the rebuild lease (`host pid N`).

/// `host pid N`.
pub(crate) fn writer_identity() -> String {
    format!("{} pid {}", host_name(), std::process::id())
}

/// This host's name, as `hostname` prints it.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Whether `holder` (a [`writer_identity`]) names a process of this host
/// that no longer runs (or is a zombie). `false` for other hosts: only a
/// lease timeout tells those.
pub(crate) fn is_dead_local(holder: &str) -> bool {
    let Some((host, pid)) = holder.rsplit_once(" pid ") else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    if host != host_name() || pid == std::process::id() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_is_dead_only_when_its_local_process_is_gone() {
        let me = writer_identity();
        assert!(!is_dead_local(&me), "ourselves");
        // pid 1 always runs.
        assert!(!is_dead_local(&format!("{} pid 1", host_name())));
        // Beyond pid_max (4194304 at most): no such process.
        assert!(is_dead_local(&format!("{} pid 4999999", host_name())));
        assert!(!is_dead_local("another-host pid 4999999"));
        assert!(!is_dead_local("garbage"));
    }
}
