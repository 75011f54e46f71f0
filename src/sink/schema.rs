//! The contract version shared with the Convex app (`convex/version.ts`):
//! the tables, their fields and the internal functions' arguments. Every
//! `apply` carries it, and `run` checks it before streaming, so deployment
//! skew (one side rolled out before the other) is told apart from a bad
//! document: it is retried and alerted on, never dead-lettered.

use crate::sink::{ConvexClient, SinkError};

/// The schema version this binary was built for; `convex/version.ts`
/// holds the same number (a test reads it).
pub const SCHEMA_VERSION: u64 = 2;

/// What the deployed functions say about the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skew {
    /// The functions implement another version.
    Mismatch { functions: u64 },
    /// The functions predate versioning (no `projector:schemaVersion`).
    Unversioned,
}

impl std::fmt::Display for Skew {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skew::Mismatch { functions } => write!(
                f,
                "deployment skew: the Convex functions implement schema version {functions}, this projector is built for {SCHEMA_VERSION}; deploy the functions of this projector's release (`npx convex deploy` from its repository) or run the projector release that matches them"
            ),
            Skew::Unversioned => write!(
                f,
                "deployment skew: the Convex functions predate schema versioning (no projector:schemaVersion), this projector is built for version {SCHEMA_VERSION}; deploy the functions of this projector's release (`npx convex deploy`)"
            ),
        }
    }
}

/// `Ok(None)` when the deployed functions match this binary.
pub async fn check(client: &ConvexClient) -> Result<Option<Skew>, SinkError> {
    match client.schema_version().await {
        Ok(v) if v == SCHEMA_VERSION => Ok(None),
        Ok(functions) => Ok(Some(Skew::Mismatch { functions })),
        // Not a wrong key or an unreachable deployment: the function is
        // missing (Convex answers 200 with this message, or 404).
        Err(e) if is_missing_function(&e) => Ok(Some(Skew::Unversioned)),
        Err(e) => Err(e),
    }
}

fn is_missing_function(e: &SinkError) -> bool {
    match e {
        SinkError::Function { message, .. } => message.contains("Could not find"),
        SinkError::Rejected { status: 404, .. } => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_convex_app_declares_the_same_version() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/convex/version.ts");
        let text = std::fs::read_to_string(path).expect("convex/version.ts");
        let declared = text
            .lines()
            .find_map(|l| l.strip_prefix("export const SCHEMA_VERSION = "))
            .and_then(|v| v.trim_end_matches(';').trim().parse::<u64>().ok());
        assert_eq!(declared, Some(SCHEMA_VERSION), "bump both together");
    }

    #[test]
    fn skew_names_both_versions_and_the_fix() {
        let text = Skew::Mismatch { functions: 7 }.to_string();
        assert!(
            text.contains("version 7") && text.contains(&format!("built for {SCHEMA_VERSION}"))
        );
        assert!(text.contains("npx convex deploy"));
    }
}
