//! haproxy-rollout: restarts the servers behind HAProxy one safe step at a time.
//!
//! plan file → `plan` (parse, decode, validate) → engine (decides) → effects (haproxy, ssh,
//! health) → `report` (people on stderr, JSON on stdout).

pub mod cli;
pub mod commands;
pub mod driver;
pub mod effects;
pub mod engine;
pub mod error;
pub mod exit;
pub mod haproxy;
pub mod health;
pub mod journal;
pub mod local;
pub mod lock;
pub mod plan;
pub mod report;
pub mod ssh;
pub mod state;

use clap::Parser;

/// The whole program: parse the command line, run the command, return its exit status.
pub fn run() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let printer = report::Printer::new(
        cli.global.output,
        cli.global.color,
        cli.global.quiet,
        cli.global.verbose,
    );
    init_tracing(&cli.global, &printer);
    commands::run(cli, &printer).into()
}

fn init_tracing(global: &cli::GlobalArgs, printer: &report::Printer) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let level = match (global.verbose, global.quiet) {
        (0, 0) => "info",
        (1, _) => "debug",
        (2.., _) => "trace",
        (0, 1) => "warn",
        (0, _) => "error",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("haproxy_rollout={level}")));
    let registry = tracing_subscriber::registry().with(filter);
    if printer.progress_bars() {
        // Log lines go through the progress bars' writer, so they never tear them.
        let bars = tracing_indicatif::IndicatifLayer::new();
        let log = tracing_subscriber::fmt::layer()
            .with_writer(bars.get_stderr_writer())
            .with_ansi(printer.color)
            .event_format(report::log::LogFormat {
                terminal: **printer,
                timed: false,
            });
        let bars = tracing_subscriber::Layer::with_filter(
            bars,
            tracing_indicatif::filter::IndicatifFilter::new(false),
        );
        registry.with(log).with(bars).init();
    } else {
        let log = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(printer.color)
            .event_format(report::log::LogFormat {
                terminal: **printer,
                timed: true,
            });
        registry.with(log).init();
    }
}
