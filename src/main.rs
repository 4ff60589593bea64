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
    // Logs (the backend in use, GPU fallbacks) go to stderr; PHAROS_LOG takes env_logger filters.
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("PHAROS_LOG", "pharos=info"))
        .format_timestamp(None)
        .init();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pharos: {e:#}");
            ExitCode::from(1)
        }
    }
}
