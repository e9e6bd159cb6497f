//! The devcluster driven by kube-rs, as Capstan's controller will drive it.

use crate::common;

use futures::{StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

fn ns(name: &str) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

fn cm(name: &str, labels: Value, data: Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": data}))
        .unwrap()
}

async fn make_ns(client: &kube::Client, name: &str) {
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns(name))
        .await
        .unwrap();
}

fn api_code(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn crud_conflict_and_generate_name() {
    let c = common::cluster().await;
    let client = c.client();
    make_ns(&client, "app").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "app");

    let created = cms
        .create(
            &PostParams::default(),
            &cm("one", json!({"a": "b"}), json!({"k": "v"})),
        )
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert_eq!(meta.generation, Some(1));
    assert!(meta.creation_timestamp.is_some());
    let rv1 = meta.resource_version.clone().unwrap();

    // A second create of the same name is AlreadyExists.
    let err = cms
        .create(&PostParams::default(), &cm("one", json!({}), json!({})))
        .await
        .unwrap_err();
    assert_eq!(api_code(err).0, 409);

    // Update with the current rv works and bumps it; the stale rv then conflicts.
    let mut upd = created.clone();
    upd.data = Some([("k".to_string(), "v2".to_string())].into());
    let updated = cms
        .replace("one", &PostParams::default(), &upd)
        .await
        .unwrap();
    let rv2 = updated.metadata.resource_version.clone().unwrap();
    assert!(rv2.parse::<u64>().unwrap() > rv1.parse::<u64>().unwrap());
    assert_eq!(
        updated.metadata.generation,
        Some(2),
        "data is spec-like content"
    );
    let (code, reason, msg) = api_code(
        cms.replace("one", &PostParams::default(), &upd)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"), "{msg}");

    // Without a resourceVersion the update is unconditional.
    let mut unconditional = updated.clone();
    unconditional.metadata.resource_version = None;
    unconditional.data = Some([("k".to_string(), "v3".to_string())].into());
    cms.replace("one", &PostParams::default(), &unconditional)
        .await
        .unwrap();
    assert_eq!(cms.get("one").await.unwrap().data.unwrap()["k"], "v3");

    // generateName.
    let generated: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "gen-"}})).unwrap();
    let g = cms
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let gname = g.metadata.name.unwrap();
    assert!(gname.starts_with("gen-") && gname.len() == 9, "{gname}");

    // Delete, then NotFound.
    cms.delete("one", &DeleteParams::default()).await.unwrap();
    let (code, reason, msg) = api_code(cms.get("one").await.unwrap_err());
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    assert_eq!(msg, "configmaps \"one\" not found");

    // The namespace must exist.
    let missing: Api<ConfigMap> = Api::namespaced(client.clone(), "nope");
    let (code, _, msg) = api_code(
        missing
            .create(&PostParams::default(), &cm("x", json!({}), json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 404, "{msg}");
    assert!(msg.contains("namespaces \"nope\" not found"), "{msg}");
}

#[tokio::test]
async fn list_with_selectors_limit_and_continue() {
    let c = common::cluster().await;
    let client = c.client();
    make_ns(&client, "a").await;
    make_ns(&client, "b").await;
    let in_a: Api<ConfigMap> = Api::namespaced(client.clone(), "a");
    let in_b: Api<ConfigMap> = Api::namespaced(client.clone(), "b");
    for i in 0..7 {
        let tier = if i % 2 == 0 { "front" } else { "back" };
        in_a.create(
            &PostParams::default(),
            &cm(
                &format!("cm{i}"),
                json!({"tier": tier, "n": i.to_string()}),
                json!({}),
            ),
        )
        .await
        .unwrap();
    }
    in_b.create(
        &PostParams::default(),
        &cm("other", json!({"tier": "front"}), json!({})),
    )
    .await
    .unwrap();

    let names = |l: kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        l.items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect()
    };
    let sel = |s: &str| ListParams::default().labels(s);
    assert_eq!(
        names(in_a.list(&sel("tier=front")).await.unwrap()),
        ["cm0", "cm2", "cm4", "cm6"]
    );
    assert_eq!(
        names(in_a.list(&sel("tier!=front")).await.unwrap()),
        ["cm1", "cm3", "cm5"]
    );
    assert_eq!(
        names(in_a.list(&sel("n in (1,2),tier")).await.unwrap()),
        ["cm1", "cm2"]
    );
    assert_eq!(
        names(in_a.list(&sel("n notin (0,1,2,3,4)")).await.unwrap()),
        ["cm5", "cm6"]
    );
    assert_eq!(
        names(in_a.list(&sel("!n")).await.unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        names(
            in_a.list(&ListParams::default().fields("metadata.name=cm3"))
                .await
                .unwrap()
        ),
        ["cm3"]
    );
    // All namespaces, with a field selector on the namespace.
    let all: Api<ConfigMap> = Api::all(client.clone());
    assert_eq!(names(all.list(&sel("tier=front")).await.unwrap()).len(), 5);
    assert_eq!(
        names(
            all.list(&ListParams::default().fields("metadata.namespace=b"))
                .await
                .unwrap()
        ),
        ["other"]
    );
    // Bad selectors are a 400.
    let (code, _, _) = api_code(all.list(&sel("a in b")).await.unwrap_err());
    assert_eq!(code, 400);
    let (code, _, _) = api_code(
        all.list(&ListParams::default().fields("spec.x=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 400);

    // Pages of 3: every object exactly once, in order, with continue tokens.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut lp = ListParams::default().limit(3);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = in_a.list(&lp).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 3);
        token = page.metadata.continue_.clone().filter(|t| !t.is_empty());
        seen.extend(names(page));
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, (0..7).map(|i| format!("cm{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn watch_from_a_resource_version_sees_events_in_order() {
    let c = common::cluster().await;
    let client = c.client();
    make_ns(&client, "w").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "w");
    let first = cms
        .create(
            &PostParams::default(),
            &cm("x", json!({}), json!({"v": "0"})),
        )
        .await
        .unwrap();
    let start_rv = first.metadata.resource_version.clone().unwrap();
    for v in 1..=3 {
        cms.patch(
            "x",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": v.to_string()}})),
        )
        .await
        .unwrap();
    }
    cms.create(&PostParams::default(), &cm("y", json!({}), json!({})))
        .await
        .unwrap();
    cms.delete("x", &DeleteParams::default()).await.unwrap();

    let stream = cms
        .watch(&WatchParams::default().timeout(2), &start_rv)
        .await
        .unwrap();
    let events: Vec<WatchEvent<ConfigMap>> = stream.take(5).try_collect().await.unwrap();
    let summary: Vec<(String, String, Option<String>)> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Added(o) => (
                "ADDED".into(),
                o.metadata.name.clone().unwrap(),
                o.data.as_ref().and_then(|d| d.get("v").cloned()),
            ),
            WatchEvent::Modified(o) => (
                "MODIFIED".into(),
                o.metadata.name.clone().unwrap(),
                o.data.as_ref().and_then(|d| d.get("v").cloned()),
            ),
            WatchEvent::Deleted(o) => ("DELETED".into(), o.metadata.name.clone().unwrap(), None),
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    let expect =
        |t: &str, n: &str, v: Option<&str>| (t.to_string(), n.to_string(), v.map(String::from));
    assert_eq!(
        summary,
        vec![
            expect("MODIFIED", "x", Some("1")),
            expect("MODIFIED", "x", Some("2")),
            expect("MODIFIED", "x", Some("3")),
            expect("ADDED", "y", None),
            expect("DELETED", "x", None),
        ]
    );
    // Resource versions increase strictly along the stream.
    let rvs: Vec<u64> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => o
                .metadata
                .resource_version
                .clone()
                .unwrap()
                .parse()
                .unwrap(),
            _ => 0,
        })
        .collect();
    assert!(rvs.windows(2).all(|w| w[0] < w[1]), "{rvs:?}");

    // Watching with rv "0" starts with the current state; bookmarks come when asked for, and
    // the stream ends at timeoutSeconds.
    let stream = cms
        .watch(
            &WatchParams {
                bookmarks: true,
                ..WatchParams::default().timeout(1)
            },
            "0",
        )
        .await
        .unwrap();
    let all: Vec<WatchEvent<ConfigMap>> = stream.try_collect().await.unwrap();
    assert!(matches!(&all[0], WatchEvent::Added(o) if o.metadata.name.as_deref() == Some("y")));
    assert!(
        all.iter().any(|e| matches!(e, WatchEvent::Bookmark(_))),
        "{all:?}"
    );

    // A live watch sees a change made after it started.
    let mut live = cms
        .watch(
            &WatchParams::default().timeout(10),
            &cms.list(&ListParams::default())
                .await
                .unwrap()
                .metadata
                .resource_version
                .unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    cms.patch(
        "y",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"live": "yes"}})),
    )
    .await
    .unwrap();
    match live.next().await {
        Some(Ok(WatchEvent::Modified(o))) => assert_eq!(o.data.unwrap()["live"], "yes"),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
}

#[tokio::test]
async fn compacted_resource_version_is_gone() {
    let c = devcluster::DevCluster::start(devcluster::Config {
        history_limit: 4,
        ..Default::default()
    })
    .await
    .unwrap();
    let client = c.client();
    make_ns(&client, "g").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "g");
    let first = cms
        .create(&PostParams::default(), &cm("x", json!({}), json!({})))
        .await
        .unwrap();
    for v in 0..10 {
        cms.patch(
            "x",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": v.to_string()}})),
        )
        .await
        .unwrap();
    }
    let old = first.metadata.resource_version.unwrap();
    let mut stream = cms
        .watch(&WatchParams::default().timeout(5), &old)
        .await
        .unwrap()
        .boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(e))) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
            assert!(
                e.message.contains("too old resource version"),
                "{}",
                e.message
            );
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
}

