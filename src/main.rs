//! The onnx-fold command: fold, verify, write; or compare two models.

mod cli;
mod commands;
mod summary;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};
use commands::Failure;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    quiet_caught_tract_panics();

    let result = match &cli.command {
        Some(Command::Compare(args)) => commands::compare(args, cli.quiet),
        None => commands::fold(&cli.fold, cli.quiet),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Invalid(error)) => {
            eprintln!("error: {error}");
            ExitCode::from(1)
        }
        Err(Failure::Verification(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(3)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

/// Keeps the default panic message for panics of onnx-fold itself. The tract
/// panics that verification catches and reports as errors are logged at debug
/// level only, so a pipeline that greps stderr for "panicked" finds real ones.
fn quiet_caught_tract_panics() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if onnx_fold::verify::inside_tract_call() {
            log::debug!("tract panicked, the error is reported instead: {info}");
        } else {
            default_hook(info);
        }
    }));
}

/// Maps -q, the default, -v and -vv to error, warn/info, debug and trace.
/// RUST_LOG, when set, takes precedence.
fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => log::LevelFilter::Error,
        (false, 0) => log::LevelFilter::Warn,
        (false, 1) => log::LevelFilter::Debug,
        (false, _) => log::LevelFilter::Trace,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .format_timestamp(None)
        .parse_default_env()
        .init();
}
