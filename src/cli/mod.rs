//! Command-line definitions (clap) and dispatch to the subcommands.

mod audit;
mod bank;
mod bench;
mod hash;
mod inputs;
mod matching;
mod migrate;
mod serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Perceptual hashing (PDQ, pHash) and matching for hotlines and crawlers.
#[derive(Parser, Debug)]
#[command(name = "pharos", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Log format on stderr: text, or json (one object per line, for log shippers). Levels and filters:
    /// PHAROS_LOG (e.g. `debug`, `pharos=debug,tonic=info`).
    #[arg(long, global = true, env = "PHAROS_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub(crate) log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Hash image files or directories: one JSON object per input on stdout.
    Hash(hash::HashArgs),
    /// Manage banks of hashes: create, policy, list, add, import, update, remove, delete, export.
    Bank(bank::BankArgs),
    /// Match hashes (hex or `pharos hash` JSON lines) against banks: one JSON object per query.
    Match(matching::MatchArgs),
    /// List or prune the match audit (every match and suppression reported, flood-guard events).
    Audit(audit::AuditArgs),
    /// Copy banks and the audit between the embedded store and PostgreSQL, verified by counts and checksums.
    Migrate(migrate::MigrateArgs),
    /// Run the gRPC daemon (services Hasher, Matcher, Banks, Audit; health; reflection; metrics on their own
    /// port).
    Serve(Box<serve::ServeArgs>),
    /// Capacity benchmarks: decode, hash, match, pipeline (end to end), grpc and the capacity report.
    Bench(bench::BenchArgs),
}

/// Runs the parsed command; `Err` is a fatal error (exit status 1).
pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Hash(args) => hash::run(args),
        Command::Bank(args) => bank::run(args),
        Command::Match(args) => matching::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Migrate(args) => migrate::run(args),
        Command::Serve(args) => serve::run(*args),
    }
}
