//! `application/vnd.kubernetes.protobuf`, as kubectl's imperative commands (`create
//! namespace`, `create deployment`, …) and every Go typed client send built-in kinds: the
//! `k8s\0` magic, then a `runtime.Unknown` whose `raw` is the object in the kind's protobuf
//! message. Request bodies are decoded to the JSON the rest of kube-sim works on; answers
//! are encoded back when the client prefers protobuf ([`preferred`]).
//!
//! The message definitions are Kubernetes' own `generated.proto` files (in `proto/`, their
//! comments removed), read once at start by the small parser below: they are proto2, flat
//! (no nested messages, enums or oneofs), with `optional`, `repeated` and `map<,>` fields of
//! `string`, `int32`, `int64`, `bool`, `bytes` and other messages. The few types whose JSON
//! is not their message's shape (`Time`, `MicroTime`, `Duration`, `Quantity`,
//! `IntOrString`, `RawExtension`, `FieldsV1`) are converted as the real server's codec does.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::{Map, Value, json};

/// The media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

const FILES: &[&str] = &[
    include_str!("../proto/apimachinery_pkg_api_resource.proto"),
    include_str!("../proto/apimachinery_pkg_apis_meta_v1.proto"),
    include_str!("../proto/apimachinery_pkg_runtime.proto"),
    include_str!("../proto/apimachinery_pkg_runtime_schema.proto"),
    include_str!("../proto/apimachinery_pkg_util_intstr.proto"),
    include_str!("../proto/api_core_v1.proto"),
    include_str!("../proto/api_apps_v1.proto"),
    include_str!("../proto/api_batch_v1.proto"),
    include_str!("../proto/api_rbac_v1.proto"),
    include_str!("../proto/api_networking_v1.proto"),
    include_str!("../proto/api_policy_v1.proto"),
    include_str!("../proto/api_autoscaling_v2.proto"),
    include_str!("../proto/api_scheduling_v1alpha3.proto"),
];

const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";

#[derive(Debug, Clone, PartialEq)]
enum Type {
    Str,
    Int32,
    Int64,
    Bool,
    Bytes,
    Message(String),
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    number: u32,
    ty: Type,
    repeated: bool,
    /// A `map<string, V>`: `ty` is V.
    map: bool,
}

#[derive(Debug, Default)]
struct Schema {
    /// Message full name → its fields by number.
    messages: HashMap<String, HashMap<u32, Field>>,
}

static SCHEMA: LazyLock<Schema> = LazyLock::new(|| parse(FILES));

fn scalar(name: &str, package: &str) -> Type {
    match name {
        "string" => Type::Str,
        "int32" => Type::Int32,
        "int64" => Type::Int64,
        "bool" => Type::Bool,
        "bytes" => Type::Bytes,
        other => match other.strip_prefix('.') {
            Some(full) => Type::Message(full.to_owned()),
            None => Type::Message(format!("{package}.{other}")),
        },
    }
}

fn parse(files: &[&str]) -> Schema {
    let mut schema = Schema::default();
    for file in files {
        let mut package = String::new();
        let mut current: Option<(String, HashMap<u32, Field>)> = None;
        for line in file.lines().map(str::trim) {
            if let Some(p) = line.strip_prefix("package ") {
                package = p.trim_end_matches(';').to_owned();
            } else if let Some(name) = line.strip_prefix("message ") {
                let name = name.trim_end_matches('{').trim();
                current = Some((format!("{package}.{name}"), HashMap::new()));
            } else if line == "}" {
                if let Some((name, fields)) = current.take() {
                    schema.messages.insert(name, fields);
                }
            } else if let Some((_, fields)) = current.as_mut()
                && let Some(field) = parse_field(line, &package)
            {
                fields.insert(field.number, field);
            }
        }
    }
    schema
}

