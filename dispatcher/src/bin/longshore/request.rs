//! The body of `POST /v1/operations` for a `submit`: the files go as `manifests` for the
//! actions that take whole objects, or as `targets` (the objects they name) for the ones
//! that act on existing objects, as `kubectl scale -f` and `kubectl rollout restart -f` do.

use std::path::PathBuf;

use longshore_contract::spec::{Action, ObjectRef};
use serde_json::{Value, json};

use crate::client::Failure;

/// What `submit` was given besides the cluster.
pub struct Submit {
    pub action: Action,
    pub files: Vec<PathBuf>,
    pub replicas: Option<i32>,
    pub to_revision: Option<i64>,
    pub dry_run: bool,
}

/// The JSON body for `submit`. The dispatcher checks the combination (a `scale` without
/// `--replicas`, `--to-revision` on another action) and names the field it refuses.
pub fn body(cluster: &str, submit: &Submit) -> Result<Value, Failure> {
    let files = read(&submit.files)?;
    let mut body = json!({
        "cluster": cluster,
        "action": submit.action.as_str(),
        "options": {"dryRun": submit.dry_run},
    });
    if submit.action.takes_targets() {
        let mut targets = Vec::new();
        for (name, text) in &files {
            targets.extend(targets_in(name, text)?);
        }
        body["targets"] = Value::Array(targets);
    } else {
        let texts: Vec<&str> = files.iter().map(|(_, text)| text.as_str()).collect();
        // One multi-document YAML string (JSON is YAML too); the dispatcher splits it.
        body["manifests"] = Value::String(texts.join("\n---\n"));
    }
    if let Some(replicas) = submit.replicas {
        body["replicas"] = json!(replicas);
    }
    if let Some(revision) = submit.to_revision {
        body["toRevision"] = json!(revision);
    }
    Ok(body)
}

/// Each file's name and contents; `-` reads stdin.
fn read(files: &[PathBuf]) -> Result<Vec<(String, String)>, Failure> {
    files
        .iter()
        .map(|file| {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(file)
            }
            .map_err(|e| Failure::Usage(format!("reading {}: {e}", file.display())))?;
            Ok((file.display().to_string(), text))
        })
        .collect()
}

/// The objects a file's documents name (`kind: List` items included), as `targets`.
fn targets_in(file: &str, text: &str) -> Result<Vec<Value>, Failure> {
    let docs = serde_saphyr::from_multiple::<Value>(text).map_err(|e| {
        // The first line only: the parser appends an excerpt of the input, which may
        // hold data that does not belong on a pipeline's log.
        let e = e.to_string();
        Failure::Usage(format!(
            "{file}: invalid YAML: {}",
            e.lines().next().unwrap_or_default()
        ))
    })?;
    let mut out = Vec::new();
    for (i, doc) in docs.iter().filter(|d| !d.is_null()).enumerate() {
        let objects = match doc.get("items").and_then(Value::as_array) {
            Some(items) if doc["kind"] == "List" => items.iter().collect(),
            _ => vec![doc],
        };
        for object in objects {
            let target = ObjectRef::of_manifest(object).ok_or_else(|| {
                Failure::Usage(format!(
                    "{file}: document {}: needs apiVersion, kind and metadata.name to name an object",
                    i + 1
                ))
            })?;
            out.push(serde_json::to_value(target).expect("an ObjectRef serialises"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_become_references() {
        let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n  namespace: web\nspec:\n  replicas: 1\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: apps/v1\n  kind: StatefulSet\n  metadata: {name: db}\n";
        let Ok(targets) = targets_in("app.yaml", yaml) else {
            panic!("two objects named")
        };
        assert_eq!(
            targets,
            [
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "web", "name": "api"}),
                json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db"}),
            ]
        );
    }

    #[test]
    fn a_document_naming_no_object_is_a_usage_error() {
        match targets_in("x.yaml", "apiVersion: apps/v1\nkind: Deployment\n") {
            Err(Failure::Usage(m)) => assert!(m.contains("x.yaml: document 1"), "{m}"),
            _ => panic!("expected a usage error"),
        }
    }
}
