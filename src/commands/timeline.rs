//! `timeline EVENTS.jsonl FILE.svg`: the picture of a rollout from its saved JSON events.

use super::Stop;
use crate::cli::TimelineArgs;
use crate::exit::Exit;
use crate::report::Printer;

pub fn run(args: &TimelineArgs, printer: &Printer) -> Result<Exit, Stop> {
    let text = std::fs::read_to_string(&args.events)
        .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", args.events.display()))?;
    let mut events = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event: serde_json::Value = serde_json::from_str(line).map_err(|error| {
            anyhow::anyhow!(
                "{}:{}: not a JSON event ({error}); expected the output of `--output json apply`",
                args.events.display(),
                number + 1
            )
        })?;
        events.push(event);
    }
    let svg = crate::report::timeline::svg(&events)
        .map_err(|error| anyhow::anyhow!("{}: {error}", args.events.display()))?;
    std::fs::write(&args.svg, svg)
        .map_err(|error| anyhow::anyhow!("cannot write {}: {error}", args.svg.display()))?;
    printer.note(&format!("wrote {}", args.svg.display()));
    Ok(Exit::Success)
}
