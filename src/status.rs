//! `projector status`: not implemented yet.

use std::process::ExitCode;

use clap::Args;

use crate::config::CommonArgs;

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

pub async fn main(_args: StatusArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`projector status` is not implemented yet")
}
