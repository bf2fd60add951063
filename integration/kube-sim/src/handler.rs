//! The HTTP side of a cluster request: fault injection, body reading, the write log, and
//! turning answers and errors into responses.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, header};
use serde_json::Value;

use crate::cluster::Cluster;
use crate::discovery;
use crate::faults::Decision;
use crate::object;
use crate::openapi;
use crate::patch::PatchType;
use crate::protobuf;
use crate::request::{self, Query, ResourcePath, Target};
use crate::server::{ConnAbort, Shared};
use crate::status::{self, Error, Result};
use crate::table;
use crate::verbs::{self, Ctx};
use crate::watch;
use crate::writelog::{self, WriteRecord, WriteVerb};

/// Largest request body accepted.
const MAX_BODY: usize = 32 * 1024 * 1024;

fn header_str(h: &HeaderMap, name: header::HeaderName) -> &str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Everything about a write request the log needs, known before it is handled.
struct WriteInfo {
    verb: WriteVerb,
    path: ResourcePath,
    patch_type: Option<String>,
    field_manager: Option<String>,
    user_agent: Option<String>,
    dry_run: bool,
}

impl WriteInfo {
    fn record(&self, cluster: &Cluster, body: Option<&Value>) -> WriteRecord {
        let state = cluster.lock();
        let rt = state
            .registry
            .find(&self.path.group, &self.path.version, &self.path.plural);
        WriteRecord {
            seq: 0,
            // To the nanosecond, unlike the objects' times: tests order writes by it.
            time: jiff::Timestamp::now().to_string(),
            cluster: cluster.name.clone(),
            verb: self.verb,
            patch_type: self.patch_type.clone(),
            api_version: if self.path.group.is_empty() {
                self.path.version.clone()
            } else {
                format!("{}/{}", self.path.group, self.path.version)
            },
            kind: rt.map(|t| t.kind.clone()).unwrap_or_default(),
            resource: self.path.plural.clone(),
            namespace: self.path.namespace.clone(),
            name: self.path.name.clone(),
            field_manager: self.field_manager.clone(),
            user_agent: self.user_agent.clone(),
            labels: writelog::string_map(body, "labels"),
            annotations: writelog::string_map(body, "annotations"),
            changed: false,
            resource_version: None,
            code: 0,
            dry_run: self.dry_run,
            fault: None,
        }
    }
}

fn log_fault(cluster: &Cluster, info: Option<&WriteInfo>, fault: &str, code: u16) {
    if let Some(info) = info {
        let mut r = info.record(cluster, None);
        r.fault = Some(fault.to_string());
        r.code = code;
        cluster.lock().writes.push(r);
    }
}

/// Resets the client's connection (TCP RST) instead of answering.
async fn reset(abort: Option<ConnAbort>) -> Response {
    match abort {
        Some(a) => {
            a.reset();
            // The connection task drops this request with the connection.
            std::future::pending::<Response>().await
        }
        None => Error::Injected {
            code: 503,
            retry_after: None,
        }
        .into_response(),
    }
}

fn protobuf_response(bytes: Vec<u8>, code: u16) -> Response {
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(protobuf::MEDIA_TYPE),
    );
    r
}

fn json_response(v: &Value, code: u16) -> Response {
    let mut r = status::json_body(v);
    *r.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK);
    r
}