/// `optional T name = N;`, `repeated T name = N;` or `map<K, V> name = N;`.
fn parse_field(line: &str, package: &str) -> Option<Field> {
    let line = line.strip_suffix(';')?;
    let (decl, number) = line.rsplit_once('=')?;
    let number: u32 = number.trim().parse().ok()?;
    let decl = decl.trim();
    if let Some(rest) = decl.strip_prefix("map<") {
        let (types, name) = rest.split_once('>')?;
        let (_, value) = types.split_once(',')?;
        return Some(Field {
            name: name.trim().to_owned(),
            number,
            ty: scalar(value.trim(), package),
            repeated: false,
            map: true,
        });
    }
    let mut words = decl.split_whitespace();
    let label = words.next()?;
    let ty = words.next()?;
    let name = words.next()?;
    Some(Field {
        name: name.to_owned(),
        number,
        ty: scalar(ty, package),
        repeated: label == "repeated",
        map: false,
    })
}

/// The protobuf message of a kind (`apps/v1`, `Deployment`), if kube-sim has it.
fn message_of(api_version: &str, kind: &str) -> Option<String> {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let name = if matches!(kind, "DeleteOptions" | "Status" | "List") {
        format!("{META}.{kind}")
    } else {
        let group = match group {
            "" => "core",
            g => g.split('.').next().unwrap_or(g),
        };
        format!("k8s.io.api.{group}.{version}.{kind}")
    };
    SCHEMA.messages.contains_key(&name).then_some(name)
}

/// Whether a `Content-Type` is protobuf.
pub fn is_protobuf(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(MEDIA_TYPE))
}

// ---- the wire format ----

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.bytes.get(self.at).ok_or("truncated varint")?;
            self.at += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or("truncated field")?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }
}

