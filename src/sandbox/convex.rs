//! The local Convex-compatible backend (`npm run local-backend`): the
//! project's own `convex/` functions in convex-test behind the Convex HTTP
//! wire format, on a free port with a random admin key. The one launcher
//! behind `demo`, the hidden `sandbox` subcommand and the integration
//! tests' `tests/support/convex_backend.rs`. Started as a child process in
//! its own process group; readiness is its `listening` line; drop kills
//! the whole group (npm, tsx, node).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Secret;

/// One of the child's output pipes, read on its own thread.
type Pipe = Box<dyn std::io::Read + Send>;

/// How many of the backend's last output lines are kept for error messages.
const TAIL_LINES: usize = 200;

/// The repository root: where `package.json` and `convex/` live. The
/// compile-time crate directory, unless `PROJECTOR_REPO_ROOT` says otherwise.
pub(crate) fn repo_root() -> PathBuf {
    std::env::var_os("PROJECTOR_REPO_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub(crate) fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// How to start the backend.
#[derive(Clone, Debug)]
pub struct ConvexOptions {
    /// Where `package.json` and `node_modules` are.
    pub root: PathBuf,
    /// Extra environment (e.g. `JWT_ISSUER`, `JWT_JWKS_URL`,
    /// `JWT_APPLICATION_ID` for `convex/auth.config.ts`).
    pub env: Vec<(String, String)>,
    /// The admin key's prefix (the rest is random).
    pub key_prefix: String,
    /// How long it may take to print `listening`.
    pub start_timeout: Duration,
    /// Copy its stderr to ours (stdout too when `echo_stdout`).
    pub echo_stderr: bool,
    pub echo_stdout: bool,
}

impl Default for ConvexOptions {
    fn default() -> Self {
        ConvexOptions {
            root: repo_root(),
            env: vec![],
            key_prefix: "local-admin-".into(),
            start_timeout: Duration::from_secs(90),
            echo_stderr: true,
            echo_stdout: false,
        }
    }
}

pub struct LocalConvex {
    pub url: String,
    pub admin_key: Secret,
    child: Child,
    output: Arc<Mutex<VecDeque<String>>>,
}

impl LocalConvex {
    /// Starts the backend from `root` with extra environment and waits for
    /// its `listening` line (`demo`).
    pub(crate) async fn start_with_env(
        root: &Path,
        env: &[(String, String)],
    ) -> anyhow::Result<LocalConvex> {
        let opts = ConvexOptions {
            root: root.to_path_buf(),
            env: env.to_vec(),
            ..Default::default()
        };
        tokio::task::spawn_blocking(move || LocalConvex::start_blocking(&opts)).await?
    }

    /// Starts the backend and waits for its `listening` line. A free port
    /// can be taken between probing and binding, so a start that fails is
    /// tried twice more on another port. Blocking.
    pub fn start_blocking(opts: &ConvexOptions) -> anyhow::Result<LocalConvex> {
        if !opts.root.join("node_modules").is_dir() {
            anyhow::bail!(
                "{} has no node_modules: run `npm ci` there first (scripts/setup.sh does it)",
                opts.root.display()
            );
        }
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start(opts) {
                Ok(b) => return Ok(b),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("not started")))
    }

    fn try_start(opts: &ConvexOptions) -> anyhow::Result<LocalConvex> {
        let port = free_port()?;
        let key = format!("{}{:032x}", opts.key_prefix, rand::random::<u128>());
        let mut child = Command::new("npm")
            .current_dir(&opts.root)
            .args(["run", "--silent", "local-backend", "--", "--port"])
            .arg(port.to_string())
            // By environment: process arguments are visible to every local user.
            .env("CONVEX_ADMIN_KEY", &key)
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group, so drop can kill npm and node together.
            .process_group(0)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("cannot start `npm run local-backend`: {e} (is Node.js installed?)")
            })?;
        let output: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let (tx, rx) = mpsc::channel::<()>();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let streams: [(Option<Pipe>, bool, bool); 2] = [
            (stdout.map(|s| Box::new(s) as Pipe), opts.echo_stdout, true),
            (stderr.map(|s| Box::new(s) as Pipe), opts.echo_stderr, false),
        ];
        // Readers drain both pipes for the backend's whole life, so it never
        // blocks on a full pipe.
        for (stream, echo, is_stdout) in streams {
            let Some(stream) = stream else { continue };
            let (output, tx) = (output.clone(), is_stdout.then(|| tx.clone()));
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if echo {
                        eprintln!("[local-backend] {line}");
                    }
                    if let Some(tx) = &tx {
                        if line.contains("listening") {
                            let _ = tx.send(());
                        }
                    }
                    let mut o = output.lock().unwrap_or_else(|p| p.into_inner());
                    o.push_back(line);
                    if o.len() > TAIL_LINES {
                        o.pop_front();
                    }
                }
            });
        }
        drop(tx);
        let mut backend = LocalConvex {
            url: format!("http://127.0.0.1:{port}"),
            admin_key: Secret::new(key),
            child,
            output,
        };
        let deadline = Instant::now() + opts.start_timeout;
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(()) => return Ok(backend),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = backend.child.try_wait() {
                        anyhow::bail!(
                            "the local Convex backend exited with {status} before listening:\n{}",
                            backend.output_tail()
                        );
                    }
                    if Instant::now() > deadline {
                        anyhow::bail!(
                            "the local Convex backend printed no `listening` line within {:?}:\n{}",
                            opts.start_timeout,
                            backend.output_tail()
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Stdout closed: wait for the exit, so the tail holds
                    // stderr's last words too.
                    let status = backend.child.wait()?;
                    anyhow::bail!(
                        "the local Convex backend closed its stdout ({status}) before listening:\n{}",
                        backend.output_tail()
                    );
                }
            }
        }
    }

    /// The last lines the backend printed (for failure messages).
    pub fn output_tail(&self) -> String {
        let o = self.output.lock().unwrap_or_else(|p| p.into_inner());
        o.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for LocalConvex {
    fn drop(&mut self) {
        // SAFETY: plain syscall; the negative pid names the process group
        // created by `process_group(0)` (npm, tsx, node).
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
