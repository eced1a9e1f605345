//! Subcommands this version does not have yet: they say so, touch nothing, and exit 2.

use crate::exit::Exit;

pub fn run(command: &str) -> anyhow::Result<Exit> {
    anyhow::bail!(
        "`{command}` is not built yet in haproxy-rollout {}; nothing was touched",
        env!("CARGO_PKG_VERSION")
    )
}
