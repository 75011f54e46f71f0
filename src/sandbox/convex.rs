//! The local Convex-compatible backend (`npm run local-backend`): the
//! project's own `convex/` functions in convex-test behind the Convex HTTP
//! wire format. Started as a child process; killed on drop.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::config::Secret;

pub struct LocalConvex {
    pub url: String,
    pub admin_key: Secret,
    child: Child,
}

/// The repository root: where `package.json` and `convex/` live. The
/// compile-time crate directory, unless `PROJECTOR_REPO_ROOT` says otherwise.
pub fn repo_root() -> PathBuf {
    std::env::var_os("PROJECTOR_REPO_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl LocalConvex {
    /// Starts the backend from `root` and waits for its `listening` line.
    pub async fn start(root: &Path) -> anyhow::Result<LocalConvex> {
        if !root.join("node_modules").is_dir() {
            anyhow::bail!(
                "{} has no node_modules: run `npm ci` there first (scripts/setup.sh does it)",
                root.display()
            );
        }
        let port = free_port()?;
        let key = format!("local-admin-{:032x}", rand::random::<u128>());
        let mut cmd = Command::new("npm");
        cmd.current_dir(root)
            .args(["run", "--silent", "local-backend", "--", "--port"])
            .arg(port.to_string())
            // By environment: process arguments are visible to every local user.
            .env("CONVEX_ADMIN_KEY", &key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        // Own process group, so drop can kill npm and node together.
        cmd.process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            anyhow::anyhow!("cannot start `npm run local-backend`: {e} (is Node.js installed?)")
        })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("local backend has no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let wait = async {
            while let Some(line) = lines.next_line().await? {
                if line.contains("listening") {
                    return Ok::<bool, std::io::Error>(true);
                }
            }
            Ok(false)
        };
        match tokio::time::timeout(Duration::from_secs(60), wait).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => anyhow::bail!("the local Convex backend exited before listening"),
            Ok(Err(e)) => anyhow::bail!("reading the local Convex backend's output: {e}"),
            Err(_) => anyhow::bail!("the local Convex backend did not start within 60 s"),
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(LocalConvex {
            url: format!("http://127.0.0.1:{port}"),
            admin_key: Secret::new(key),
            child,
        })
    }
}

impl Drop for LocalConvex {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // Kill the whole group (npm, tsx, node).
            // SAFETY: plain syscall on a pid we spawned.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
    }
}