#[tokio::test]
async fn dry_run_stores_nothing() {
    let c = common::cluster().await;
    let client = c.client();
    make_ns(&client, "d").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "d");
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let before = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version;
    let out = cms
        .create(&dry, &cm("ghost", json!({}), json!({"a": "1"})))
        .await
        .unwrap();
    assert_eq!(out.metadata.name.as_deref(), Some("ghost"));
    assert_eq!(api_code(cms.get("ghost").await.unwrap_err()).0, 404);

    let real = cms
        .create(
            &PostParams::default(),
            &cm("real", json!({}), json!({"a": "1"})),
        )
        .await
        .unwrap();
    let rv = real.metadata.resource_version.clone();
    let patched = cms
        .patch(
            "real",
            &PatchParams::default().dry_run(),
            &Patch::Merge(json!({"data": {"a": "2"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["a"], "2");
    let applied = cms
        .patch(
            "real",
            &PatchParams::apply("tester").force().dry_run(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "real"}, "data": {"a": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(applied.data.unwrap()["a"], "3");
    cms.delete(
        "real",
        &DeleteParams {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let now = cms.get("real").await.unwrap();
    assert_eq!(now.data.unwrap()["a"], "1");
    assert_eq!(
        now.metadata.resource_version, rv,
        "no rv bump from dry runs"
    );
    let after = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version;
    assert_eq!(
        after.unwrap().parse::<u64>().unwrap(),
        before.unwrap().parse::<u64>().unwrap() + 1,
        "only the real create moved the counter"
    );
}

fn deployment(replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": "nginx"}]}},
        },
        "status": {"replicas": 99},
    }))
    .unwrap()
}

#[tokio::test]
async fn status_and_scale_subresources() {
    let c = common::cluster().await;
    let client = c.client();
    make_ns(&client, "s").await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "s");
    let d = deps
        .create(&PostParams::default(), &deployment(2))
        .await
        .unwrap();
    assert!(
        d.status.is_none_or(|s| s.replicas.is_none()),
        "status is not set by create"
    );

    // The status subresource changes only the status (and does not bump generation).
    let st = deps
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"replicas": 2, "readyReplicas": 1}, "spec": {"replicas": 7}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(st.status.as_ref().unwrap().ready_replicas, Some(1));
    assert_eq!(st.spec.as_ref().unwrap().replicas, Some(2));
    assert_eq!(st.metadata.generation, Some(1));

    // The main resource ignores status changes; a spec change bumps generation. (Simulated
    // controllers may write the status concurrently, so a 409 means: read again and retry.)
    let m = loop {
        let mut main = deps.get("web").await.unwrap();
        main.status
            .get_or_insert_with(Default::default)
            .ready_replicas = Some(42);
        main.spec.as_mut().unwrap().replicas = Some(3);
        match deps.replace("web", &PostParams::default(), &main).await {
            Ok(m) => break m,
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => panic!("{e}"),
        }
    };
    assert_ne!(m.status.unwrap().ready_replicas, Some(42));
    assert_eq!(m.spec.as_ref().unwrap().replicas, Some(3));
    assert_eq!(m.metadata.generation, Some(2));
    // A metadata-only change keeps the generation.
    let l = deps
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(l.metadata.generation, Some(2));

    // Scale.
    let scale = deps.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(3));
    assert_eq!(
        scale.status.as_ref().unwrap().selector.as_deref(),
        Some("app=web")
    );
    let scaled = deps
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(scaled.spec.unwrap().replicas, Some(5));
    assert_eq!(
        deps.get("web").await.unwrap().spec.unwrap().replicas,
        Some(5)
    );
}

