//! `projector rebuild`: not implemented yet.

use std::process::ExitCode;

use clap::Args;

use crate::config::CommonArgs;

#[derive(Args, Debug)]
pub struct RebuildArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

pub async fn main(_args: RebuildArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`projector rebuild` is not implemented yet")
}
