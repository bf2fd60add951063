//! Field sets: the set of paths a field manager owns, and their `fieldsV1` encoding as
//! stored in `metadata.managedFields` (`f:spec`, `k:{"name":"app"}`, `v:"x"`, `.`).
//!
//! Which lists are maps (merged by key) and which are sets is decided by the list's field
//! name, approximating the built-in schemas: see [`list_kind`].

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    Field(String),
    /// A list-map item, by the canonical JSON of its key fields, e.g. `{"name":"app"}`.
    Key(String),
    /// A set item, by its canonical JSON value.
    Value(String),
    Index(usize),
}

pub type Path = Vec<PathElement>;

/// How a list is merged and owned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// Items are identified by these key fields.
    Map(&'static [&'static str]),
    /// Items are scalars identified by their value.
    Set,
    /// The list is replaced and owned as a whole.
    Atomic,
}

/// The list semantics of the common built-in list fields (by field name); everything else
/// is atomic. A list is only treated as a map when every item carries the key.
pub fn list_kind(field: &str, items: &[Value]) -> ListKind {
    let all_have = |k: &str| items.iter().all(|i| i.get(k).is_some());
    let candidate: Option<&'static [&'static str]> = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => Some(&["name"]),
        "volumeMounts" => Some(&["mountPath"]),
        "volumeDevices" => Some(&["devicePath"]),
        "conditions" => Some(&["type"]),
        "ports" if all_have("containerPort") => Some(&["containerPort"]),
        "ports" => Some(&["port"]),
        "finalizers" => return ListKind::Set,
        _ => None,
    };
    match candidate {
        Some(keys) if keys.iter().all(|k| all_have(k)) => ListKind::Map(keys),
        _ => ListKind::Atomic,
    }
}

/// The canonical key of a list-map item (`{"name":"app"}`), or None if a key is missing.
pub fn item_key(item: &Value, keys: &[&str]) -> Option<String> {
    let mut m = Map::new();
    for k in keys {
        m.insert((*k).to_string(), item.get(*k)?.clone());
    }
    Some(Value::Object(m).to_string())
}

fn key_matches(item: &Value, key: &str) -> bool {
    match serde_json::from_str::<Map<String, Value>>(key) {
        Ok(km) => km.iter().all(|(k, v)| item.get(k) == Some(v)),
        Err(_) => false,
    }
}

fn element_matches(item: &Value, el: &PathElement) -> bool {
    match el {
        PathElement::Key(k) => key_matches(item, k),
        PathElement::Value(s) => serde_json::from_str::<Value>(s).is_ok_and(|v| *item == v),
        _ => false,
    }
}

/// The value at `path`, if present.
pub fn get_path<'a>(mut v: &'a Value, path: &[PathElement]) -> Option<&'a Value> {
    for el in path {
        v = match el {
            PathElement::Field(f) => v.as_object()?.get(f)?,
            PathElement::Index(i) => v.as_array()?.get(*i)?,
            other => v
                .as_array()?
                .iter()
                .find(|item| element_matches(item, other))?,
        };
    }
    Some(v)
}

fn get_path_mut<'a>(mut v: &'a mut Value, path: &[PathElement]) -> Option<&'a mut Value> {
    for el in path {
        v = match el {
            PathElement::Field(f) => v.as_object_mut()?.get_mut(f)?,
            PathElement::Index(i) => v.as_array_mut()?.get_mut(*i)?,
            other => v
                .as_array_mut()?
                .iter_mut()
                .find(|item| element_matches(item, other))?,
        };
    }
    Some(v)
}

/// Removes the value at `path` (a map field, a list-map item or a set item).
pub fn remove_path(v: &mut Value, path: &[PathElement]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let Some(parent) = get_path_mut(v, parent) else {
        return;
    };
    match last {
        PathElement::Field(f) => {
            if let Some(m) = parent.as_object_mut() {
                m.remove(f);
            }
        }
        PathElement::Index(i) => {
            if let Some(a) = parent.as_array_mut().filter(|a| *i < a.len()) {
                a.remove(*i);
            }
        }
        other => {
            if let Some(a) = parent.as_array_mut() {
                a.retain(|item| !element_matches(item, other));
            }
        }
    }
}

