//! `projector setup`: not implemented yet.

use std::process::ExitCode;

use clap::Args;

use crate::config::CommonArgs;

#[derive(Args, Debug)]
pub struct SetupArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

pub async fn main(_args: SetupArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`projector setup` is not implemented yet")
}
