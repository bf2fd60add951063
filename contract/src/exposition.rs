//! How both binaries answer `GET /metrics`: OpenMetrics 1.0 to a scraper that asks for it
//! in `Accept` (Prometheus does), the Prometheus text format 0.0.4 to any other (older
//! scrapers, `curl`, agents that only parse the text format).
//!
//! The metrics are encoded once, as OpenMetrics; [`text_format`] turns that into 0.0.4.

/// The `Content-Type` of OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The `Content-Type` of the Prometheus text format.
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The body and `Content-Type` answering a scrape whose `Accept` header is `accept`, given
/// the metrics as OpenMetrics text.
pub fn negotiate(accept: Option<&str>, openmetrics: String) -> (&'static str, String) {
    if wants_openmetrics(accept.unwrap_or("")) {
        (OPENMETRICS, openmetrics)
    } else {
        (TEXT, text_format(&openmetrics))
    }
}

/// Whether `accept` names OpenMetrics with a quality at least that of plain text. A
/// wildcard alone (`*/*`) gets the text format, as Prometheus's own client libraries do.
pub fn wants_openmetrics(accept: &str) -> bool {
    let (mut openmetrics, mut text) = (0.0_f32, 0.0_f32);
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    openmetrics > 0.0 && openmetrics >= text
}

/// OpenMetrics text as the Prometheus text format 0.0.4: a counter's `HELP` and `TYPE`
/// name its `_total` sample, `UNIT` lines and the `# EOF` marker go, and types 0.0.4 lacks
/// become untyped. Samples are the same in both formats.
pub fn text_format(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // Families are written HELP, TYPE, then samples: a counter is only known at its TYPE,
    // so its HELP waits for it.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, help.take(), "");
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (suffix, kind) = match kind {
                "counter" => ("_total", "counter"),
                "gauge" | "histogram" | "summary" => ("", kind),
                _ => ("", "untyped"),
            };
            match help.take() {
                Some((n, text)) if n == name => flush_help(&mut out, Some((n, text)), suffix),
                other => flush_help(&mut out, other, ""),
            }
            out.push_str(&format!("# TYPE {name}{suffix} {kind}\n"));
            continue;
        }
        flush_help(&mut out, help.take(), "");
        out.push_str(line);
        out.push('\n');
    }
    flush_help(&mut out, help, "");
    out
}

fn flush_help(out: &mut String, help: Option<(&str, &str)>, suffix: &str) {
    if let Some((name, text)) = help {
        // OpenMetrics may escape a double quote in HELP; 0.0.4 has no such escape.
        let text = text.replace("\\\"", "\"");
        out.push_str(&format!("# HELP {name}{suffix} {text}\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENMETRICS_TEXT: &str = "\
# HELP app_requests Requests answered.
# TYPE app_requests counter
app_requests_total{method=\"GET\",status=\"200\"} 3
# HELP app_open Streams \\\"open\\\" now.
# TYPE app_open gauge
app_open 2
# HELP app_latency_seconds Time to answer.
# TYPE app_latency_seconds histogram
# UNIT app_latency_seconds seconds
app_latency_seconds_sum 0.5
app_latency_seconds_count 1
app_latency_seconds_bucket{le=\"+Inf\"} 1
# HELP app_build Build.
# TYPE app_build info
app_build_info{version=\"1\"} 1
# EOF
";

    #[test]
    fn counters_are_named_by_their_sample_and_the_rest_is_dropped() {
        assert_eq!(
            text_format(OPENMETRICS_TEXT),
            "\
# HELP app_requests_total Requests answered.
# TYPE app_requests_total counter
app_requests_total{method=\"GET\",status=\"200\"} 3
# HELP app_open Streams \"open\" now.
# TYPE app_open gauge
app_open 2
# HELP app_latency_seconds Time to answer.
# TYPE app_latency_seconds histogram
app_latency_seconds_sum 0.5
app_latency_seconds_count 1
app_latency_seconds_bucket{le=\"+Inf\"} 1
# HELP app_build Build.
# TYPE app_build untyped
app_build_info{version=\"1\"} 1
"
        );
    }

    #[test]
    fn openmetrics_only_when_asked_for_at_least_as_much_as_text() {
        // What Prometheus 2.x sends.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(prometheus));
        assert!(wants_openmetrics("application/openmetrics-text"));
        assert!(wants_openmetrics(
            "Application/OpenMetrics-Text; version=1.0.0"
        ));
        for text in [
            "",
            "*/*",
            "text/plain;version=0.0.4",
            "text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5",
            "application/openmetrics-text;q=0",
            "application/json",
        ] {
            assert!(!wants_openmetrics(text), "{text:?}");
        }
        let (kind, body) = negotiate(None, OPENMETRICS_TEXT.into());
        assert_eq!(kind, TEXT);
        assert!(!body.contains("# EOF"));
        let (kind, body) = negotiate(Some(prometheus), OPENMETRICS_TEXT.into());
        assert_eq!((kind, body.as_str()), (OPENMETRICS, OPENMETRICS_TEXT));
    }
}
