//! `mcp-sample-server`: see `fleet_testkit::sample_server`.

use clap::Parser;
use fleet_testkit::sample_server::{self, SampleServerArgs};

#[tokio::main]
async fn main() {
    let args = SampleServerArgs::parse();
    let code = match sample_server::run(args).await {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("mcp-sample-server: {error:#}");
            1
        }
    };
    // Exit here rather than returning: dropping the runtime would wait for
    // any blocking stdin read still parked on Tokio's blocking pool.
    std::process::exit(code);
}
