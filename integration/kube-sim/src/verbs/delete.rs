//! delete and deletecollection. `propagationPolicy` is accepted and validated; dependents
//! found through ownerReferences are not deleted (there is no garbage collector).

use serde_json::{Value, json};

use super::commit;
use super::read::list_selectors;
use super::{Answer, Ctx};
use crate::cluster::ClusterState;
use crate::object::{self, meta_str};
use crate::status::{self, Error, Result};

/// Reads DeleteOptions from the body (optional) and the query; returns whether it is a dry run.
fn delete_options(ctx: &Ctx<'_>, body: &[u8]) -> Result<(bool, Value)> {
    let opts: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| Error::BadRequest(format!("error decoding DeleteOptions: {e}")))?
    };
    let policy = opts
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or(ctx.query.get("propagationPolicy"));
    if let Some(p) = policy
        && !matches!(p, "Foreground" | "Background" | "Orphan")
    {
        return Err(Error::Unprocessable(format!(
            "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
        )));
    }
    let body_dry_run = match opts.get("dryRun").and_then(Value::as_array) {
        None => false,
        Some(v) if v.iter().all(|x| x == "All") => !v.is_empty(),
        Some(_) => {
            return Err(Error::BadRequest(
                "dryRun: Unsupported value: supported values: \"All\"".into(),
            ));
        }
    };
    Ok((
        ctx.dry_run || body_dry_run,
        opts.get("preconditions").cloned().unwrap_or(Value::Null),
    ))
}

pub(crate) fn delete(state: &mut ClusterState, ctx: &Ctx<'_>, body: &[u8]) -> Result<Answer> {
    let name = ctx.name()?.to_string();
    let (dry_run, preconditions) = delete_options(ctx, body)?;
    let key = ctx.key(&name);
    let obj = state
        .store
        .get(&key)
        .cloned()
        .ok_or_else(|| Error::not_found(&ctx.rt.group, &ctx.rt.plural, &name))?;
    for (field, meta) in [("uid", "uid"), ("resourceVersion", "resourceVersion")] {
        if let Some(want) = preconditions.get(field).and_then(Value::as_str)
            && Some(want) != meta_str(&obj, meta)
        {
            return Err(Error::Conflict {
                group: ctx.rt.group.clone(),
                resource: ctx.rt.plural.clone(),
                name: name.clone(),
            });
        }
    }
    let uid = meta_str(&obj, "uid").map(String::from);
    if dry_run {
        let gone = object::finalizers(&obj).is_empty();
        let mut answer =
            Answer::object(object::present(obj, &ctx.rt, &ctx.path.version), 200, false);
        if gone {
            answer.body = status::success(&ctx.rt.group, &ctx.rt.plural, &name, uid.as_deref());
        }
        return Ok(answer);
    }
    let (result, gone) = commit::request_deletion(state, &key, &ctx.now)
        .ok_or_else(|| Error::not_found(&ctx.rt.group, &ctx.rt.plural, &name))?;
    let mut answer = Answer::object(
        object::present(result, &ctx.rt, &ctx.path.version),
        200,
        true,
    );
    if gone {
        answer.body = status::success(&ctx.rt.group, &ctx.rt.plural, &name, uid.as_deref());
    }
    Ok(answer)
}

/// Deletes everything a list with the same selectors would return; answers the list of
/// deleted objects, as real servers do.
pub(crate) fn delete_collection(
    state: &mut ClusterState,
    ctx: &Ctx<'_>,
    body: &[u8],
) -> Result<Answer> {
    if ctx.rt.is_namespace() {
        return Err(Error::MethodNotAllowed);
    }
    let (dry_run, _) = delete_options(ctx, body)?;
    let selectors = list_selectors(ctx.query)?;
    let ns = ctx.path.namespace.as_deref();
    let keys: Vec<_> = state
        .store
        .list(&ctx.rt.group, &ctx.rt.plural, ns)
        .filter(|(_, o)| selectors.matches(o))
        .map(|(k, _)| k.clone())
        .collect();
    let mut items = Vec::new();
    for k in &keys {
        let item = if dry_run {
            state.store.get(k).cloned()
        } else {
            commit::request_deletion(state, k, &ctx.now).map(|(o, _)| o)
        };
        if let Some(o) = item {
            items.push(object::present(o, &ctx.rt, &ctx.path.version));
        }
    }
    let changed = !dry_run && !items.is_empty();
    let body = json!({
        "kind": format!("{}List", ctx.rt.kind),
        "apiVersion": ctx.api_version(),
        "metadata": {"resourceVersion": state.store.resource_version().to_string()},
        "items": items,
    });
    Ok(Answer {
        body,
        code: 200,
        changed,
        resource_version: None,
        name: None,
    })
}
