//! `projector verify`: not implemented yet.

use std::process::ExitCode;

use clap::Args;

use crate::config::CommonArgs;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

pub async fn main(_args: VerifyArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`projector verify` is not implemented yet")
}