/// `/clusters/{name}/…`
pub(crate) async fn cluster_request(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let abort = req.extensions().get::<ConnAbort>().cloned();
    let full = req.uri().path().to_string();
    let rest = full.strip_prefix("/clusters/").unwrap_or_default();
    let (name, sub_path) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(cluster) = shared.fleet.get(name) else {
        return Error::not_found("", "clusters", name).into_response();
    };
    if let Err(e) = cluster.credentials.authenticate(req.headers(), sub_path) {
        return e.into_response();
    }
    let target = match request::parse_path(sub_path) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let query = match Query::parse(req.uri().query()) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let method = req.method().clone();
    let content_type = header_str(req.headers(), header::CONTENT_TYPE).to_string();
    let accept = header_str(req.headers(), header::ACCEPT).to_string();
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(String::from);

    let info = match &target {
        Target::Resource(p) => verbs::write_verb(&method, p, &content_type).map(|verb| WriteInfo {
            verb,
            path: p.clone(),
            patch_type: (verb == WriteVerb::Patch)
                .then(|| PatchType::from_content_type(&content_type).map(|t| t.name().to_string()))
                .flatten(),
            field_manager: query.get("fieldManager").map(String::from),
            user_agent: user_agent.clone(),
            dry_run: query.get("dryRun") == Some("All"),
        }),
        _ => None,
    };
    let decision: Decision = cluster.decide_faults(info.is_some());
    if decision.unavailable {
        log_fault(&cluster, info.as_ref(), "unavailable", 0);
        return reset(abort).await;
    }
    if let Some(latency) = decision.latency {
        tokio::time::sleep(latency).await;
    }
    if decision.reset_before_write {
        log_fault(&cluster, info.as_ref(), "reset_before_write", 0);
        return reset(abort).await;
    }
    if let Some((code, retry_after)) = decision.error {
        log_fault(&cluster, info.as_ref(), &format!("status_{code}"), code);
        return Error::Injected { code, retry_after }.into_response();
    }
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return Error::BadRequest(format!("could not read the request body: {e}"))
                .into_response();
        }
    };
    // A protobuf body (kubectl's imperative commands, Go typed clients) is the JSON object
    // it stands for from here on.
    let (body, content_type) = if protobuf::is_protobuf(&content_type) && !body.is_empty() {
        match protobuf::to_json(&body) {
            Ok(object) => (
                axum::body::Bytes::from(serde_json::to_vec(&object).unwrap_or_default()),
                "application/json".to_owned(),
            ),
            Err(why) => {
                return Error::BadRequest(format!(
                    "the body of the request could not be decoded as protobuf: {why}"
                ))
                .into_response();
            }
        }
    } else {
        (body, content_type)
    };

    let path = match target {
        Target::Resource(p) => p,
        other => return serve_meta(&cluster, other, &method, &accept),
    };
    if method == Method::GET && query.flag("watch") {
        return match watch::start(&cluster, &path, &query, shared.bookmark_interval) {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
    }

    let reset_after = decision.reset_after_commit && info.is_some();
    let result = handle_resource(
        &cluster,
        &path,
        &query,
        &method,
        &content_type,
        &body,
        user_agent.as_deref(),
        info.as_ref(),
        reset_after.then_some("reset_after_commit"),
    );
    let deleted_namespace =
        path.group.is_empty() && path.plural == "namespaces" && method == Method::DELETE;
    if deleted_namespace
        && result.as_ref().is_ok_and(|a| a.changed)
        && let Some(ns) = path.name.clone()
    {
        let (cluster, delay) = (cluster.clone(), shared.namespace_deletion_delay);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            verbs::finalize_namespace(&mut cluster.lock(), &ns, &object::now());
        });
    }
    let created_crd = path.group == "apiextensions.k8s.io"
        && path.plural == "customresourcedefinitions"
        && !query.dry_run().unwrap_or(false);
    if created_crd
        && let Ok(answer) = &result
        && answer.code == 201
    {
        let delay = cluster.lock().crd_establish_delay;
        let name = object::meta_str(&answer.body, "name").map(str::to_owned);
        let uid = object::meta_str(&answer.body, "uid").map(str::to_owned);
        if let (false, Some(name), Some(uid)) = (delay.is_zero(), name, uid) {
            let cluster = cluster.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                verbs::establish_crd(&mut cluster.lock(), &name, &uid, &object::now());
            });
        }
    }
    if reset_after {
        return reset(abort).await;
    }
    match result {
        Ok(answer) => {
            let table = (method == Method::GET && path.subresource.is_none())
                .then(|| table::wanted(&accept))
                .flatten();
            match table {
                Some(version) => {
                    let include = query.get("includeObject").unwrap_or("Metadata");
                    json_response(
                        &as_table(&cluster, &path, &answer.body, version, include),
                        200,
                    )
                }
                None if protobuf::preferred(&accept) => match protobuf::from_json(&answer.body) {
                    Some(bytes) => protobuf_response(bytes, answer.code),
                    None => json_response(&answer.body, answer.code),
                },
                None => json_response(&answer.body, answer.code),
            }
        }
        Err(e) => e.into_response(),
    }
}

