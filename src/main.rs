//! `pharos`: the command-line front end. Parsing and exit codes live here; the work is in the library.
//!
//! Exit status (DESIGN.md §3): 0 when every input succeeded, 2 when some inputs failed (each failure is
//! reported in-band on stdout), 1 on a usage or fatal error (message on stderr).

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => {
            // clap would exit 2 for usage errors; our contract reserves 2 for "some inputs failed".
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(1) } else { ExitCode::SUCCESS };
        }
    };
    // Logs (the backend in use, GPU fallbacks, the daemon's events) go to stderr, as text or JSON lines;
    // PHAROS_LOG takes tracing filter directives. `log` records from the library are bridged in.
    let filter = tracing_subscriber::EnvFilter::try_from_env("PHAROS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("pharos=info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if args.log_format == "json" {
        logs.json().init();
    } else {
        logs.with_target(false).init();
    }
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pharos: {e:#}");
            ExitCode::from(1)
        }
    }
}
