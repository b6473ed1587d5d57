//! Log output on stderr. In text logs every field value is escaped: ids,
//! event types and error texts come from clients and endpoints, and a raw
//! newline or terminal escape in them would let a client forge log lines or
//! rewrite an operator's terminal. (JSON logs are escaped by JSON itself.)

use std::fmt;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{FieldFn, Writer, debug_fn};

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

pub(crate) fn init(format: LogFormat, filter: EnvFilter) {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs
            .fmt_fields(escaped_fields())
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

type FieldFormatter = fn(&mut Writer<'_>, &tracing::field::Field, &dyn fmt::Debug) -> fmt::Result;

/// `name=value` pairs separated by spaces (the message bare), as the default
/// text format writes them, with control characters escaped.
fn escaped_fields()
-> tracing_subscriber::field::delimited::Delimited<&'static str, FieldFn<FieldFormatter>> {
    let format: FieldFormatter = |writer, field, value| {
        let text = format!("{value:?}");
        if field.name() != "message" {
            write!(writer, "{field}=")?;
        }
        write_escaped(writer, &text)
    };
    debug_fn(format).delimited(" ")
}

/// Writes `text` with control characters as Rust escapes (`\n`, `\u{1b}`).
fn write_escaped(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    for c in text.chars() {
        if c.is_control() {
            write!(out, "{}", c.escape_default())?;
        } else {
            out.write_char(c)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn client_text_cannot_forge_a_log_line_or_reach_the_terminal() {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .fmt_fields(escaped_fields())
            .finish();
        let id = "evt-1\n2026-12-02T00:00:00Z  INFO forged: all good\x1b[2J";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("ingest", event_type = %"report\r\nX");
            let _entered = span.enter();
            tracing::warn!(event_id = %id, error = ?"bad\tthing", "plugin failed: {}", "a\nb");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains('\x1b') && !text.contains('\r'), "{text:?}");
        assert!(
            text.contains(r"event_id=evt-1\n2026-12-02T00:00:00Z  INFO forged: all good\u{1b}[2J"),
            "{text}"
        );
        assert!(text.contains(r"plugin failed: a\nb"), "{text}");
        assert!(text.contains(r"event_type=report\r\nX"), "{text}");
        assert!(text.contains(r#"error="bad\tthing""#), "{text}");
    }
}
