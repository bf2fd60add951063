//! kube 5 against kube-sim over HTTP: typed and dynamic APIs, CRUD, selectors, pagination,
//! server-side apply, dry run, subresources, CRDs and namespaces.

mod common;

use std::collections::BTreeMap;

use common::{WAIT, client, start, status};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::{Discovery, Scope};
use kube::{Resource, ResourceExt};
use longshore_kube_sim::WriteVerb;
use serde_json::json;

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata.name = Some(name.into());
    c.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    c.data = Some(BTreeMap::from([("k".to_string(), "v".to_string())]));
    c
}

fn deployment(replicas: i32, image: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "annotations": {"longshore.dev/operation": "op-1"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": image}]}}
        }
    })
}

#[tokio::test]
async fn typed_crud_with_status_errors() {
    let sim = start(&["prod"]).await;
    let cms: Api<ConfigMap> = Api::namespaced(client(&sim, "prod").await, "default");
    let created = cms
        .create(&PostParams::default(), &cm("a", &[("app", "web")]))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    let rv: u64 = created.resource_version().unwrap().parse().unwrap();

    let dup = status(
        cms.create(&PostParams::default(), &cm("a", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    let missing = status(cms.get("nope").await.unwrap_err());
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "configmaps \"nope\" not found");

    let mut changed = created.clone();
    changed.data = Some(BTreeMap::from([("k".to_string(), "w".to_string())]));
    let replaced = cms
        .replace("a", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert!(replaced.resource_version().unwrap().parse::<u64>().unwrap() > rv);
    // The same stale resourceVersion again is a conflict.
    let stale = status(
        cms.replace("a", &PostParams::default(), &changed)
            .await
            .unwrap_err(),
    );
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    // Without a resourceVersion, PUT is unconditional.
    let mut unconditional = changed.clone();
    unconditional.metadata.resource_version = None;
    cms.replace("a", &PostParams::default(), &unconditional)
        .await
        .unwrap();

    let bad = status(
        cms.create(&PostParams::default(), &cm("Bad_Name", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((bad.code, bad.reason.as_str()), (422, "Invalid"));
    assert_eq!(bad.details.unwrap().causes[0].field, "metadata.name");

    let mut gen_named = cm("", &[]);
    gen_named.metadata.name = None;
    gen_named.metadata.generate_name = Some("job-".into());
    let g = cms
        .create(&PostParams::default(), &gen_named)
        .await
        .unwrap();
    assert!(g.name_any().starts_with("job-") && g.name_any().len() == 9);

    cms.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(status(cms.get("a").await.unwrap_err()).code, 404);
    assert!(
        sim.cluster("prod")
            .unwrap()
            .get("v1", "ConfigMap", Some("default"), "a")
            .is_none()
    );
}

#[tokio::test]
async fn list_with_selectors_and_pagination() {
    let sim = start(&["prod"]).await;
    let client = client(&sim, "prod").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for (i, tier) in ["front", "front", "back", "back", "db"].iter().enumerate() {
        cms.create(
            &PostParams::default(),
            &cm(&format!("c{i}"), &[("tier", tier), ("app", "shop")]),
        )
        .await
        .unwrap();
    }
    let names = |l: kube::core::ObjectList<ConfigMap>| {
        l.items.iter().map(|c| c.name_any()).collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            cms.list(&ListParams::default().labels("tier=front"))
                .await
                .unwrap()
        ),
        ["c0", "c1"]
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().labels("tier in (back,db)"))
                .await
                .unwrap()
        )
        .len(),
        3
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().labels("tier notin (front),app"))
                .await
                .unwrap()
        )
        .len(),
        3
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().labels("!tier"))
                .await
                .unwrap()
        )
        .len(),
        0
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().fields("metadata.name=c3"))
                .await
                .unwrap()
        ),
        ["c3"]
    );

    let mut seen = Vec::new();
    let mut params = ListParams::default().limit(2);
    loop {
        let page = cms.list(&params).await.unwrap();
        assert!(page.items.len() <= 2);
        let token = page.metadata.continue_.clone();
        seen.extend(names(page));
        match token {
            Some(t) if !t.is_empty() => params = params.continue_token(&t),
            _ => break,
        }
    }
    assert_eq!(seen, ["c0", "c1", "c2", "c3", "c4"]);
    // All namespaces.
    let all: Api<ConfigMap> = Api::all(client);
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        5
    );
}

