//! The demo's app backend (`npm run demo-web`, web/server.ts): a reference
//! token issuer (JWKS, a demo-only `/token?sub=` endpoint) that also serves
//! the live page. Started as a child process in its own process group;
//! killed with it on drop.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct DemoWeb {
    /// Where the page is served; also the `iss` of its tokens.
    pub url: String,
    /// `JWT_ISSUER`, `JWT_JWKS_URL`, `JWT_APPLICATION_ID` for the backend.
    pub jwt_env: Vec<(String, String)>,
    child: Child,
}

impl DemoWeb {
    /// Starts it from `root` and waits for its `listening` line.
    pub async fn start(root: &Path) -> anyhow::Result<DemoWeb> {
        let mut cmd = Command::new("npm");
        cmd.current_dir(root)
            .args(["run", "--silent", "demo-web", "--", "--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        cmd.process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            anyhow::anyhow!("cannot start `npm run demo-web`: {e} (is Node.js installed?)")
        })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("demo web app has no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let mut jwt_env = Vec::new();
        let wait = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("demo web app listening on ") {
                    return Ok::<Option<String>, std::io::Error>(Some(url.trim().to_string()));
                }
                for pair in line.split_whitespace() {
                    if let Some((k, v)) = pair.split_once('=') {
                        if k.starts_with("JWT_") {
                            jwt_env.push((k.to_string(), v.to_string()));
                        }
                    }
                }
            }
            Ok(None)
        };
        let url = match tokio::time::timeout(Duration::from_secs(60), wait).await {
            Ok(Ok(Some(url))) => url,
            Ok(Ok(None)) => anyhow::bail!("the demo web app exited before listening"),
            Ok(Err(e)) => anyhow::bail!("reading the demo web app's output: {e}"),
            Err(_) => anyhow::bail!("the demo web app did not start within 60 s"),
        };
        if jwt_env.len() != 3 {
            anyhow::bail!(
                "the demo web app did not print JWT_ISSUER, JWT_JWKS_URL and JWT_APPLICATION_ID"
            );
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(DemoWeb {
            url,
            jwt_env,
            child,
        })
    }

    /// A token for `user` from the demo-only `/token` endpoint.
    pub async fn token(&self, user: &str) -> anyhow::Result<String> {
        #[derive(serde::Deserialize)]
        struct Token {
            token: String,
        }
        let url =
            reqwest::Url::parse_with_params(&format!("{}/token", self.url), &[("sub", user)])?;
        let resp = reqwest::get(url).await?.error_for_status()?;
        Ok(resp.json::<Token>().await?.token)
    }

    /// The live page for `user`, subscribed to the deployment at `convex_url`.
    pub(crate) fn page_url(&self, convex_url: &str, user: &str) -> anyhow::Result<String> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/", self.url),
            &[("convex", convex_url), ("user", user)],
        )?;
        Ok(url.to_string())
    }
}

impl Drop for DemoWeb {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: plain syscall on the process group we created.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
    }
}
