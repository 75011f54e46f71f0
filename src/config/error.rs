//! Configuration errors. Each names the setting the way an operator can
//! change it (flag, environment variable, file key, all taken from the one
//! declaration by [`super::reference`]) and says what to set instead. None
//! quotes a secret.

use std::path::PathBuf;

use super::reference;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting the command needs and nobody gave.
    #[error("{what} is not set: {}", reference::how_to_set(.setting, *.alias))]
    Missing {
        what: &'static str,
        /// The setting's id: its field name and file key.
        setting: &'static str,
        /// A second environment variable read when the first is unset.
        alias: Option<&'static str>,
    },
    /// A value the service cannot run with; `why` says what would work.
    #[error("invalid {}: {why}", reference::spelled(.setting))]
    Invalid { setting: &'static str, why: String },
    /// The `--config` file cannot be read or parsed. `why` never quotes the
    /// file's text (a line of it may hold a password).
    #[error("cannot read config file {}: {why}", .path.display())]
    File { path: PathBuf, why: String },
}

impl ConfigError {
    pub(crate) fn invalid(setting: &'static str, why: impl Into<String>) -> Self {
        ConfigError::Invalid {
            setting,
            why: why.into(),
        }
    }
}