#[tokio::test]
async fn discovery_and_dynamic_objects() {
    let sim = start(&["prod"]).await;
    let client = client(&sim, "prod").await;
    for discovery in [
        Discovery::new(client.clone()).run().await.unwrap(),
        Discovery::new(client.clone())
            .run_aggregated()
            .await
            .unwrap(),
    ] {
        let apps = discovery.get("apps").expect("apps group");
        let (ar, caps) = apps.recommended_kind("Deployment").expect("deployments");
        assert_eq!(ar.plural, "deployments");
        assert_eq!(caps.scope, Scope::Namespaced);
        assert!(
            caps.subresources
                .iter()
                .any(|(s, _)| s.plural == "deployments/scale" || s.plural == "scale")
        );
        assert!(
            discovery
                .get("")
                .unwrap()
                .recommended_kind("Namespace")
                .is_some()
        );
    }
    let gvk = kube::api::GroupVersionKind::gvk("apps", "v1", "Deployment");
    let (ar, _) = kube::discovery::pinned_kind(&client, &gvk).await.unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
    let obj: DynamicObject = serde_json::from_value(deployment(2, "nginx")).unwrap();
    let applied = api
        .patch("web", &PatchParams::apply("ci"), &Patch::Apply(&obj))
        .await
        .unwrap();
    assert_eq!(applied.data["spec"]["replicas"], 2);
    assert_eq!(api.get("web").await.unwrap().metadata.generation, Some(1));
}

