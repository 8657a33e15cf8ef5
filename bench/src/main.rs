//! `statgate-bench`: load generator for a running statgate (see the library's module doc).

use clap::Parser;
use statgate_bench::{self as bench, BenchCli};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = BenchCli::parse();
    if let bench::Mode::FloorServer(args) = cli.mode {
        return Ok(bench::floor::serve(args).await?);
    }
    let json_path = cli.target.json.clone();
    let report = bench::run(cli).await?;
    report.print_table();
    let written = report.write_json(json_path.as_deref())?;
    println!("  json  {}", written.display());
    Ok(())
}
