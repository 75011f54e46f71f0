//! Typed configuration.
//!
//! Each setting is declared once, as a field of its section's struct
//! ([`SourceArgs`], [`ConvexArgs`], [`MetricsArgs`], [`TuningArgs`]): the
//! field is the flag, its environment variable, the key of the `--config`
//! TOML file and the help text with its default. The layers, highest first:
//! flag, environment, file, the section's `DEFAULT_*` constant. Then
//! [`Settings::validate`] refuses every value the service cannot run with,
//! naming the fix. Secrets are [`Secret`]s from the moment clap or serde
//! parses them, so `Debug`, logs and errors never show them.
//!
//! Defaults are not clap defaults: a clap default cannot be told from a
//! flag, and a file value must beat the default but lose to a flag. So the
//! fields are `Option`s and [`with_default`] writes the default into the
//! help; [`reference`] reads the declarations back for the docs tables.

mod convex;
mod error;
mod file;
mod metrics;
mod redact;
pub mod reference;
mod source;
mod tuning;

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

pub use crate::secret::Secret;
pub(crate) use convex::ConvexArgs;
use convex::{SELF_HOSTED_KEY_ENV, SELF_HOSTED_URL_ENV};
pub(crate) use error::ConfigError;
pub(crate) use metrics::MetricsArgs;
#[cfg(test)]
pub(crate) use metrics::DEFAULT_METRICS_ADDR;
pub(crate) use redact::redact_url;
pub(crate) use source::{SourceArgs, DEFAULT_PUBLICATION, DEFAULT_SLOT};
pub(crate) use tuning::{Tuning, TuningArgs};

/// The settings of every subcommand that talks to Postgres or Convex,
/// flattened into its arguments; the `--config` file fills the same
/// sections (its keys are their fields, flat).
#[derive(Args, Clone, Debug, Default)]
pub struct CommonArgs {
    #[arg(
        long,
        env = "PROJECTOR_CONFIG",
        global = true,
        help = "TOML file with any of the settings below, keys named like the flags in \
                snake_case; flags and environment variables win over it"
    )]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub convex: ConvexArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub tuning: TuningArgs,
}

/// A help text followed by ` [default: value]`, clap's own notation for a
/// default it applies itself (see the module doc for why it does not).
pub(crate) fn with_default(text: impl Display, default: impl Display) -> String {
    format!("{text}{}{default}]", reference::DEFAULT_MARK)
}

/// One section's two layers: flags and environment over the file.
pub(crate) struct Layers<'a, T> {
    pub(crate) args: &'a T,
    pub(crate) file: &'a T,
}

impl<'a, T> Layers<'a, T> {
    pub(crate) fn new(args: &'a T, file: &'a T) -> Self {
        Layers { args, file }
    }

    /// The value of the first layer that sets it.
    pub(crate) fn get<V: Clone>(&self, field: impl Fn(&T) -> &Option<V>) -> Option<V> {
        (field(self.args).clone()).or_else(|| field(self.file).clone())
    }
}

/// Fully resolved, validated settings. `Debug` redacts secrets.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub(crate) database_url: Option<Secret>,
    pub(crate) convex_url: Option<String>,
    pub(crate) convex_admin_key: Option<Secret>,
    pub slot: String,
    pub(crate) publication: String,
    pub(crate) metrics_addr: SocketAddr,
    pub(crate) tuning: Tuning,
}

impl CommonArgs {
    /// Resolves flags > environment > file > defaults and validates the
    /// result. Missing URLs stay `None`; the subcommands that need them call
    /// [`Settings::database_url`] and [`Settings::convex`].
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        let file = match &self.config {
            Some(path) => file::load(path)?,
            None => CommonArgs::default(),
        };
        let source = Layers::new(&self.source, &file.source);
        let convex = Layers::new(&self.convex, &file.convex);
        let settings = Settings {
            database_url: source.get(|s| &s.database_url),
            convex_url: convex::url(&convex),
            convex_admin_key: convex::admin_key(&convex),
            slot: source
                .get(|s| &s.slot)
                .unwrap_or_else(|| DEFAULT_SLOT.into()),
            publication: (source.get(|s| &s.publication))
                .unwrap_or_else(|| DEFAULT_PUBLICATION.into()),
            metrics_addr: metrics::addr(&Layers::new(&self.metrics, &file.metrics))?,
            tuning: TuningArgs::resolve(&Layers::new(&self.tuning, &file.tuning)),
        };
        settings.validate()?;
        Ok(settings)
    }
}

impl Settings {
    /// Refuses every value the service cannot run with, naming the fix.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        source::validate(&self.slot, &self.publication, self.database_url.as_ref())?;
        if let Some(url) = &self.convex_url {
            convex::validate_url(url)?;
        }
        self.tuning.validate()
    }

    pub(crate) fn database_url(&self) -> Result<&Secret, ConfigError> {
        self.database_url.as_ref().ok_or(ConfigError::Missing {
            what: "the source database",
            setting: "database_url",
            alias: None,
        })
    }

    /// The Convex URL and admin key, both required.
    pub(crate) fn convex(&self) -> Result<(&str, &Secret), ConfigError> {
        let url = self.convex_url.as_deref().ok_or(ConfigError::Missing {
            what: "the Convex deployment URL",
            setting: "convex_url",
            alias: Some(SELF_HOSTED_URL_ENV),
        })?;
        let key = (self.convex_admin_key.as_ref())
            .filter(|k| !k.is_empty())
            .ok_or(ConfigError::Missing {
                what: "the Convex admin key",
                setting: "convex_admin_key",
                alias: Some(SELF_HOSTED_KEY_ENV),
            })?;
        Ok((url, key))
    }
}

#[cfg(test)]
mod tests;