/// `body`, the answer to a GET of `path`, as the Table kubectl asked for.
fn as_table(
    cluster: &Cluster,
    path: &ResourcePath,
    body: &Value,
    version: &str,
    include: &str,
) -> Value {
    let state = cluster.lock();
    let Some(rt) = state
        .registry
        .find(&path.group, &path.version, &path.plural)
    else {
        return body.clone();
    };
    let crd = rt.crd.as_ref().and_then(|name| {
        let key = (
            "apiextensions.k8s.io".to_owned(),
            "customresourcedefinitions".to_owned(),
            String::new(),
            name.clone(),
        );
        state.store.get(&key).cloned()
    });
    table::of(&rt, crd.as_ref(), &path.version, body, version, include)
}

/// Runs a resource request under the cluster lock and logs it if it is a write.
#[allow(clippy::too_many_arguments)]
fn handle_resource(
    cluster: &Cluster,
    path: &ResourcePath,
    query: &Query,
    method: &Method,
    content_type: &str,
    body: &[u8],
    user_agent: Option<&str>,
    info: Option<&WriteInfo>,
    fault: Option<&str>,
) -> Result<verbs::Answer> {
    let sent: Option<Value> = info.and_then(|i| match i.verb {
        WriteVerb::Apply => request::yaml_object(body).ok(),
        _ => serde_json::from_slice(body).ok(),
    });
    let mut record = info.map(|i| i.record(cluster, sent.as_ref()));
    if let (Some(r), Some(WriteVerb::Delete | WriteVerb::DeleteCollection)) =
        (record.as_mut(), info.map(|i| i.verb))
    {
        // DeleteOptions may carry dryRun in the body.
        let in_body = sent
            .as_ref()
            .and_then(|b| b.get("dryRun"))
            .and_then(Value::as_array);
        r.dry_run |= in_body.is_some_and(|v| v.iter().any(|x| x == "All"));
    }
    let result = (|| {
        let dry_run = query.dry_run()?;
        let mut state = cluster.lock();
        let rt = state
            .registry
            .find(&path.group, &path.version, &path.plural)
            .ok_or(Error::NoSuchResource)?;
        let ctx = Ctx {
            rt,
            path,
            query,
            user_agent,
            dry_run,
            now: object::now(),
        };
        if let Some(r) = record.as_mut() {
            r.field_manager = Some(ctx.manager());
        }
        verbs::dispatch(&mut state, &ctx, method, content_type, body)
    })();
    if let Some(mut r) = record {
        r.fault = fault.map(String::from);
        match &result {
            Ok(a) => {
                r.code = a.code;
                r.changed = a.changed;
                r.resource_version = a.resource_version.clone();
                if r.name.is_none() && r.verb == WriteVerb::Create {
                    r.name = a.name.clone();
                }
            }
            Err(e) => r.code = e.code(),
        }
        cluster.lock().writes.push(r);
    }
    result
}

/// Version, health, discovery and openapi.
fn serve_meta(cluster: &Cluster, target: Target, method: &Method, accept: &str) -> Response {
    if *method != Method::GET {
        return Error::MethodNotAllowed.into_response();
    }
    let state = cluster.lock();
    let reg = &state.registry;
    let aggregated = discovery::wants_aggregated(accept);
    let doc = match target {
        Target::Version => discovery::version(),
        Target::Health => return Response::new(Body::from("ok")),
        Target::OpenApi | Target::Resource(_) => return Error::NoSuchResource.into_response(),
        Target::OpenApiRoot => openapi::root(reg, &format!("/clusters/{}", cluster.name)),
        Target::OpenApiGroupVersion(gv) => match openapi::group_version(reg, &gv) {
            Some(d) => d,
            None => return Error::NoSuchResource.into_response(),
        },
        Target::CoreVersions if aggregated => {
            return aggregated_response(discovery::aggregated(reg, true));
        }
        Target::Groups if aggregated => {
            return aggregated_response(discovery::aggregated(reg, false));
        }
        Target::CoreVersions => discovery::core_versions(),
        Target::Groups => discovery::groups(reg),
        Target::CoreResources => discovery::resources(reg, "", "v1").unwrap_or_default(),
        Target::Group(g) => match discovery::group(reg, &g) {
            Some(d) => d,
            None => return Error::NoSuchResource.into_response(),
        },
        Target::GroupResources(g, v) => match discovery::resources(reg, &g, &v) {
            Some(d) => d,
            None => return Error::NoSuchResource.into_response(),
        },
    };
    status::json_body(&doc)
}

fn aggregated_response(doc: Value) -> Response {
    let mut r = status::json_body(&doc);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(discovery::AGGREGATED_CONTENT_TYPE),
    );
    r
}
