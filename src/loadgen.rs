//! `projector loadgen`: not implemented yet.

use std::process::ExitCode;

use clap::Args;

use crate::config::CommonArgs;

#[derive(Args, Debug)]
pub struct LoadgenArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

pub async fn main(_args: LoadgenArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`projector loadgen` is not implemented yet")
}
