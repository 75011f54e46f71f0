//! `projector demo`: not implemented yet.

use std::process::ExitCode;

use clap::Args;

use crate::config::CommonArgs;

#[derive(Args, Debug)]
pub struct DemoArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

pub async fn main(_args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`projector demo` is not implemented yet")
}
