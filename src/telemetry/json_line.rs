//! JSON log lines with the request's fields at the top level: `{"timestamp":…,"level":…,
//! "message":…,"target":…,"request_id":…,"trace_id":…}` instead of under `"span"`, so a log
//! query for one request (`request_id = "…"`) or one trace needs no knowledge of span nesting.
//!
//! tracing-subscriber's JSON format writes the event; this appends the fields of the spans
//! the event is inside, root first, as the JSON layer already keeps them formatted (one
//! `{…}` object per span), so nothing is formatted twice.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Wraps a JSON event format (built without its current-span object).
pub struct SpanFieldsOnTop<F>(pub F);

impl<S, F> FormatEvent<S, JsonFields> for SpanFieldsOnTop<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    F: FormatEvent<S, JsonFields>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::with_capacity(256);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        // The event is one object and a newline: keep all of it but its closing brace.
        let Some(open) = line.trim_end().strip_suffix('}') else {
            return writer.write_str(&line);
        };
        writer.write_str(open)?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<JsonFields>>() else {
                    continue;
                };
                if let Some(inner) = members(&fields.fields) {
                    writer.write_char(',')?;
                    writer.write_str(inner)?;
                }
            }
        }
        writer.write_str("}\n")
    }
}

/// The members of a JSON object's text (`"a":1,"b":2` of `{"a":1,"b":2}`); None when empty.
fn members(object: &str) -> Option<&str> {
    let inner = object.trim().strip_prefix('{')?.strip_suffix('}')?.trim();
    (!inner.is_empty()).then_some(inner)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn logged(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let lines = Lines::default();
        let format = tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false);
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(JsonFields::new())
            .event_format(SpanFieldsOnTop(format))
            .with_writer(lines.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn the_spans_fields_are_top_level_members_of_each_line() {
        let lines = logged(|| {
            tracing::info!(outside = 1, "no span");
            let request = tracing::info_span!(
                "request",
                request_id = "r-1",
                trace_id = tracing::field::Empty
            );
            request.record("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736");
            let _in_request = request.enter();
            let inner = tracing::info_span!("inner", channel = "apns");
            let _in_inner = inner.enter();
            tracing::warn!(reason = "BadDeviceToken", "delivery failed");
        });
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["message"], "no span");
        assert_eq!(lines[0]["outside"], 1);
        assert!(lines[0].get("request_id").is_none());

        let line = &lines[1];
        assert_eq!(line["message"], "delivery failed");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["reason"], "BadDeviceToken");
        assert_eq!(line["request_id"], "r-1");
        assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(line["channel"], "apns");
        assert!(line.get("span").is_none(), "{line}");
    }

    #[test]
    fn members_of_an_object() {
        assert_eq!(members(r#"{"a":1,"b":"x"}"#), Some(r#""a":1,"b":"x""#));
        assert_eq!(members("{}"), None);
        assert_eq!(members("not json"), None);
    }
}
