//! The REST verbs on resources. Everything here is synchronous and runs under the cluster
//! lock, so each request sees and leaves a consistent state.

mod commit;
mod delete;
mod read;
mod subresource;
mod write;

use std::sync::Arc;

use http::Method;
use serde_json::Value;

use crate::cluster::ClusterState;
use crate::patch::PatchType;
use crate::registry::ResourceType;
use crate::request::{Query, ResourcePath};
use crate::status::{Error, Result};
use crate::store::ObjKey;
use crate::writelog::WriteVerb;

pub(crate) use commit::{establish_crd, finalize_namespace};
pub(crate) use read::list_selectors;

/// One request on a resource, resolved against the cluster's kinds.
pub(crate) struct Ctx<'a> {
    pub rt: Arc<ResourceType>,
    pub path: &'a ResourcePath,
    pub query: &'a Query,
    pub user_agent: Option<&'a str>,
    pub dry_run: bool,
    pub now: String,
}

impl Ctx<'_> {
    /// The namespace key part ("" for cluster-scoped kinds).
    pub fn ns(&self) -> &str {
        if self.rt.namespaced {
            self.path.namespace.as_deref().unwrap_or("")
        } else {
            ""
        }
    }

    pub fn key(&self, name: &str) -> ObjKey {
        (
            self.rt.group.clone(),
            self.rt.plural.clone(),
            self.ns().to_string(),
            name.to_string(),
        )
    }

    pub fn api_version(&self) -> String {
        self.rt.api_version(&self.path.version)
    }

    /// `fieldManager`, or what a real server derives from the User-Agent.
    pub fn manager(&self) -> String {
        if let Some(m) = self.query.get("fieldManager") {
            return m.to_string();
        }
        self.user_agent
            .and_then(|ua| ua.split('/').next())
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown")
            .to_string()
    }

    pub fn name(&self) -> Result<&str> {
        self.path.name.as_deref().ok_or(Error::MethodNotAllowed)
    }
}

/// The answer to a request on a resource.
pub(crate) struct Answer {
    pub body: Value,
    pub code: u16,
    /// Whether the stored state changed.
    pub changed: bool,
    /// The object's resourceVersion afterwards, for the write log.
    pub resource_version: Option<String>,
    /// The object's name, when the client did not know it (generateName).
    pub name: Option<String>,
}

impl Answer {
    pub fn read(body: Value) -> Self {
        Answer {
            body,
            code: 200,
            changed: false,
            resource_version: None,
            name: None,
        }
    }

    pub fn object(obj: Value, code: u16, changed: bool) -> Self {
        let rv = crate::object::meta_str(&obj, "resourceVersion").map(String::from);
        let name = crate::object::meta_str(&obj, "name").map(String::from);
        Answer {
            body: obj,
            code,
            changed,
            resource_version: rv,
            name,
        }
    }
}

/// Which write a request is, for the write log; None for reads.
pub(crate) fn write_verb(
    method: &Method,
    path: &ResourcePath,
    content_type: &str,
) -> Option<WriteVerb> {
    let sub = path.subresource.as_deref();
    let verb = match (method, sub) {
        (&Method::POST, _) => WriteVerb::Create,
        (&Method::PUT | &Method::PATCH, Some("scale")) => WriteVerb::Scale,
        (&Method::PUT | &Method::PATCH, Some("status")) => WriteVerb::Status,
        (&Method::PUT, _) => WriteVerb::Update,
        (&Method::PATCH, _)
            if PatchType::from_content_type(content_type) == Some(PatchType::Apply) =>
        {
            WriteVerb::Apply
        }
        (&Method::PATCH, _) => WriteVerb::Patch,
        (&Method::DELETE, _) if path.name.is_none() => WriteVerb::DeleteCollection,
        (&Method::DELETE, _) => WriteVerb::Delete,
        _ => return None,
    };
    Some(verb)
}

/// Runs one non-watch request on a resource.
pub(crate) fn dispatch(
    state: &mut ClusterState,
    ctx: &Ctx<'_>,
    method: &Method,
    content_type: &str,
    body: &[u8],
) -> Result<Answer> {
    if ctx.rt.namespaced
        && ctx.path.namespace.is_none()
        && (ctx.path.name.is_some() || *method != Method::GET)
    {
        // Namespaced objects are only addressable inside a namespace (all-namespaces is list-only).
        return Err(Error::NoSuchResource);
    }
    if !ctx.rt.namespaced && ctx.path.namespace.is_some() {
        return Err(Error::NoSuchResource);
    }
    let sub = ctx.path.subresource.as_deref();
    match sub {
        None => {}
        Some("status") if ctx.rt.status => {}
        Some("scale") if ctx.rt.scale.is_some() => {}
        Some(_) => return Err(Error::NoSuchResource),
    }
    let patch_type =
        || PatchType::from_content_type(content_type).ok_or(Error::UnsupportedMediaType);
    match (method, ctx.path.name.is_some(), sub) {
        (&Method::GET, false, _) => read::list(state, ctx),
        (&Method::GET, true, Some("scale")) => subresource::get_scale(state, ctx),
        (&Method::GET, true, _) => read::get(state, ctx),
        (&Method::POST, false, None) => write::create(state, ctx, body),
        (&Method::PUT, true, None) => write::replace(state, ctx, body),
        (&Method::PUT, true, Some("status")) => subresource::put_status(state, ctx, body),
        (&Method::PUT, true, Some("scale")) => subresource::put_scale(state, ctx, body),
        (&Method::PATCH, true, None) => match patch_type()? {
            PatchType::Apply => write::apply(state, ctx, body),
            other => write::patch(state, ctx, other, body),
        },
        (&Method::PATCH, true, Some("status")) => {
            subresource::patch_status(state, ctx, patch_type()?, body)
        }
        (&Method::PATCH, true, Some("scale")) => {
            subresource::patch_scale(state, ctx, patch_type()?, body)
        }
        (&Method::DELETE, true, None) => delete::delete(state, ctx, body),
        (&Method::DELETE, false, None) => delete::delete_collection(state, ctx, body),
        _ => Err(Error::MethodNotAllowed),
    }
}