fn crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}},
            }],
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn crd_serves_its_resource_until_deleted() {
    let c = common::cluster().await;
    let client = c.client();
    make_ns(&client, "c").await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd()).await.unwrap();
    let got = crds.get("widgets.example.com").await.unwrap();
    let conds = got.status.unwrap().conditions.unwrap();
    for t in ["NamesAccepted", "Established"] {
        assert!(
            conds.iter().any(|c| c.type_ == t && c.status == "True"),
            "{t} missing: {conds:?}"
        );
    }

    // Discovery lists it at once.
    let discovery = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .unwrap();
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget"))
        .expect("Widget is discoverable");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);

    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "c", &ar);
    let w: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"size": 3}, "status": {"ignored": true},
    }))
    .unwrap();
    let created = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert!(
        created.data.get("status").is_none(),
        "status dropped on create"
    );
    let st = widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}})),
        )
        .await
        .unwrap();
    assert_eq!(st.data["status"]["ready"], true);
    assert_eq!(
        widgets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    // Invalid CRDs are refused with causes.
    let mut bad = crd();
    bad.metadata.name = Some("wrong.example.com".into());
    let (code, reason, msg) =
        api_code(crds.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (422, "Invalid"), "{msg}");

    // Deleting the CRD removes the resource and its objects.
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    let (code, _, _) = api_code(widgets.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(code, 404);
    crds.create(&PostParams::default(), &crd()).await.unwrap();
    let again: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "c",
        &ApiResource::from_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget")),
    );
    assert!(
        again
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "old objects are gone"
    );
}

