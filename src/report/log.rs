//! Log lines (`tracing`) in the format of every other line for people: on a terminal with
//! progress bars, `warning: text`; otherwise the time first, as a running rollout's lines
//! have it (`2026-11-30T13:40:01.120Z warning: text`).

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::{ERROR, Terminal, WARNING};

pub struct LogFormat {
    pub terminal: Terminal,
    /// Lines above progress bars go without the time, as the rollout's own lines do.
    pub timed: bool,
}

impl<S, N> FormatEvent<S, N> for LogFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if self.timed {
            write!(
                writer,
                "{} ",
                humantime::format_rfc3339_millis(std::time::SystemTime::now())
            )?;
        }
        let level = *event.metadata().level();
        let label = match level {
            Level::ERROR => self.terminal.paint(ERROR, "error:"),
            Level::WARN => self.terminal.paint(WARNING, "warning:"),
            Level::INFO => String::new(),
            Level::DEBUG => "debug:".to_owned(),
            Level::TRACE => "trace:".to_owned(),
        };
        if !label.is_empty() {
            write!(writer, "{label} ")?;
        }
        context
            .field_format()
            .format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
