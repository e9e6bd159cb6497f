//! The sync plan: phases, waves, kind order, hooks (with Helm's spellings), prune order and
//! its safety catches, sync options.

use capstan_engine::diff::DiffStatus;
use capstan_engine::plan::{
    Action, HookDeletePolicy, ObjectRef, Phase, PlanError, PlanOptions, PropagationPolicy, Stage,
    plan,
};
use serde_json::{Value, json};

fn obj(api_version: &str, kind: &str, name: &str, annotations: Value) -> Value {
    json!({"apiVersion": api_version, "kind": kind,
        "metadata": {"name": name, "annotations": annotations}})
}

fn tracked(mut o: Value, ns: &str) -> Value {
    o["metadata"]["namespace"] = json!(ns);
    o
}

fn opts() -> PlanOptions {
    PlanOptions::new("capstan", "shop", "shop")
}

/// "Stage wave Kind name" per step, for readable assertions on order.
fn summary(p: &capstan_engine::plan::SyncPlan) -> Vec<String> {
    p.steps
        .iter()
        .map(|s| {
            format!(
                "{:?} {} {} {}",
                s.stage, s.wave, s.object_ref.kind, s.object_ref.name
            )
        })
        .collect()
}

#[test]
fn waves_then_kind_order_then_name() {
    let desired = vec![
        obj("apps/v1", "Deployment", "web", json!({})),
        obj("v1", "Service", "web", json!({})),
        obj("v1", "ConfigMap", "b", json!({})),
        obj("v1", "ConfigMap", "a", json!({})),
        obj("example.com/v1", "Widget", "w", json!({})),
        obj(
            "batch/v1",
            "Job",
            "migrate",
            json!({"argocd.argoproj.io/sync-wave": "-1"}),
        ),
        obj(
            "networking.k8s.io/v1",
            "Ingress",
            "web",
            json!({"capstan.dev/sync-wave": "2"}),
        ),
        obj("v1", "Namespace", "extra", json!({})),
        obj(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "widgets.example.com",
            json!({}),
        ),
        obj("v1", "ServiceAccount", "web", json!({})),
    ];
    let p = plan(&desired, &[], &opts()).unwrap();
    assert_eq!(
        summary(&p),
        vec![
            "Sync -1 Job migrate",
            "Sync 0 Namespace extra",
            "Sync 0 ServiceAccount web",
            "Sync 0 ConfigMap a",
            "Sync 0 ConfigMap b",
            "Sync 0 CustomResourceDefinition widgets.example.com",
            "Sync 0 Service web",
            "Sync 0 Deployment web",
            "Sync 0 Widget w",
            "Sync 2 Ingress web",
        ]
    );
    assert_eq!(
        p.groups(),
        vec![(Stage::Sync, -1), (Stage::Sync, 0), (Stage::Sync, 2)]
    );
}

#[test]
fn capstan_wave_wins_over_argo_cd_and_bad_waves_are_errors() {
    let both = obj(
        "v1",
        "ConfigMap",
        "c",
        json!({"capstan.dev/sync-wave": "3", "argocd.argoproj.io/sync-wave": "-7"}),
    );
    let p = plan(&[both], &[], &opts()).unwrap();
    assert_eq!(p.steps[0].wave, 3);
    let bad = obj(
        "v1",
        "ConfigMap",
        "c",
        json!({"argocd.argoproj.io/sync-wave": "soon"}),
    );
    let err = plan(&[bad], &[], &opts()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ConfigMap shop/c: annotation argocd.argoproj.io/sync-wave: \"soon\" is not an integer"
    );
}