/// Decodes `bytes` as the message `name`, to its JSON form.
fn decode(bytes: &[u8], name: &str, depth: usize) -> Result<Value, String> {
    if depth > 64 {
        return Err("objects nest too deep".into());
    }
    let fields = SCHEMA.messages.get(name);
    let mut out = Map::new();
    let mut r = Reader { bytes, at: 0 };
    while !r.done() {
        let key = r.varint()?;
        let (number, wire) = ((key >> 3) as u32, key & 7);
        let raw: Raw = match wire {
            0 => Raw::Varint(r.varint()?),
            1 => Raw::Bytes(r.take(8)?),
            2 => {
                let n = usize::try_from(r.varint()?).map_err(|_| "length too large")?;
                Raw::Bytes(r.take(n)?)
            }
            5 => Raw::Bytes(r.take(4)?),
            other => return Err(format!("unsupported wire type {other}")),
        };
        let Some(field) = fields.and_then(|f| f.get(&number)) else {
            // A field this definition does not know (a newer client): skipped, as a real
            // server of an older version would.
            continue;
        };
        if field.map {
            let Raw::Bytes(entry) = raw else {
                return Err(format!(
                    "{}: a map entry must be length-delimited",
                    field.name
                ));
            };
            let (key, value) = map_entry(entry, &field.ty, depth)?;
            let map = out
                .entry(field.name.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = map {
                m.insert(key, value);
            }
            continue;
        }
        let values = match (&field.ty, raw) {
            // A packed repeated number.
            (Type::Int32 | Type::Int64 | Type::Bool, Raw::Bytes(b)) if field.repeated => {
                let mut packed = Reader { bytes: b, at: 0 };
                let mut values = Vec::new();
                while !packed.done() {
                    values.push(scalar_value(
                        &field.ty,
                        Raw::Varint(packed.varint()?),
                        depth,
                    )?);
                }
                values
            }
            (ty, raw) => vec![scalar_value(ty, raw, depth)?],
        };
        if field.repeated {
            let list = out
                .entry(field.name.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(a) = list {
                a.extend(values);
            }
        } else if let Some(v) = values.into_iter().last() {
            // Go's encoder writes every non-pointer field, set or not; its JSON leaves out
            // the empty ones (`omitempty`), and so does this: an empty string, a zero time.
            if !(v.is_null() || v == "") {
                out.insert(field.name.clone(), v);
            }
        }
    }
    Ok(special(name, out))
}

enum Raw<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn scalar_value(ty: &Type, raw: Raw<'_>, depth: usize) -> Result<Value, String> {
    Ok(match (ty, raw) {
        (Type::Int32, Raw::Varint(v)) => json!(v as i32),
        (Type::Int64, Raw::Varint(v)) => json!(v as i64),
        (Type::Bool, Raw::Varint(v)) => json!(v != 0),
        (Type::Str, Raw::Bytes(b)) => {
            json!(std::str::from_utf8(b).map_err(|_| "a string is not UTF-8")?)
        }
        (Type::Bytes, Raw::Bytes(b)) => json!(base64(b)),
        (Type::Message(name), Raw::Bytes(b)) => decode(b, name, depth + 1)?,
        (ty, _) => return Err(format!("a {ty:?} field has the wrong wire type")),
    })
}

fn map_entry(bytes: &[u8], value_ty: &Type, depth: usize) -> Result<(String, Value), String> {
    let mut r = Reader { bytes, at: 0 };
    let (mut key, mut value) = (String::new(), None);
    while !r.done() {
        let tag = r.varint()?;
        let raw = match tag & 7 {
            0 => Raw::Varint(r.varint()?),
            2 => {
                let n = usize::try_from(r.varint()?).map_err(|_| "length too large")?;
                Raw::Bytes(r.take(n)?)
            }
            other => return Err(format!("unsupported wire type {other} in a map entry")),
        };
        match (tag >> 3, raw) {
            (1, Raw::Bytes(b)) => {
                key = std::str::from_utf8(b)
                    .map_err(|_| "a map key is not UTF-8")?
                    .to_owned();
            }
            (2, raw) => value = Some(scalar_value(value_ty, raw, depth)?),
            _ => {}
        }
    }
    let value = value.unwrap_or_else(|| match value_ty {
        Type::Str | Type::Bytes => json!(""),
        Type::Message(name) => special(name, Map::new()),
        _ => json!(0),
    });
    Ok((key, value))
}

/// The JSON of the types whose JSON is not their message's shape.
fn special(name: &str, mut m: Map<String, Value>) -> Value {
    let short = name.rsplit('.').next().unwrap_or(name);
    let package = name.rsplit_once('.').map_or("", |(p, _)| p);
    match (package, short) {
        (META, "Time") => rfc3339(&m, false),
        (META, "MicroTime") => rfc3339(&m, true),
        (META, "Duration") => json!(go_duration(
            m.get("duration").and_then(Value::as_i64).unwrap_or(0)
        )),
        (META, "FieldsV1") => raw_json(m.get("Raw")),
        (META, "Verbs") => m.remove("items").unwrap_or_else(|| json!([])),
        ("k8s.io.apimachinery.pkg.runtime", "RawExtension") => raw_json(m.get("raw")),
        ("k8s.io.apimachinery.pkg.api.resource", "Quantity" | "QuantityValue") => {
            m.remove("string").unwrap_or_else(|| json!("0"))
        }
        ("k8s.io.apimachinery.pkg.util.intstr", "IntOrString") => {
            if m.get("type").and_then(Value::as_i64) == Some(1) {
                m.remove("strVal").unwrap_or_else(|| json!(""))
            } else {
                m.remove("intVal").unwrap_or_else(|| json!(0))
            }
        }
        _ => Value::Object(m),
    }
}

/// A time as RFC 3339, or null for the zero time (Go's JSON for an unset `metav1.Time`).
fn rfc3339(m: &Map<String, Value>, micro: bool) -> Value {
    let seconds = m.get("seconds").and_then(Value::as_i64).unwrap_or(0);
    let nanos = m.get("nanos").and_then(Value::as_i64).unwrap_or(0);
    if seconds == 0 && nanos == 0 {
        return Value::Null;
    }
    let t = jiff::Timestamp::new(seconds, if micro { nanos as i32 } else { 0 })
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let shown = if micro {
        t.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
    } else {
        t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    };
    json!(shown)
}

/// Go's `time.Duration.String()`.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let total = nanos.unsigned_abs();
    let sign = if nanos < 0 { "-" } else { "" };
    let (h, m) = (total / 3_600_000_000_000, (total / 60_000_000_000) % 60);
    let s = (total % 60_000_000_000) as f64 / 1e9;
    let seconds = format!("{s}").trim_end_matches(".0").to_owned();
    match (h, m) {
        (0, 0) => format!("{sign}{seconds}s"),
        (0, m) => format!("{sign}{m}m{seconds}s"),
        (h, m) => format!("{sign}{h}h{m}m{seconds}s"),
    }
}

fn raw_json(raw: Option<&Value>) -> Value {
    raw.and_then(Value::as_str)
        .and_then(unbase64)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unbase64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = B64.iter().position(|x| *x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// A protobuf request body as the JSON object it stands for (apiVersion and kind from its
/// envelope), or why it cannot be read.
pub fn to_json(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("the body does not start with the protobuf envelope's magic number")?;
    let unknown = decode(rest, "k8s.io.apimachinery.pkg.runtime.Unknown", 0)?;
    let api_version = unknown
        .pointer("/typeMeta/apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = unknown
        .pointer("/typeMeta/kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let raw = unknown
        .get("raw")
        .and_then(Value::as_str)
        .and_then(unbase64)
        .unwrap_or_default();
    let message = message_of(api_version, kind)
        .ok_or_else(|| format!("no protobuf encoding is known for {api_version} {kind}"))?;
    let mut object = decode(&raw, &message, 0)?;
    if let Value::Object(m) = &mut object {
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(kind));
    }
    Ok(object)
}

// ---- encoding answers ----

/// Whether `accept` puts protobuf before JSON (as client-go's typed clients do:
/// `application/vnd.kubernetes.protobuf, */*`).
pub fn preferred(accept: &str) -> bool {
    let first = accept.split(',').next().unwrap_or_default();
    is_protobuf(first)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn tag(out: &mut Vec<u8>, number: u32, wire: u64) {
    varint(out, (u64::from(number) << 3) | wire);
}

fn bytes_field(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    tag(out, number, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// `value` (JSON) encoded as the message `name`; fields the message lacks are left out.
fn encode(value: &Value, name: &str, depth: usize) -> Result<Vec<u8>, String> {
    if depth > 64 {
        return Err("objects nest too deep".into());
    }
    let mut out = Vec::new();
    if let Some(special) = encode_special(value, name)? {
        return Ok(special);
    }
    let Some(fields) = SCHEMA.messages.get(name) else {
        return Ok(out);
    };
    let Value::Object(map) = value else {
        return Err(format!("{name}: expected an object"));
    };
    let mut numbered: Vec<&Field> = fields.values().collect();
    numbered.sort_by_key(|f| f.number);
    for field in numbered {
        let Some(v) = map.get(&field.name).filter(|v| !v.is_null()) else {
            continue;
        };
        if field.map {
            for (k, item) in v.as_object().into_iter().flatten() {
                let mut entry = Vec::new();
                bytes_field(&mut entry, 1, k.as_bytes());
                encode_one(&mut entry, 2, &field.ty, item, depth)?;
                bytes_field(&mut out, field.number, &entry);
            }
        } else if field.repeated {
            for item in v.as_array().into_iter().flatten() {
                encode_one(&mut out, field.number, &field.ty, item, depth)?;
            }
        } else {
            encode_one(&mut out, field.number, &field.ty, v, depth)?;
        }
    }
    Ok(out)
}

fn encode_one(
    out: &mut Vec<u8>,
    number: u32,
    ty: &Type,
    v: &Value,
    depth: usize,
) -> Result<(), String> {
    match ty {
        Type::Str => bytes_field(out, number, v.as_str().unwrap_or_default().as_bytes()),
        Type::Bytes => {
            let b = v.as_str().and_then(unbase64).unwrap_or_default();
            bytes_field(out, number, &b);
        }
        Type::Int32 | Type::Int64 => {
            tag(out, number, 0);
            varint(out, v.as_i64().unwrap_or(0) as u64);
        }
        Type::Bool => {
            tag(out, number, 0);
            varint(out, u64::from(v.as_bool().unwrap_or(false)));
        }
        Type::Message(name) => {
            let inner = encode(v, name, depth + 1)?;
            bytes_field(out, number, &inner);
        }
    }
    Ok(())
}

fn encode_special(value: &Value, name: &str) -> Result<Option<Vec<u8>>, String> {
    let short = name.rsplit('.').next().unwrap_or(name);
    let package = name.rsplit_once('.').map_or("", |(p, _)| p);
    let mut out = Vec::new();
    match (package, short) {
        (META, "Time" | "MicroTime") => {
            let t: jiff::Timestamp = value
                .as_str()
                .unwrap_or_default()
                .parse()
                .map_err(|e| format!("{name}: {e}"))?;
            tag(&mut out, 1, 0);
            varint(&mut out, t.as_second() as u64);
            if short == "MicroTime" && t.subsec_nanosecond() != 0 {
                tag(&mut out, 2, 0);
                varint(&mut out, t.subsec_nanosecond() as u64);
            }
        }
        (META, "FieldsV1") | ("k8s.io.apimachinery.pkg.runtime", "RawExtension") => {
            let raw = serde_json::to_vec(value).map_err(|e| e.to_string())?;
            bytes_field(&mut out, 1, &raw);
        }
        (META, "Verbs") => {
            for item in value.as_array().into_iter().flatten() {
                bytes_field(&mut out, 1, item.as_str().unwrap_or_default().as_bytes());
            }
        }
        ("k8s.io.apimachinery.pkg.api.resource", "Quantity" | "QuantityValue") => {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            bytes_field(&mut out, 1, text.as_bytes());
        }
        ("k8s.io.apimachinery.pkg.util.intstr", "IntOrString") => match value {
            Value::String(s) => {
                tag(&mut out, 1, 0);
                varint(&mut out, 1);
                bytes_field(&mut out, 3, s.as_bytes());
            }
            other => {
                tag(&mut out, 1, 0);
                varint(&mut out, 0);
                tag(&mut out, 2, 0);
                varint(&mut out, other.as_i64().unwrap_or(0) as u64);
            }
        },
        _ => return Ok(None),
    }
    Ok(Some(out))
}

/// `object` (JSON, with apiVersion and kind) in the protobuf envelope, if its kind has a
/// protobuf encoding; a list (`DeploymentList`) is encoded item by item.
pub fn from_json(object: &Value) -> Option<Vec<u8>> {
    let api_version = object.get("apiVersion")?.as_str()?;
    let kind = object.get("kind")?.as_str()?;
    let message = message_of(api_version, kind)?;
    let raw = encode(object, &message, 0).ok()?;
    let mut type_meta = Vec::new();
    bytes_field(&mut type_meta, 1, api_version.as_bytes());
    bytes_field(&mut type_meta, 2, kind.as_bytes());
    let mut unknown = Vec::new();
    bytes_field(&mut unknown, 1, &type_meta);
    bytes_field(&mut unknown, 2, &raw);
    let mut out = MAGIC.to_vec();
    out.extend(unknown);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_definitions_parse_with_their_fields() {
        let ns = &SCHEMA.messages["k8s.io.api.core.v1.Namespace"];
        assert_eq!(ns[&1].name, "metadata");
        assert_eq!(ns[&1].ty, Type::Message(format!("{META}.ObjectMeta")));
        let meta = &SCHEMA.messages[&format!("{META}.ObjectMeta")];
        assert!(meta[&11].map && meta[&11].name == "labels");
        let container = &SCHEMA.messages["k8s.io.api.core.v1.Container"];
        assert!(container.values().any(|f| f.name == "image"));
        assert!(SCHEMA.messages.len() > 300, "{}", SCHEMA.messages.len());
    }

    #[test]
    fn a_deployment_goes_through_protobuf_and_back_unchanged() {
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"},
                "creationTimestamp": "2026-12-02T10:00:00Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}}}],
                        "terminationGracePeriodSeconds": 30}}}});
        let encoded = from_json(&deployment).unwrap();
        assert!(encoded.starts_with(MAGIC));
        assert_eq!(to_json(&encoded).unwrap(), deployment);
    }

    #[test]
    fn secrets_keep_their_bytes_and_bad_bodies_are_named() {
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s"}, "type": "Opaque", "data": {"token": base64(b"s3cr3t\xff")}});
        let encoded = from_json(&secret).unwrap();
        assert_eq!(to_json(&encoded).unwrap(), secret);
        assert_eq!(unbase64(&base64(b"ab")).unwrap(), b"ab");
        assert!(to_json(b"{}").unwrap_err().contains("magic"));
        let truncated = &encoded[..encoded.len() - 3];
        assert!(to_json(truncated).is_err());
        let mut custom = MAGIC.to_vec();
        let mut tm = Vec::new();
        bytes_field(&mut tm, 1, b"example.com/v1");
        bytes_field(&mut tm, 2, b"Widget");
        bytes_field(&mut custom, 1, &tm);
        assert!(
            to_json(&custom)
                .unwrap_err()
                .contains("example.com/v1 Widget")
        );
    }
}
