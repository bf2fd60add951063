//! get and list (with selectors and limit/continue pagination).

use serde_json::json;

use super::{Answer, Ctx};
use crate::cluster::ClusterState;
use crate::object;
use crate::request::Query;
use crate::selector::{FieldSelector, LabelSelector, Selectors};
use crate::status::{Error, Result};

pub(crate) fn list_selectors(q: &Query) -> Result<Selectors> {
    let labels = match q.get("labelSelector") {
        Some(s) => {
            LabelSelector::parse(s).map_err(|e| Error::BadRequest(format!("labelSelector: {e}")))?
        }
        None => LabelSelector::default(),
    };
    let fields = match q.get("fieldSelector") {
        Some(s) => {
            FieldSelector::parse(s).map_err(|e| Error::BadRequest(format!("fieldSelector: {e}")))?
        }
        None => FieldSelector::default(),
    };
    Ok(Selectors { labels, fields })
}

pub(crate) fn get(state: &mut ClusterState, ctx: &Ctx<'_>) -> Result<Answer> {
    let name = ctx.name()?;
    let obj = state
        .store
        .get(&ctx.key(name))
        .cloned()
        .ok_or_else(|| Error::not_found(&ctx.rt.group, &ctx.rt.plural, name))?;
    Ok(Answer::read(object::present(
        obj,
        &ctx.rt,
        &ctx.path.version,
    )))
}

pub(crate) fn list(state: &mut ClusterState, ctx: &Ctx<'_>) -> Result<Answer> {
    let selectors = list_selectors(ctx.query)?;
    let limit = ctx.query.u64("limit")?.filter(|l| *l > 0);
    let after = match ctx.query.get("continue") {
        Some(token) => Some(
            token
                .split_once('/')
                .ok_or_else(|| Error::BadRequest(format!("continue: invalid token {token:?}")))?,
        ),
        None => None,
    };
    let ns = ctx.path.namespace.as_deref();
    let mut matching = state
        .store
        .list(&ctx.rt.group, &ctx.rt.plural, ns)
        .filter(|((_, _, n, name), _)| after.is_none_or(|a| (n.as_str(), name.as_str()) > a))
        .filter(|(_, o)| selectors.matches(o))
        .map(|((_, _, n, name), o)| (format!("{n}/{name}"), o));
    let mut items = Vec::new();
    let mut last = None;
    for (token, o) in matching.by_ref() {
        items.push(object::present(o.clone(), &ctx.rt, &ctx.path.version));
        last = Some(token);
        if limit.is_some_and(|l| items.len() as u64 >= l) {
            break;
        }
    }
    let remaining = matching.count();
    let mut metadata = json!({"resourceVersion": state.store.resource_version().to_string()});
    if remaining > 0
        && let Some(token) = last
    {
        metadata["continue"] = json!(token);
        metadata["remainingItemCount"] = json!(remaining);
    }
    Ok(Answer::read(json!({
        "kind": format!("{}List", ctx.rt.kind),
        "apiVersion": ctx.api_version(),
        "metadata": metadata,
        "items": items,
    })))
}