#[test]
fn every_applied_object_gets_namespace_and_tracking_id() {
    let desired = vec![
        obj("apps/v1", "Deployment", "web", json!({})),
        obj(
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            "reader",
            json!({}),
        ),
        tracked(obj("v1", "ConfigMap", "elsewhere", json!({})), "other"),
    ];
    let p = plan(&desired, &[], &opts()).unwrap();
    let by_name = |n: &str| p.steps.iter().find(|s| s.object_ref.name == n).unwrap();
    let web = &by_name("web").object;
    assert_eq!(web["metadata"]["namespace"], "shop");
    assert_eq!(
        web["metadata"]["annotations"]["capstan.dev/tracking-id"],
        "capstan_shop:apps/Deployment:shop/web"
    );
    let role = &by_name("reader").object;
    assert!(role["metadata"].get("namespace").is_none());
    assert_eq!(
        role["metadata"]["annotations"]["capstan.dev/tracking-id"],
        "capstan_shop:rbac.authorization.k8s.io/ClusterRole:/reader"
    );
    assert_eq!(by_name("elsewhere").object_ref.namespace, "other");
    // The tracking id round-trips through the shared parser.
    let id = capstan_api::TrackingId::parse(
        web["metadata"]["annotations"]["capstan.dev/tracking-id"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(id.is_owned_by("capstan", "shop"));
    // Cluster-scoped kinds the caller declares (a CRD's) get no namespace either.
    let mut o = opts();
    o.cluster_scoped
        .insert(("example.com".into(), "ClusterWidget".into()));
    let p = plan(
        &[obj("example.com/v1", "ClusterWidget", "cw", json!({}))],
        &[],
        &o,
    )
    .unwrap();
    assert_eq!(p.steps[0].object_ref.namespace, "");
}

#[test]
fn hooks_run_in_their_phases_with_delete_policies() {
    let desired = vec![
        obj("apps/v1", "Deployment", "web", json!({})),
        obj(
            "batch/v1",
            "Job",
            "migrate",
            json!({"argocd.argoproj.io/hook": "PreSync",
            "argocd.argoproj.io/hook-delete-policy": "HookSucceeded"}),
        ),
        obj(
            "batch/v1",
            "Job",
            "smoke",
            json!({"capstan.dev/hook": "PostSync"}),
        ),
        obj(
            "batch/v1",
            "Job",
            "notify",
            json!({"capstan.dev/hook": "SyncFail,PostSync",
            "capstan.dev/hook-delete-policy": "HookSucceeded,HookFailed"}),
        ),
        obj("v1", "Pod", "seed", json!({"capstan.dev/hook": "Sync"})),
        obj(
            "v1",
            "ConfigMap",
            "ignored",
            json!({"capstan.dev/hook": "Skip"}),
        ),
    ];
    let p = plan(&desired, &[], &opts()).unwrap();
    assert_eq!(
        summary(&p),
        vec![
            "PreSync 0 Job migrate",
            "Sync 0 Pod seed",
            "Sync 0 Deployment web",
            "PostSync 0 Job notify",
            "PostSync 0 Job smoke",
            "SyncFail 0 Job notify",
        ]
    );
    let hook = |stage: Stage, name: &str| {
        p.steps
            .iter()
            .find(|s| s.stage == stage && s.object_ref.name == name)
            .unwrap()
            .hook
            .clone()
            .unwrap()
    };
    assert_eq!(
        hook(Stage::PreSync, "migrate").delete_policies,
        vec![HookDeletePolicy::HookSucceeded]
    );
    assert_eq!(
        hook(Stage::PostSync, "smoke").delete_policies,
        vec![HookDeletePolicy::BeforeHookCreation]
    );
    assert_eq!(hook(Stage::SyncFail, "notify").phase, Phase::SyncFail);
    assert_eq!(
        hook(Stage::PostSync, "notify").delete_policies,
        vec![
            HookDeletePolicy::HookSucceeded,
            HookDeletePolicy::HookFailed
        ]
    );
    assert!(p.steps.iter().all(|s| s.object_ref.name != "ignored"));
    assert_eq!(p.skipped.len(), 1);
    assert_eq!(p.skipped[0].object_ref.name, "ignored");
}

#[test]
fn helm_hooks_map_onto_phases() {
    let desired = vec![
        obj(
            "batch/v1",
            "Job",
            "pre",
            json!({"helm.sh/hook": "pre-install,pre-upgrade",
            "helm.sh/hook-weight": "-5", "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded"}),
        ),
        obj(
            "batch/v1",
            "Job",
            "post",
            json!({"helm.sh/hook": "post-install"}),
        ),
        obj("v1", "Pod", "test", json!({"helm.sh/hook": "test"})),
        obj(
            "batch/v1",
            "Job",
            "cleanup",
            json!({"helm.sh/hook": "pre-delete"}),
        ),
        obj(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "crd",
            json!({"helm.sh/hook": "crd-install"}),
        ),
        // Argo CD's hook annotation wins over Helm's.
        obj(
            "batch/v1",
            "Job",
            "both",
            json!({"helm.sh/hook": "post-install", "argocd.argoproj.io/hook": "PreSync"}),
        ),
    ];
    let p = plan(&desired, &[], &opts()).unwrap();
    assert_eq!(
        summary(&p),
        vec![
            "PreSync -5 Job pre",
            "PreSync 0 Job both",
            "Sync 0 CustomResourceDefinition crd",
            "PostSync 0 Job post",
        ]
    );
    let pre = p.steps[0].hook.clone().unwrap();
    assert_eq!(pre.phase, Phase::PreSync);
    assert_eq!(
        pre.delete_policies,
        vec![
            HookDeletePolicy::BeforeHookCreation,
            HookDeletePolicy::HookSucceeded
        ]
    );
    assert!(
        p.steps[2].hook.is_none(),
        "crd-install is an ordinary object"
    );
    let skipped: Vec<&str> = p
        .skipped
        .iter()
        .map(|s| s.object_ref.name.as_str())
        .collect();
    assert_eq!(skipped, vec!["test", "cleanup"]);

    let mut o = opts();
    o.run_helm_tests = true;
    let p = plan(&desired, &[], &o).unwrap();
    assert!(
        p.steps
            .iter()
            .any(|s| s.object_ref.name == "test" && s.stage == Stage::PostSync)
    );
}

#[test]
fn hooks_with_generate_name_are_created() {
    let mut job = obj(
        "batch/v1",
        "Job",
        "x",
        json!({"capstan.dev/hook": "PreSync"}),
    );
    job["metadata"].as_object_mut().unwrap().remove("name");
    job["metadata"]["generateName"] = json!("migrate-");
    let p = plan(&[job.clone()], &[], &opts()).unwrap();
    assert_eq!(p.steps[0].action, Action::Create);
    assert_eq!(p.steps[0].object_ref.name, "migrate-");
    // An ordinary object cannot do that.
    job["metadata"]["annotations"] = json!({});
    let err = plan(&[job], &[], &opts()).unwrap_err();
    assert!(err.to_string().contains("only hooks may use"), "{err}");
}

#[test]
fn prune_goes_after_sync_in_reverse_wave_and_kind_order() {
    let desired = vec![obj("apps/v1", "Deployment", "web", json!({}))];
    let live = vec![
        tracked(obj("apps/v1", "Deployment", "web", json!({})), "shop"),
        tracked(obj("v1", "ConfigMap", "old-config", json!({})), "shop"),
        tracked(obj("apps/v1", "Deployment", "old-api", json!({})), "shop"),
        tracked(
            obj(
                "v1",
                "Service",
                "old-api",
                json!({"argocd.argoproj.io/sync-wave": "5"}),
            ),
            "shop",
        ),
        tracked(obj("v1", "Namespace", "old-ns", json!({})), ""),
        tracked(
            obj(
                "batch/v1",
                "Job",
                "old-hook",
                json!({"argocd.argoproj.io/hook": "PostSync"}),
            ),
            "shop",
        ),
        tracked(
            obj(
                "v1",
                "Secret",
                "last",
                json!({"capstan.dev/sync-options": "PruneLast=true"}),
            ),
            "shop",
        ),
    ];
    let mut o = opts();
    o.prune = true;
    o.sync_options = vec!["PrunePropagationPolicy=background".into()];
    let p = plan(&desired, &live, &o).unwrap();
    assert_eq!(
        summary(&p),
        vec![
            "Sync 0 Deployment web",
            "Prune 5 Service old-api",
            "Prune 0 Deployment old-api",
            "Prune 0 ConfigMap old-config",
            "Prune 0 Namespace old-ns",
            "PruneLast 0 Secret last",
        ]
    );
    assert!(p.steps[1..].iter().all(|s| s.action
        == Action::Prune {
            propagation: PropagationPolicy::Background
        }));

    // Pruning off: the same objects are only reported.
    let p = plan(&desired, &live, &opts()).unwrap();
    assert_eq!(summary(&p), vec!["Sync 0 Deployment web"]);
    assert_eq!(p.skipped.len(), 5);
    assert!(
        p.skipped
            .iter()
            .all(|s| s.reason.contains("requires pruning"))
    );
}

#[test]
fn prune_last_on_the_application_moves_every_prune_to_the_end() {
    let desired = vec![
        obj(
            "apps/v1",
            "Deployment",
            "web",
            json!({"capstan.dev/hook": "PostSync"}),
        ),
        obj("v1", "ConfigMap", "keep", json!({})),
    ];
    let live = vec![tracked(obj("v1", "ConfigMap", "gone", json!({})), "shop")];
    let mut o = opts();
    o.prune = true;
    o.sync_options = vec!["PruneLast=true".into()];
    let p = plan(&desired, &live, &o).unwrap();
    assert_eq!(
        summary(&p),
        vec![
            "Sync 0 ConfigMap keep",
            "PostSync 0 Deployment web",
            "PruneLast 0 ConfigMap gone"
        ]
    );
    assert_eq!(
        p.steps[2].action,
        Action::Prune {
            propagation: PropagationPolicy::Foreground
        }
    );
}

#[test]
fn prune_false_and_delete_false_keep_objects() {
    let live = vec![
        tracked(
            obj(
                "v1",
                "ConfigMap",
                "keep-prune",
                json!({"argocd.argoproj.io/sync-options": "Prune=false"}),
            ),
            "shop",
        ),
        tracked(
            obj(
                "v1",
                "PersistentVolumeClaim",
                "data",
                json!({"capstan.dev/sync-options": "Delete=false"}),
            ),
            "shop",
        ),
        tracked(obj("v1", "ConfigMap", "gone", json!({})), "shop"),
    ];
    let desired = vec![obj(
        "v1",
        "ConfigMap",
        "present",
        json!({"capstan.dev/sync-options": "Delete=false,Validate=false"}),
    )];
    let mut o = opts();
    o.prune = true;
    let p = plan(&desired, &live, &o).unwrap();
    assert_eq!(
        summary(&p),
        vec!["Sync 0 ConfigMap present", "Prune 0 ConfigMap gone"]
    );
    assert!(!p.steps[0].validate);
    let reasons: Vec<(&str, &str)> = p
        .skipped
        .iter()
        .map(|s| (s.object_ref.name.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("keep-prune", "not pruned: Prune=false"),
            ("data", "not pruned: Delete=false")
        ]
    );
    assert_eq!(
        p.retained,
        vec![
            ObjectRef::new("", "ConfigMap", "shop", "present"),
            ObjectRef::new("", "PersistentVolumeClaim", "shop", "data")
        ]
    );
    assert!(capstan_engine::plan::never_delete(&live[1]));
    assert!(!capstan_engine::plan::never_delete(&live[0]));
}

#[test]
fn empty_render_never_prunes_everything_unless_allowed() {
    let live = vec![
        tracked(obj("apps/v1", "Deployment", "web", json!({})), "shop"),
        tracked(obj("v1", "Service", "web", json!({})), "shop"),
    ];
    let mut o = opts();
    o.prune = true;
    let err = plan(&[], &live, &o).unwrap_err();
    assert!(matches!(err, PlanError::EmptyDesired { live: 2 }));
    assert!(
        err.to_string()
            .starts_with("refusing to prune all 2 live objects: the desired manifests are empty"),
        "{err}"
    );
    // Hooks alone do not make a render non-empty.
    let only_hook = vec![obj(
        "batch/v1",
        "Job",
        "h",
        json!({"capstan.dev/hook": "PreSync"}),
    )];
    assert!(plan(&only_hook, &live, &o).is_err());
    o.allow_empty = true;
    let p = plan(&[], &live, &o).unwrap();
    assert_eq!(
        summary(&p),
        vec!["Prune 0 Deployment web", "Prune 0 Service web"]
    );
}

#[test]
fn create_namespace_adds_an_untracked_namespace_first() {
    let desired = vec![
        obj("v1", "ConfigMap", "c", json!({})),
        obj(
            "batch/v1",
            "Job",
            "pre",
            json!({"capstan.dev/hook": "PreSync"}),
        ),
    ];
    let mut o = opts();
    o.sync_options = vec!["CreateNamespace=true".into()];
    o.destination_namespace_exists = false;
    let p = plan(&desired, &[], &o).unwrap();
    assert_eq!(
        summary(&p),
        vec![
            "Namespace 0 Namespace shop",
            "PreSync 0 Job pre",
            "Sync 0 ConfigMap c"
        ]
    );
    assert_eq!(
        p.steps[0].object,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    );
    // Already there, or not asked for: no step.
    o.destination_namespace_exists = true;
    assert_eq!(plan(&desired, &[], &o).unwrap().steps.len(), 2);
    o.destination_namespace_exists = false;
    o.sync_options.clear();
    assert_eq!(plan(&desired, &[], &o).unwrap().steps.len(), 2);
}

#[test]
fn apply_out_of_sync_only_skips_synced_objects() {
    let desired = vec![
        obj("v1", "ConfigMap", "same", json!({})),
        obj("v1", "ConfigMap", "changed", json!({})),
        obj("v1", "ConfigMap", "new", json!({})),
        obj(
            "batch/v1",
            "Job",
            "hook",
            json!({"capstan.dev/hook": "PostSync"}),
        ),
    ];
    let mut o = opts();
    o.diff_status.insert(
        ObjectRef::new("", "ConfigMap", "shop", "same"),
        DiffStatus::Synced,
    );
    o.diff_status.insert(
        ObjectRef::new("", "ConfigMap", "shop", "changed"),
        DiffStatus::OutOfSync,
    );
    o.diff_status.insert(
        ObjectRef::new("", "ConfigMap", "shop", "new"),
        DiffStatus::Missing,
    );
    assert_eq!(
        plan(&desired, &[], &o).unwrap().steps.len(),
        4,
        "without the option everything is applied"
    );
    o.sync_options = vec!["ApplyOutOfSyncOnly=true".into()];
    let p = plan(&desired, &[], &o).unwrap();
    assert_eq!(
        summary(&p),
        vec![
            "Sync 0 ConfigMap changed",
            "Sync 0 ConfigMap new",
            "PostSync 0 Job hook"
        ]
    );
    assert_eq!(p.skipped[0].object_ref.name, "same");
}

#[test]
fn apply_flavours_follow_sync_options() {
    let desired = vec![
        obj("v1", "ConfigMap", "a", json!({})),
        obj(
            "v1",
            "ConfigMap",
            "r",
            json!({"capstan.dev/sync-options": "Replace=true,Force=true"}),
        ),
        obj(
            "v1",
            "ConfigMap",
            "c",
            json!({"capstan.dev/sync-options": "ServerSideApply=false"}),
        ),
        obj(
            "v1",
            "ConfigMap",
            "f",
            json!({"capstan.dev/sync-options": "Force=true"}),
        ),
    ];
    let p = plan(&desired, &[], &opts()).unwrap();
    let action = |n: &str| {
        p.steps
            .iter()
            .find(|s| s.object_ref.name == n)
            .unwrap()
            .action
            .clone()
    };
    assert_eq!(
        action("a"),
        Action::Apply {
            server_side: true,
            force: false
        }
    );
    assert_eq!(action("r"), Action::Replace { force: true });
    assert_eq!(
        action("c"),
        Action::Apply {
            server_side: false,
            force: false
        }
    );
    assert_eq!(
        action("f"),
        Action::Apply {
            server_side: true,
            force: true
        }
    );
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let mut o = opts();
    o.sync_options = vec!["PrunePropagationPolicy=sideways".into()];
    let err = plan(&[], &[], &o).unwrap_err();
    assert_eq!(
        err.to_string(),
        "sync option \"PrunePropagationPolicy=sideways\": expected foreground, background or orphan"
    );
    let dup = vec![
        obj("v1", "ConfigMap", "c", json!({})),
        obj("v1", "ConfigMap", "c", json!({})),
    ];
    assert_eq!(
        plan(&dup, &[], &opts()).unwrap_err().to_string(),
        "ConfigMap shop/c is defined more than once in the desired manifests"
    );
    let bad_hook = obj("batch/v1", "Job", "j", json!({"capstan.dev/hook": "Later"}));
    assert!(
        plan(&[bad_hook], &[], &opts())
            .unwrap_err()
            .to_string()
            .contains("unknown hook \"Later\"")
    );
    let bad_policy = obj(
        "batch/v1",
        "Job",
        "j",
        json!({"helm.sh/hook": "post-install", "helm.sh/hook-delete-policy": "never"}),
    );
    assert!(
        plan(&[bad_policy], &[], &opts())
            .unwrap_err()
            .to_string()
            .contains("helm.sh/hook-delete-policy: unknown delete policy \"never\"")
    );
    let err = plan(
        &[json!({"apiVersion": "v1", "metadata": {"name": "x"}})],
        &[],
        &opts(),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "object #0 is invalid: kind is missing");
}

#[test]
fn hook_and_wave_helpers_agree_with_the_plan() {
    use capstan_engine::plan::{is_hook, sync_wave};
    assert!(is_hook(&obj(
        "batch/v1",
        "Job",
        "j",
        json!({"argocd.argoproj.io/hook": "PreSync"})
    )));
    assert!(is_hook(&obj(
        "batch/v1",
        "Job",
        "j",
        json!({"helm.sh/hook": "post-install"})
    )));
    assert!(is_hook(&obj(
        "v1",
        "ConfigMap",
        "c",
        json!({"capstan.dev/hook": "Skip"})
    )));
    assert!(!is_hook(&obj(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "c",
        json!({"helm.sh/hook": "crd-install"})
    )));
    assert!(!is_hook(&obj("v1", "ConfigMap", "c", json!({}))));
    assert_eq!(
        sync_wave(&obj(
            "v1",
            "ConfigMap",
            "c",
            json!({"argocd.argoproj.io/sync-wave": "-3"})
        ))
        .unwrap(),
        -3
    );
    assert_eq!(
        sync_wave(&obj(
            "batch/v1",
            "Job",
            "j",
            json!({"helm.sh/hook": "pre-install", "helm.sh/hook-weight": "7"})
        ))
        .unwrap(),
        7
    );
    // Helm's weight only orders hooks.
    assert_eq!(
        sync_wave(&obj(
            "v1",
            "ConfigMap",
            "c",
            json!({"helm.sh/hook-weight": "7"})
        ))
        .unwrap(),
        0
    );
    assert!(
        sync_wave(&obj(
            "v1",
            "ConfigMap",
            "c",
            json!({"capstan.dev/sync-wave": "x"})
        ))
        .is_err()
    );
}

#[test]
fn never_pruned_follows_the_object_over_the_application_options() {
    use capstan_engine::plan::never_pruned;
    let plain = obj("v1", "ConfigMap", "a", json!({}));
    let kept = obj(
        "v1",
        "ConfigMap",
        "b",
        json!({"capstan.dev/sync-options": "Prune=false"}),
    );
    let argo = obj(
        "v1",
        "ConfigMap",
        "c",
        json!({"argocd.argoproj.io/sync-options": "Delete=false"}),
    );
    let allowed = obj(
        "v1",
        "ConfigMap",
        "d",
        json!({"capstan.dev/sync-options": "Prune=true"}),
    );
    let broken = obj(
        "v1",
        "ConfigMap",
        "e",
        json!({"capstan.dev/sync-options": "Prune"}),
    );
    let none: Vec<String> = Vec::new();
    assert!(!never_pruned(&plain, &none));
    assert!(never_pruned(&kept, &none));
    assert!(never_pruned(&argo, &none));
    assert!(!never_pruned(&broken, &none));
    let app = vec!["Prune=false".to_string()];
    assert!(never_pruned(&plain, &app));
    // The object's own option wins over the application's.
    assert!(!never_pruned(&allowed, &app));
}