#[tokio::test]
async fn finalizers_hold_deletion() {
    let c = common::cluster().await;
    let client = c.client();
    make_ns(&client, "f").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "f");
    let mut obj = cm("held", json!({}), json!({}));
    obj.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &obj).await.unwrap();
    cms.delete("held", &DeleteParams::default()).await.unwrap();
    let still = cms.get("held").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_code(cms.get("held").await.unwrap_err()).0, 404);
}

#[tokio::test]
async fn requests_without_a_valid_token_get_401() {
    let c = common::cluster().await;
    let yaml = std::fs::read_to_string(c.kubeconfig_path()).unwrap();
    let bad_yaml = yaml.replace(c.admin_token(), "not-the-token");
    assert_ne!(yaml, bad_yaml);
    let kc = kube::config::Kubeconfig::from_yaml(&bad_yaml).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let bad = kube::Client::try_from(cfg).unwrap();
    let (code, reason, _) = api_code(
        Api::<Namespace>::all(bad)
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (401, "Unauthorized"));
    // The kubeconfig works as-is with kube-rs.
    let kc = kube::config::Kubeconfig::read_from(c.kubeconfig_path()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let good = kube::Client::try_from(cfg).unwrap();
    Api::<Namespace>::all(good)
        .list(&ListParams::default())
        .await
        .unwrap();
}

/// Sends a raw request and returns (status code, body as JSON).
async fn raw(
    client: &kube::Client,
    method: &str,
    uri: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .body(kube::client::Body::from(body))
        .unwrap();
    let resp = client.send(req).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_input_gets_status_errors() {
    let c = common::cluster().await;
    let client = c.client();
    make_ns(&client, "bad").await;
    let url = "/api/v1/namespaces/bad/configmaps";
    let check = |(code, body): (u16, Value), want: u16, reason: &str| {
        assert_eq!(code, want, "{body}");
        assert_eq!(body["kind"], "Status", "{body}");
        assert_eq!(body["apiVersion"], "v1");
        assert_eq!(body["reason"], reason, "{body}");
        assert_eq!(body["code"], want);
        body
    };
    check(
        raw(
            &client,
            "POST",
            url,
            "application/json",
            b"{not json".to_vec(),
        )
        .await,
        400,
        "BadRequest",
    );
    let b = check(
        raw(
            &client,
            "POST",
            url,
            "application/json",
            br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#.to_vec(),
        )
        .await,
        400,
        "BadRequest",
    );
    assert!(
        b["message"].as_str().unwrap().contains("does not match"),
        "{b}"
    );
    check(
        raw(
            &client,
            "POST",
            url,
            "application/json",
            br#"{"metadata":{"name":"x","namespace":"other"}}"#.to_vec(),
        )
        .await,
        400,
        "BadRequest",
    );
    let b = check(
        raw(
            &client,
            "POST",
            url,
            "application/json",
            br#"{"metadata":{"name":"Bad_Name"}}"#.to_vec(),
        )
        .await,
        422,
        "Invalid",
    );
    assert_eq!(b["details"]["causes"][0]["field"], "metadata.name", "{b}");
    assert_eq!(b["details"]["kind"], "ConfigMap");
    let b = check(
        raw(
            &client,
            "POST",
            &format!("{url}?fieldValidation=Strict"),
            "application/json",
            br#"{"metadata":{"name":"s"},"spce":{}}"#.to_vec(),
        )
        .await,
        400,
        "BadRequest",
    );
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"spce\""),
        "{b}"
    );
    let huge = format!(
        "{{\"metadata\":{{\"name\":\"huge\"}},\"data\":{{\"a\":\"{}\"}}}}",
        "x".repeat(4 << 20)
    );
    check(
        raw(&client, "POST", url, "application/json", huge.into_bytes()).await,
        413,
        "RequestEntityTooLarge",
    );
    check(
        raw(&client, "POST", url, "text/plain", b"{}".to_vec()).await,
        415,
        "UnsupportedMediaType",
    );
    check(
        raw(
            &client,
            "PATCH",
            &format!("{url}/nothere"),
            "application/merge-patch+json",
            b"{}".to_vec(),
        )
        .await,
        404,
        "NotFound",
    );
    check(
        raw(
            &client,
            "POST",
            &format!("{url}/x"),
            "application/json",
            b"{}".to_vec(),
        )
        .await,
        405,
        "MethodNotAllowed",
    );
    check(
        raw(
            &client,
            "GET",
            "/apis/nope.example.com/v1/things",
            "application/json",
            vec![],
        )
        .await,
        404,
        "NotFound",
    );
    check(
        raw(
            &client,
            "PATCH",
            &format!("{url}/x"),
            "application/apply-patch+yaml",
            b"apiVersion: v1\nkind: ConfigMap\n".to_vec(),
        )
        .await,
        400,
        "BadRequest",
    );
    check(
        raw(
            &client,
            "PATCH",
            &format!("{url}/x?fieldManager=t"),
            "application/apply-patch+yaml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata: [unclosed".to_vec(),
        )
        .await,
        400,
        "BadRequest",
    );
    // Unknown fields in patches: refused under Strict, a Warning header otherwise.
    raw(
        &client,
        "POST",
        url,
        "application/json",
        br#"{"metadata":{"name":"p"}}"#.to_vec(),
    )
    .await;
    check(
        raw(
            &client,
            "PATCH",
            &format!("{url}/p?fieldValidation=Strict"),
            "application/merge-patch+json",
            br#"{"dta":{}}"#.to_vec(),
        )
        .await,
        400,
        "BadRequest",
    );
    check(
        raw(
            &client,
            "PATCH",
            &format!("{url}/p?fieldValidation=Strict"),
            "application/json-patch+json",
            br#"[{"op":"add","path":"/dta","value":{}}]"#.to_vec(),
        )
        .await,
        400,
        "BadRequest",
    );
    let req = http::Request::builder()
        .method("PATCH")
        .uri(format!("{url}/p"))
        .header("content-type", "application/merge-patch+json")
        .body(kube::client::Body::from(br#"{"dta":{"a":"b"}}"#.to_vec()))
        .unwrap();
    let resp = client.send(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let warning = resp
        .headers()
        .get("warning")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(warning.as_deref(), Some(r#"299 - "unknown field \"dta\"""#));
    // After all that, the server still answers.
    let (code, _) = raw(&client, "GET", url, "application/json", vec![]).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn deletecollection_and_namespace_termination() {
    let c = common::cluster().await;
    let client = c.client();
    make_ns(&client, "dc").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "dc");
    for (name, tier) in [("a", "x"), ("b", "x"), ("c", "y")] {
        cms.create(
            &PostParams::default(),
            &cm(name, json!({"tier": tier}), json!({})),
        )
        .await
        .unwrap();
    }
    let deleted = cms
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("tier=x"),
        )
        .await
        .unwrap();
    let names: Vec<String> = deleted
        .left()
        .expect("the deleted objects are returned")
        .items
        .into_iter()
        .map(|c| c.metadata.name.unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    let left: Vec<String> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.metadata.name.unwrap())
        .collect();
    assert_eq!(left, ["c"]);

    // A namespace whose content has a finalizer stays Terminating and refuses new content;
    // it disappears once the finalizer is removed.
    let mut held = cm("held", json!({}), json!({}));
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete("dc", &DeleteParams::default())
        .await
        .unwrap();
    let ns = namespaces.get("dc").await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    assert_eq!(
        api_code(cms.get("c").await.unwrap_err()).0,
        404,
        "content without finalizers is gone"
    );
    let (code, reason, msg) = api_code(
        cms.create(&PostParams::default(), &cm("new", json!({}), json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (403, "Forbidden"), "{msg}");
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    // The namespace controller removes the namespace after the last object went away; wait for
    // that with a watch rather than a sleep.
    let rv = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    if namespaces.get_opt("dc").await.unwrap().is_some() {
        let mut events = namespaces
            .watch(
                &WatchParams::default()
                    .fields("metadata.name=dc")
                    .timeout(20),
                &rv,
            )
            .await
            .unwrap()
            .boxed();
        loop {
            match events.next().await {
                Some(Ok(WatchEvent::Deleted(_))) => break,
                Some(Ok(_)) => continue,
                other => panic!("expected the namespace to be deleted, got {other:?}"),
            }
        }
    }
    assert!(namespaces.get_opt("dc").await.unwrap().is_none());
}

#[tokio::test]
async fn watch_with_a_label_selector_sees_objects_enter_and_leave() {
    let c = common::cluster().await;
    let client = c.client();
    make_ns(&client, "sel").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "sel");
    cms.create(
        &PostParams::default(),
        &cm("x", json!({"team": "a"}), json!({})),
    )
    .await
    .unwrap();
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let label = |team: &str| Patch::Merge(json!({"metadata": {"labels": {"team": team}}}));
    cms.patch("x", &PatchParams::default(), &label("b"))
        .await
        .unwrap(); // enters
    cms.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await
    .unwrap(); // changes inside
    cms.patch("x", &PatchParams::default(), &label("c"))
        .await
        .unwrap(); // leaves
    cms.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "w"}})),
    )
    .await
    .unwrap(); // changes outside: not seen
    cms.patch("x", &PatchParams::default(), &label("b"))
        .await
        .unwrap(); // enters again
    let events: Vec<WatchEvent<ConfigMap>> = cms
        .watch(&WatchParams::default().labels("team=b").timeout(1), &rv)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Added(_) => Some("ADDED"),
            WatchEvent::Modified(_) => Some("MODIFIED"),
            WatchEvent::Deleted(_) => Some("DELETED"),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED", "ADDED"]);
}