#[tokio::test]
async fn server_side_apply_semantics() {
    let sim = start(&["prod"]).await;
    let prod = sim.cluster("prod").unwrap();
    let deploys: Api<Deployment> = Api::namespaced(client(&sim, "prod").await, "default");
    let apply = |m: &str| PatchParams::apply(m);

    // Create on apply.
    let first = deploys
        .patch("web", &apply("ci"), &Patch::Apply(deployment(2, "nginx")))
        .await
        .unwrap();
    let mf = first.metadata.managed_fields.clone().unwrap();
    assert_eq!(
        (mf[0].manager.as_deref(), mf[0].operation.as_deref()),
        (Some("ci"), Some("Apply"))
    );

    // Re-applying the same manifest changes nothing.
    let again = deploys
        .patch("web", &apply("ci"), &Patch::Apply(deployment(2, "nginx")))
        .await
        .unwrap();
    assert_eq!(again.resource_version(), first.resource_version());
    assert_eq!(again.metadata.generation, Some(1));
    assert_eq!(again.metadata.managed_fields, first.metadata.managed_fields);
    let writes = prod.writes();
    assert_eq!(writes.len(), 2);
    assert!(writes[0].changed && !writes[1].changed);
    assert_eq!(writes[1].verb, WriteVerb::Apply);
    assert_eq!(writes[1].annotations["longshore.dev/operation"], "op-1");
    assert_eq!(writes[1].field_manager.as_deref(), Some("ci"));

    // A different value for a field ci owns conflicts, naming the field.
    let err = status(
        deploys
            .patch(
                "web",
                &apply("other"),
                &Patch::Apply(deployment(5, "nginx")),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    let causes = err.details.unwrap().causes;
    let replicas = causes
        .iter()
        .find(|c| c.field == ".spec.replicas")
        .expect("names .spec.replicas");
    assert_eq!(replicas.reason, "FieldManagerConflict");
    assert_eq!(replicas.message, "conflict with \"ci\" using apps/v1");

    // Equal values are shared.
    let shared = deploys
        .patch(
            "web",
            &apply("other"),
            &Patch::Apply(deployment(2, "nginx")),
        )
        .await
        .unwrap();
    let managers: Vec<_> = shared
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(managers, ["ci", "other"]);

    // Force takes ownership.
    let forced = deploys
        .patch(
            "web",
            &apply("other").force(),
            &Patch::Apply(deployment(5, "nginx")),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.replicas, Some(5));
    assert_eq!(forced.metadata.generation, Some(2));
    let ci = forced
        .managed_fields()
        .iter()
        .find(|m| m.manager.as_deref() == Some("ci"))
        .unwrap()
        .clone();
    assert!(
        ci.fields_v1
            .unwrap()
            .0
            .pointer("/f:spec/f:replicas")
            .is_none()
    );

    // A field the applier stops sending, owned by nobody else, is removed.
    let mut with_label = deployment(5, "nginx");
    with_label["metadata"]["labels"] = json!({"team": "a"});
    deploys
        .patch("web", &apply("other"), &Patch::Apply(&with_label))
        .await
        .unwrap();
    let dropped = deploys
        .patch(
            "web",
            &apply("other"),
            &Patch::Apply(deployment(5, "nginx")),
        )
        .await
        .unwrap();
    assert!(dropped.labels().get("team").is_none());

    // A merge patch records an Update entry and takes ownership.
    let patched = deploys
        .patch(
            "web",
            &PatchParams {
                field_manager: Some("hpa".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"spec": {"replicas": 7}})),
        )
        .await
        .unwrap();
    let hpa = patched
        .managed_fields()
        .iter()
        .find(|m| m.manager.as_deref() == Some("hpa"))
        .unwrap()
        .clone();
    assert_eq!(hpa.operation.as_deref(), Some("Update"));
    let err = status(
        deploys
            .patch(
                "web",
                &apply("other"),
                &Patch::Apply(deployment(5, "nginx")),
            )
            .await
            .unwrap_err(),
    );
    assert!(
        err.message.contains("conflict with \"hpa\""),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn apply_without_field_manager_is_422() {
    let sim = start(&["prod"]).await;
    let client = client(&sim, "prod").await;
    let req = http::Request::patch("/apis/apps/v1/namespaces/default/deployments/web")
        .header("content-type", "application/apply-patch+yaml")
        .body(serde_json::to_vec(&deployment(1, "x")).unwrap())
        .unwrap();
    let err = status(client.request::<Deployment>(req).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(err.details.unwrap().causes[0].field, "fieldManager");
}

#[tokio::test]
async fn dry_run_stores_nothing_and_is_logged() {
    let sim = start(&["prod"]).await;
    let prod = sim.cluster("prod").unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client(&sim, "prod").await, "default");
    let rv = prod.resource_version();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let answered = cms.create(&dry, &cm("ghost", &[])).await.unwrap();
    assert_eq!(answered.name_any(), "ghost");
    assert_eq!(status(cms.get("ghost").await.unwrap_err()).code, 404);
    assert_eq!(prod.resource_version(), rv);
    cms.create(&PostParams::default(), &cm("real", &[]))
        .await
        .unwrap();
    let rv = prod.resource_version();
    cms.patch(
        "real",
        &PatchParams::apply("ci").force().dry_run(),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "changed"}})),
    )
    .await
    .unwrap();
    cms.delete(
        "real",
        &DeleteParams {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(prod.resource_version(), rv);
    assert_eq!(cms.get("real").await.unwrap().data.unwrap()["k"], "v");
    let w = prod.writes();
    assert_eq!(w.iter().filter(|r| r.dry_run).count(), 3);
    assert!(w.iter().filter(|r| r.dry_run).all(|r| !r.changed));
}

#[tokio::test]
async fn scale_and_status_subresources() {
    let sim = start(&["prod"]).await;
    let deploys: Api<Deployment> = Api::namespaced(client(&sim, "prod").await, "default");
    deploys
        .patch(
            "web",
            &PatchParams::apply("ci"),
            &Patch::Apply(deployment(2, "nginx")),
        )
        .await
        .unwrap();
    let scale = deploys.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(2));
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=web"));
    let scaled = deploys
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(scaled.spec.unwrap().replicas, Some(4));
    let d = deploys.get("web").await.unwrap();
    assert_eq!((d.spec.replicas, d.metadata.generation), (Some(4), Some(2)));

    let with_status = deploys
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 4, "readyReplicas": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(with_status.status.unwrap().ready_replicas, Some(4));
    assert_eq!(
        with_status.metadata.generation,
        Some(2),
        "status writes do not bump generation"
    );
    // A main-resource write ignores status.
    let ignored = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyReplicas": 0}})),
        )
        .await
        .unwrap();
    assert_eq!(ignored.status.unwrap().ready_replicas, Some(4));
    assert!(
        !sim.cluster("prod")
            .unwrap()
            .writes()
            .last()
            .unwrap()
            .changed
    );
}