/// Kubernetes' rendering of a path, e.g. `.spec.template.spec.containers[name="app"].image`.
pub fn path_string(path: &[PathElement]) -> String {
    let mut s = String::new();
    for el in path {
        match el {
            PathElement::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            PathElement::Key(k) => {
                let inner = serde_json::from_str::<Map<String, Value>>(k)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_else(|_| k.clone());
                s.push_str(&format!("[{inner}]"));
            }
            PathElement::Value(v) => s.push_str(&format!("[={v}]")),
            PathElement::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// A set of owned paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet(BTreeSet<Path>);

impl FieldSet {
    pub fn new() -> Self {
        FieldSet::default()
    }

    pub fn insert(&mut self, p: Path) {
        self.0.insert(p);
    }

    #[cfg(test)]
    pub fn contains(&self, p: &Path) -> bool {
        self.0.contains(p)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Path> {
        self.0.iter()
    }

    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.difference(&other.0).cloned().collect())
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.intersection(&other.0).cloned().collect())
    }

    pub fn union_with(&mut self, other: &FieldSet) {
        self.0.extend(other.0.iter().cloned());
    }

    pub fn remove_all(&mut self, other: &FieldSet) {
        self.0.retain(|p| !other.0.contains(p));
    }

    pub fn remove(&mut self, p: &Path) {
        self.0.remove(p);
    }

    /// Whether the set holds `p` or anything below it.
    pub fn owns_at_or_below(&self, p: &Path) -> bool {
        self.0.iter().any(|q| q.starts_with(p))
    }

    /// The paths an object sets: scalars, atomic lists and empty maps are leaves; list-map
    /// items are members themselves and so are their fields; set items are members.
    pub fn from_object(v: &Value) -> FieldSet {
        let mut out = FieldSet::new();
        let mut path = Vec::new();
        collect(v, &mut path, &mut out);
        out
    }

    pub fn to_fields_v1(&self) -> Value {
        #[derive(Default)]
        struct Node {
            member: bool,
            children: BTreeMap<String, Node>,
        }
        fn to_value(n: &Node) -> Value {
            let mut m = Map::new();
            if n.member && !n.children.is_empty() {
                m.insert(".".into(), Value::Object(Map::new()));
            }
            for (k, c) in &n.children {
                m.insert(k.clone(), to_value(c));
            }
            Value::Object(m)
        }
        let mut root = Node::default();
        for p in &self.0 {
            let mut node = &mut root;
            for el in p {
                node = node.children.entry(encode(el)).or_default();
            }
            node.member = true;
        }
        to_value(&root)
    }

    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        fn walk(v: &Value, path: &mut Path, out: &mut FieldSet) -> Result<(), String> {
            let m = v.as_object().ok_or("fieldsV1 nodes must be objects")?;
            for (k, child) in m {
                if k == "." {
                    out.insert(path.clone());
                    continue;
                }
                path.push(decode(k)?);
                if child.as_object().is_some_and(Map::is_empty) {
                    out.insert(path.clone());
                } else {
                    walk(child, path, out)?;
                }
                path.pop();
            }
            Ok(())
        }
        let mut out = FieldSet::new();
        walk(v, &mut Vec::new(), &mut out)?;
        Ok(out)
    }
}

impl FromIterator<Path> for FieldSet {
    fn from_iter<I: IntoIterator<Item = Path>>(iter: I) -> Self {
        FieldSet(iter.into_iter().collect())
    }
}