#[tokio::test]
async fn crd_versions_serve_the_same_objects() {
    let c = common::cluster().await;
    let client = c.client();
    make_ns(&client, "mv").await;
    let mut two = crd();
    let mut v2 = two.spec.versions[0].clone();
    v2.name = "v2".into();
    v2.storage = false;
    two.spec.versions.push(v2);
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &two)
        .await
        .unwrap();
    let gvk = |v: &str| ApiResource::from_gvk(&GroupVersionKind::gvk("example.com", v, "Widget"));
    let as_v1: Api<DynamicObject> = Api::namespaced_with(client.clone(), "mv", &gvk("v1"));
    let as_v2: Api<DynamicObject> = Api::namespaced_with(client.clone(), "mv", &gvk("v2"));
    let w: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"n": 1},
    }))
    .unwrap();
    as_v1.create(&PostParams::default(), &w).await.unwrap();
    let got = as_v2.get("w").await.unwrap();
    assert_eq!(got.types.unwrap().api_version, "example.com/v2");
    assert_eq!(got.data["spec"]["n"], 1);
    let listed = as_v2.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        listed.items[0].types.as_ref().unwrap().api_version,
        "example.com/v2"
    );
    let first: Vec<WatchEvent<DynamicObject>> = as_v2
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .take(1)
        .try_collect()
        .await
        .unwrap();
    match &first[0] {
        WatchEvent::Added(o) => assert_eq!(o.types.as_ref().unwrap().api_version, "example.com/v2"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        as_v1.get("w").await.unwrap().types.unwrap().api_version,
        "example.com/v1"
    );
}
