//! The Convex section: which deployment, and the key the service calls its
//! internal functions with.

use clap::Args;
use serde::Deserialize;

use super::{ConfigError, Layers, Secret};

/// Read when `CONVEX_URL` is unset: the variable the Convex CLI uses for a
/// self-hosted backend, so one environment file serves both.
pub(crate) const SELF_HOSTED_URL_ENV: &str = "CONVEX_SELF_HOSTED_URL";

/// Read when `CONVEX_ADMIN_KEY` is unset, for the same reason.
pub(crate) const SELF_HOSTED_KEY_ENV: &str = "CONVEX_SELF_HOSTED_ADMIN_KEY";

/// The `--help` heading of this section (per argument: a struct-wide
/// heading would carry over to the flags declared after the section).
const HEADING: &str = "Sink (Convex)";

#[derive(Args, Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ConvexArgs {
    #[arg(
        long,
        help_heading = HEADING,
        env = "CONVEX_URL",
        help = "Convex deployment URL: https://<name>.convex.cloud or a self-hosted backend such \
                as http://convex-backend:3210 (CONVEX_SELF_HOSTED_URL is read when CONVEX_URL is \
                unset)"
    )]
    pub(crate) convex_url: Option<String>,

    #[arg(
        long,
        help_heading = HEADING,
        env = "CONVEX_ADMIN_KEY",
        hide_env_values = true,
        help = "Convex admin or deploy key; it calls the internal projector:* functions \
                (CONVEX_SELF_HOSTED_ADMIN_KEY is read when CONVEX_ADMIN_KEY is unset). Secret: \
                never logged"
    )]
    pub(crate) convex_admin_key: Option<Secret>,
}

/// Flag or `CONVEX_URL`, then `CONVEX_SELF_HOSTED_URL`, then the file.
pub(super) fn url(l: &Layers<'_, ConvexArgs>) -> Option<String> {
    (l.args.convex_url.clone())
        .or_else(|| env_fallback(SELF_HOSTED_URL_ENV))
        .or_else(|| l.file.convex_url.clone())
}

/// Flag or `CONVEX_ADMIN_KEY`, then `CONVEX_SELF_HOSTED_ADMIN_KEY`, then
/// the file.
pub(super) fn admin_key(l: &Layers<'_, ConvexArgs>) -> Option<Secret> {
    (l.args.convex_admin_key.clone())
        .or_else(|| env_fallback(SELF_HOSTED_KEY_ENV).map(Secret::new))
        .or_else(|| l.file.convex_admin_key.clone())
}

fn env_fallback(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// An http(s) URL the client can append `/api/mutation` to: no
/// credentials (the key travels in a header), no query or fragment.
pub(super) fn validate_url(url: &str) -> Result<(), ConfigError> {
    let example = "expected e.g. https://happy-otter-123.convex.cloud";
    let parsed = url::Url::parse(url)
        .map_err(|e| ConfigError::invalid("convex_url", format!("{e}; {example}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConfigError::invalid(
            "convex_url",
            format!(
                "{}:// is not http:// or https://; {example}",
                parsed.scheme()
            ),
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ConfigError::invalid(
            "convex_url",
            "must not contain credentials: remove user:password@ and pass the key with \
             --convex-admin-key or CONVEX_ADMIN_KEY",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(ConfigError::invalid(
            "convex_url",
            format!(
                "must not have a ?query or #fragment (the API paths are appended to it); {example}"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> String {
        validate_url(url).unwrap_err().to_string()
    }

    #[test]
    fn deployment_urls_are_accepted() {
        for ok in [
            "https://happy-otter-123.convex.cloud",
            "http://127.0.0.1:3210/",
            "http://proxy.internal/convex",
        ] {
            validate_url(ok).unwrap();
        }
    }

    #[test]
    fn a_non_http_url_is_refused_with_an_example() {
        for bad in [
            "happy-otter-123.convex.cloud",
            "ftp://h",
            "wss://h.convex.cloud",
        ] {
            let e = refused(bad);
            assert!(
                e.contains("--convex-url") && e.contains("CONVEX_URL"),
                "{e}"
            );
            assert!(e.contains("https://happy-otter-123.convex.cloud"), "{e}");
        }
    }

    #[test]
    fn credentials_in_the_url_are_refused_without_echoing_them() {
        let e = refused("https://admin:hunter2@h.convex.cloud");
        assert!(e.contains("--convex-admin-key"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_query_or_fragment_is_refused() {
        for bad in ["https://h.convex.cloud?x=1", "https://h.convex.cloud#top"] {
            assert!(refused(bad).contains("?query or #fragment"), "{bad}");
        }
    }
}
