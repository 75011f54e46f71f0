//! `projector pipeline`: not implemented yet.

use std::process::ExitCode;

use clap::Args;

use crate::config::CommonArgs;

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

pub async fn main(_args: RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`projector pipeline` is not implemented yet")
}