fn collect(v: &Value, path: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if m.is_empty() => {
            if !path.is_empty() {
                out.insert(path.clone());
            }
        }
        Value::Object(m) => {
            for (k, child) in m {
                path.push(PathElement::Field(k.clone()));
                collect(child, path, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            let field = match path.last() {
                Some(PathElement::Field(f)) => f.as_str(),
                _ => "",
            };
            match list_kind(field, items) {
                ListKind::Map(keys) => {
                    for item in items {
                        if let Some(k) = item_key(item, keys) {
                            path.push(PathElement::Key(k));
                            out.insert(path.clone());
                            collect(item, path, out);
                            path.pop();
                        }
                    }
                }
                ListKind::Set => {
                    for item in items {
                        path.push(PathElement::Value(item.to_string()));
                        out.insert(path.clone());
                        path.pop();
                    }
                }
                ListKind::Atomic => out.insert(path.clone()),
            }
        }
        _ => out.insert(path.clone()),
    }
}

fn encode(el: &PathElement) -> String {
    match el {
        PathElement::Field(f) => format!("f:{f}"),
        PathElement::Key(k) => format!("k:{k}"),
        PathElement::Value(v) => format!("v:{v}"),
        PathElement::Index(i) => format!("i:{i}"),
    }
}

fn decode(s: &str) -> Result<PathElement, String> {
    let (prefix, rest) = s
        .split_once(':')
        .ok_or_else(|| format!("invalid fieldsV1 key {s:?}"))?;
    Ok(match prefix {
        "f" => PathElement::Field(rest.into()),
        "k" => PathElement::Key(
            serde_json::from_str::<Value>(rest)
                .map_err(|e| format!("invalid key {s:?}: {e}"))?
                .to_string(),
        ),
        "v" => PathElement::Value(rest.into()),
        "i" => PathElement::Index(rest.parse().map_err(|_| format!("invalid index {s:?}"))?),
        _ => return Err(format!("invalid fieldsV1 key {s:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(s: &str) -> PathElement {
        PathElement::Field(s.into())
    }

    fn deployment() -> Value {
        json!({
            "metadata": {"labels": {"app": "web"}, "finalizers": ["a"]},
            "spec": {
                "replicas": 2,
                "template": {"spec": {"containers": [
                    {"name": "app", "image": "nginx", "ports": [{"containerPort": 80}]}
                ]}},
                "tolerations": [{"key": "x"}]
            }
        })
    }

    #[test]
    fn object_paths_use_keys_sets_and_atomic_lists() {
        let fs = FieldSet::from_object(&deployment());
        let c = PathElement::Key(r#"{"name":"app"}"#.into());
        let base = vec![f("spec"), f("template"), f("spec"), f("containers")];
        assert!(fs.contains(&vec![f("spec"), f("replicas")]));
        assert!(fs.contains(&[base.clone(), vec![c.clone()]].concat()));
        assert!(fs.contains(&[base.clone(), vec![c.clone(), f("image")]].concat()));
        assert!(
            fs.contains(
                &[
                    base,
                    vec![
                        c,
                        f("ports"),
                        PathElement::Key(r#"{"containerPort":80}"#.into()),
                        f("containerPort")
                    ]
                ]
                .concat()
            )
        );
        assert!(fs.contains(&vec![
            f("metadata"),
            f("finalizers"),
            PathElement::Value("\"a\"".into())
        ]));
        assert!(fs.contains(&vec![f("spec"), f("tolerations")]));
        assert!(!fs.contains(&vec![f("spec")]));
    }

    #[test]
    fn fields_v1_round_trip_and_shape() {
        let fs = FieldSet::from_object(&deployment());
        let v1 = fs.to_fields_v1();
        assert_eq!(v1["f:spec"]["f:replicas"], json!({}));
        let item = &v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"];
        assert_eq!(item["."], json!({}));
        assert_eq!(item["f:image"], json!({}));
        assert_eq!(FieldSet::from_fields_v1(&v1).unwrap(), fs);
    }

    #[test]
    fn get_and_remove_through_list_map_keys() {
        let mut d = deployment();
        let path = vec![
            f("spec"),
            f("template"),
            f("spec"),
            f("containers"),
            PathElement::Key(r#"{"name":"app"}"#.into()),
            f("image"),
        ];
        assert_eq!(get_path(&d, &path), Some(&json!("nginx")));
        assert_eq!(
            path_string(&path),
            ".spec.template.spec.containers[name=\"app\"].image"
        );
        remove_path(&mut d, &path[..5]);
        assert_eq!(d["spec"]["template"]["spec"]["containers"], json!([]));
        remove_path(
            &mut d,
            &[
                f("metadata"),
                f("finalizers"),
                PathElement::Value("\"a\"".into()),
            ],
        );
        assert_eq!(d["metadata"]["finalizers"], json!([]));
    }

    #[test]
    fn service_ports_keyed_by_port() {
        assert_eq!(
            list_kind("ports", &[json!({"port": 80})]),
            ListKind::Map(&["port"])
        );
        assert_eq!(list_kind("args", &[json!("a")]), ListKind::Atomic);
        assert_eq!(
            list_kind("containers", &[json!({"image": "x"})]),
            ListKind::Atomic
        );
    }
}
