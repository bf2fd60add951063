//! Reading a Kubernetes REST request: which endpoint the path names, its query options and
//! its body.

use std::collections::HashMap;

use serde_json::Value;

use crate::status::{Error, Result};

/// What a request path names (after the `/clusters/{name}` prefix).
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Version,
    Health,
    /// `/openapi/v3`
    OpenApiRoot,
    /// `/openapi/v3/{api/v1 | apis/g/v}`
    OpenApiGroupVersion(String),
    /// Anything else under `/openapi` (v2 is not served).
    OpenApi,
    /// `/api`
    CoreVersions,
    /// `/api/v1`
    CoreResources,
    /// `/apis`
    Groups,
    /// `/apis/{group}`
    Group(String),
    /// `/apis/{group}/{version}`
    GroupResources(String, String),
    Resource(ResourcePath),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

pub fn parse_path(path: &str) -> Result<Target> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Ok(Target::Version),
        ["healthz" | "livez" | "readyz", ..] => return Ok(Target::Health),
        ["openapi", "v3"] => return Ok(Target::OpenApiRoot),
        ["openapi", "v3", gv @ ..] => return Ok(Target::OpenApiGroupVersion(gv.join("/"))),
        ["openapi", ..] => return Ok(Target::OpenApi),
        ["api"] => return Ok(Target::CoreVersions),
        ["api", "v1"] => return Ok(Target::CoreResources),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis"] => return Ok(Target::Groups),
        ["apis", g] => return Ok(Target::Group((*g).into())),
        ["apis", g, v] => return Ok(Target::GroupResources((*g).into(), (*v).into())),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(Error::NoSuchResource),
    };
    // `namespaces/{ns}/{resource}...`, except a namespace's own subresources.
    let (namespace, rest) = match rest {
        ["namespaces", ns, sub] if group.is_empty() && matches!(*sub, "status" | "finalize") => {
            (None, rest)
        }
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some((*ns).to_string()), tail),
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some((*n).to_string()), None),
        [p, n, s] => (*p, Some((*n).to_string()), Some((*s).to_string())),
        _ => return Err(Error::NoSuchResource),
    };
    Ok(Target::Resource(ResourcePath {
        group: group.into(),
        version: version.into(),
        plural: plural.into(),
        namespace,
        name,
        subresource,
    }))
}

/// Query options.
#[derive(Debug, Clone, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Query> {
        let Some(raw) = raw else {
            return Ok(Query::default());
        };
        let uri: http::Uri = format!("/?{raw}")
            .parse()
            .map_err(|_| Error::BadRequest("malformed query string".into()))?;
        let q = axum::extract::Query::<HashMap<String, String>>::try_from_uri(&uri)
            .map_err(|e| Error::BadRequest(format!("malformed query string: {e}")))?;
        Ok(Query(q.0))
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }

    pub fn u64(&self, k: &str) -> Result<Option<u64>> {
        self.get(k)
            .map(|v| {
                v.parse().map_err(|_| {
                    Error::BadRequest(format!("{k}: invalid value {v:?}, expected an integer"))
                })
            })
            .transpose()
    }

    /// `dryRun=All` (the only value real servers accept).
    pub fn dry_run(&self) -> Result<bool> {
        match self.get("dryRun") {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(Error::BadRequest(format!(
                "dryRun: Unsupported value: {other:?}: supported values: \"All\""
            ))),
        }
    }
}

/// Decodes a JSON body into an object.
pub fn json_object(body: &[u8], what: &str) -> Result<Value> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        Error::BadRequest(format!(
            "the body of the request could not be decoded as {what}: {e}"
        ))
    })?;
    if !v.is_object() {
        return Err(Error::BadRequest(format!(
            "the body of the request must be a JSON object ({what})"
        )));
    }
    Ok(v)
}

/// Decodes an apply body: YAML or JSON (JSON is YAML).
pub fn yaml_object(body: &[u8]) -> Result<Value> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Error::BadRequest("the apply body is not UTF-8".into()))?;
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => serde_saphyr::from_str(text)
            .map_err(|e| Error::BadRequest(format!("error decoding YAML: {e}")))?,
    };
    if !v.is_object() {
        return Err(Error::BadRequest("the apply body must be an object".into()));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(path: &str) -> ResourcePath {
        match parse_path(path).unwrap() {
            Target::Resource(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn paths() {
        let r = res("/apis/apps/v1/namespaces/ns1/deployments/web/scale");
        assert_eq!(
            (r.group.as_str(), r.namespace.as_deref(), r.name.as_deref()),
            ("apps", Some("ns1"), Some("web"))
        );
        assert_eq!(r.subresource.as_deref(), Some("scale"));
        let r = res("/api/v1/namespaces/ns1");
        assert_eq!(
            (r.plural.as_str(), r.name.as_deref(), r.namespace),
            ("namespaces", Some("ns1"), None)
        );
        let r = res("/api/v1/namespaces/ns1/status");
        assert_eq!(
            (r.name.as_deref(), r.subresource.as_deref()),
            (Some("ns1"), Some("status"))
        );
        let r = res("/api/v1/namespaces/ns1/configmaps");
        assert_eq!(
            (r.plural.as_str(), r.namespace.as_deref()),
            ("configmaps", Some("ns1"))
        );
        assert_eq!(res("/api/v1/configmaps").namespace, None);
        assert_eq!(
            parse_path("/apis/apps").unwrap(),
            Target::Group("apps".into())
        );
        assert!(parse_path("/nope").is_err());
    }

    #[test]
    fn yaml_or_json_apply_bodies() {
        assert_eq!(yaml_object(b"a: 1\nb: [x]").unwrap()["b"][0], "x");
        assert_eq!(yaml_object(br#"{"a":1}"#).unwrap()["a"], 1);
        assert_eq!(yaml_object(b"- 1").unwrap_err().code(), 400);
    }

    #[test]
    fn dry_run_values() {
        assert!(Query::parse(Some("dryRun=All")).unwrap().dry_run().unwrap());
        assert!(
            Query::parse(Some("dryRun=Some"))
                .unwrap()
                .dry_run()
                .is_err()
        );
    }
}
