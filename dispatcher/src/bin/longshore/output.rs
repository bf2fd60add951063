//! What the CLI prints: kubectl-like lines for people, JSON for machines; and exit codes.

use std::process::ExitCode;

use serde_json::Value;

use crate::{Format, client::Failure};

pub fn accepted(format: Format, body: &Value) {
    match format {
        Format::Json => println!("{body}"),
        Format::Human => println!(
            "operation/{} accepted ({}){}",
            body["id"].as_str().unwrap_or_default(),
            body["state"].as_str().unwrap_or_default(),
            if body["state"] == "queued" {
                ""
            } else {
                ", already known"
            }
        ),
    }
}

/// Prints a record; the exit code follows its state.
pub fn record(format: Format, record: &Value) -> ExitCode {
    let state = record["state"].as_str().unwrap_or_default();
    match format {
        Format::Json => println!("{record}"),
        Format::Human => {
            for r in record["results"].as_array().into_iter().flatten() {
                let kind = r["kind"].as_str().unwrap_or_default().to_ascii_lowercase();
                let outcome = r["outcome"].as_str().unwrap_or_default().replace('_', " ");
                println!(
                    "{kind}/{} {outcome}",
                    r["name"].as_str().unwrap_or_default()
                );
            }
            println!(
                "operation/{} {state} (cluster {}, action {}, attempts {})",
                record["id"].as_str().unwrap_or_default(),
                record["cluster"].as_str().unwrap_or_default(),
                record["action"].as_str().unwrap_or_default(),
                record["attempts"],
            );
            if let Some(msg) = record["error"]["message"].as_str() {
                println!("error: {msg}");
            }
        }
    }
    match state {
        "succeeded" => ExitCode::SUCCESS,
        // Still going: `status` reports, it does not judge.
        "queued" | "running" => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

/// The string at `key` of a JSON object, or `""`.
pub fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

/// A table as kubectl prints one: a header, then a row each, columns three spaces apart
/// and as wide as their widest cell, no trailing spaces.
pub fn columns(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| h.to_string()).collect())
        .chain(rows)
        .collect();
    let mut widths = vec![0; header.len()];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub fn failure(failure: &Failure) -> ExitCode {
    match failure {
        Failure::Usage(m) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
        Failure::Request(m) => {
            eprintln!("error: {m}");
            ExitCode::from(1)
        }
        Failure::Timeout { record, after } => {
            let state = record
                .as_ref()
                .and_then(|r| r["state"].as_str())
                .unwrap_or("unknown");
            eprintln!("error: timed out after {after:?}; the operation is still {state}");
            ExitCode::from(2)
        }
    }
}