#[tokio::test]
async fn crd_registers_a_kind_and_deleting_it_unregisters() {
    let sim = start(&["prod"]).await;
    let client = client(&sim, "prod").await;
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}}}]}
    });
    let ar_crd = kube::discovery::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
    ));
    let crds: Api<DynamicObject> = Api::all_with(client.clone(), &ar_crd);
    crds.patch(
        "widgets.example.com",
        &PatchParams::apply("ci"),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    let established = crds.get("widgets.example.com").await.unwrap();
    assert_eq!(
        established.data["status"]["conditions"][1]["type"],
        "Established"
    );

    let gvk = kube::api::GroupVersionKind::gvk("example.com", "v1", "Widget");
    let (ar, caps) = kube::discovery::pinned_kind(&client, &gvk).await.unwrap();
    assert_eq!(caps.scope, Scope::Namespaced);
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let w = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}});
    let created = widgets
        .patch("w1", &PatchParams::apply("ci"), &Patch::Apply(&w))
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["size"], 3);
    assert!(
        sim.cluster("prod")
            .unwrap()
            .get("example.com/v1", "wd", Some("default"), "w1")
            .is_some()
    );

    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    assert!(kube::discovery::pinned_kind(&client, &gvk).await.is_err());
    assert!(
        sim.cluster("prod")
            .unwrap()
            .get("example.com/v1", "Widget", Some("default"), "w1")
            .is_none()
    );
}

#[tokio::test]
async fn namespaces_are_required_and_deletion_cascades() {
    let sim = start(&["prod", "staging"]).await;
    let client = client(&sim, "prod").await;
    let missing: Api<ConfigMap> = Api::namespaced(client.clone(), "shop");
    let err = status(
        missing
            .create(&PostParams::default(), &cm("a", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (404, "namespaces \"shop\" not found")
    );

    let nss: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some("shop".into());
    nss.create(&PostParams::default(), &ns).await.unwrap();
    missing
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    // Each cluster has its own state.
    let staging: Api<ConfigMap> = Api::namespaced(common::client(&sim, "staging").await, "default");
    assert!(
        staging
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    nss.delete("shop", &DeleteParams::background())
        .await
        .unwrap();
    let terminating = nss.get("shop").await;
    if let Ok(t) = terminating {
        assert_eq!(t.status.unwrap().phase.as_deref(), Some("Terminating"));
    }
    tokio::time::timeout(WAIT, async {
        loop {
            if nss.get("shop").await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("namespace goes");
    assert!(
        sim.cluster("prod")
            .unwrap()
            .get("v1", "cm", Some("shop"), "a")
            .is_none()
    );
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let sim = start(&["prod"]).await;
    let cms: Api<ConfigMap> = Api::namespaced(client(&sim, "prod").await, "default");
    let mut c = cm("held", &[]);
    c.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &c).await.unwrap();
    let pending = cms.delete("held", &DeleteParams::default()).await.unwrap();
    let obj = pending.left().expect("still there");
    assert!(obj.metadata.deletion_timestamp.is_some());
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(status(cms.get("held").await.unwrap_err()).code, 404);
    let _ = ConfigMap::kind(&());
}
