//! Command-line definitions (clap) and dispatch to the subcommands.

mod bank;
mod bench;
mod hash;
mod matching;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Perceptual hashing (PDQ, pHash) and matching for hotlines and crawlers.
#[derive(Parser, Debug)]
#[command(name = "pharos", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Hash image files or directories: one JSON object per input on stdout.
    Hash(hash::HashArgs),
    /// Manage banks of hashes: create, list, add, import, remove, delete, export.
    Bank(bank::BankArgs),
    /// Match hashes (hex or `pharos hash` JSON lines) against banks: one JSON object per query.
    Match(matching::MatchArgs),
    /// Capacity benchmarks: decode, hash, match, pipeline (end to end) and the capacity report.
    Bench(bench::BenchArgs),
}

/// Runs the parsed command; `Err` is a fatal error (exit status 1).
pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Hash(args) => hash::run(args),
        Command::Bank(args) => bank::run(args),
        Command::Match(args) => matching::run(args),
        Command::Bench(args) => bench::run(args),
    }
}
