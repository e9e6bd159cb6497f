//! Render tests against the real tools: `kubectl kustomize`, Helm's engine (libhelm_c through
//! the helm-python-sdk binding), jrsonnet; path escapes, bad input and the cache.

mod common;

use capstan_render::{
    DirectoryOptions, HelmOptions, HelmParameter, JsonnetOptions, JsonnetVar, KustomizeOptions,
    KustomizePatch, KustomizeReplica, KustomizeSelector, RenderError, SourceOptions, Tool,
};
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn source(path: &str) -> SourceOptions {
    SourceOptions {
        path: path.into(),
        ..SourceOptions::default()
    }
}

// ---------------------------------------------------------------- Kustomize

#[test]
fn kustomize_base_and_overlays_match_kubectl_kustomize() {
    let fx = Fixture::new();
    let r = renderer();
    for path in [
        "kustomize/base",
        "kustomize/overlays/dev",
        "kustomize/overlays/prod",
    ] {
        let got = r.render(&fx.repo(), &source(path), &ctx(), None).unwrap();
        assert_eq!(got.tool, Tool::Kustomize, "{path}");
        let want = kubectl_kustomize(&fx.repo().join(path));
        assert!(!want.is_empty());
        assert_eq!(got.objects, want, "{path}");
    }
    // The overlays really differ (the comparison is not trivially equal).
    let prod = r
        .render(&fx.repo(), &source("kustomize/overlays/prod"), &ctx(), None)
        .unwrap();
    let deploy = prod
        .objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .unwrap();
    assert_eq!(deploy["spec"]["replicas"], 5);
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );
}

#[test]
fn kustomize_overrides_match_the_equivalent_hand_written_overlay() {
    let fx = Fixture::new();
    let mut opts = source("kustomize/overlays/dev");
    opts.kustomize = Some(KustomizeOptions {
        name_prefix: Some("team-".into()),
        name_suffix: Some("-v2".into()),
        namespace: Some("override-ns".into()),
        common_labels: BTreeMap::from([("team".into(), "platform".into())]),
        common_annotations: BTreeMap::from([("owner".into(), "sre".into())]),
        images: vec!["nginx=registry.local/nginx:1.26".into()],
        replicas: vec![KustomizeReplica {
            name: "web".into(),
            count: json!("3"),
        }],
        patches: vec![
            KustomizePatch {
                path: Some("../../patches/add-annotation.yaml".into()),
                ..KustomizePatch::default()
            },
            KustomizePatch {
                patch: Some(
                    "- op: add\n  path: /metadata/annotations/inline\n  value: json6902\n".into(),
                ),
                target: Some(KustomizeSelector {
                    kind: Some("Service".into()),
                    ..KustomizeSelector::default()
                }),
                ..KustomizePatch::default()
            },
        ],
        components: vec!["../../components/monitoring".into()],
    });
    let got = renderer().render(&fx.repo(), &opts, &ctx(), None).unwrap();
    let want = kubectl_kustomize(&fx.repo().join("kustomize/reference-overrides"));
    assert_eq!(got.objects, want);
    assert!(names(&got.objects).contains(&"Deployment/team-dev-web-v2".to_string()));
    // The repository was not written to.
    assert!(
        !fx.repo()
            .join("kustomize/overlays/dev/kustomization.yaml.orig")
            .exists()
    );
    let tree_files: Vec<_> = std::fs::read_dir(fx.repo().join("kustomize/overlays/dev"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(tree_files.len(), 2, "{tree_files:?}");
}

#[test]
fn kustomize_resource_outside_the_repository_is_refused() {
    let fx = Fixture::new();
    // A real kustomization outside the repository, that `kubectl kustomize` would happily read.
    let outside = fx.outside().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("kustomization.yaml"), "resources: [cm.yaml]\n").unwrap();
    std::fs::write(
        outside.join("cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: stolen}\n",
    )
    .unwrap();
    let app = fx.repo().join("kustomize/escape");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("kustomization.yaml"),
        "resources:\n- ../../../outside\n",
    )
    .unwrap();
    assert_eq!(
        names(&kubectl_kustomize(&app)),
        ["ConfigMap/stolen"],
        "the unconfined tool reads it"
    );
    let err = renderer()
        .render(&fx.repo(), &source("kustomize/escape"), &ctx(), None)
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RenderError::PathEscape { .. }), "{msg}");
    assert!(
        msg.contains("resources of kustomize/escape/kustomization.yaml")
            && msg.contains("\"../../../outside\"")
            && msg.contains("above the repository root"),
        "{msg}"
    );

    // A generator file that is a symlink to a file outside the repository.
    let app = fx.repo().join("kustomize/symlinked");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("kustomization.yaml"),
        "configMapGenerator:\n- name: leak\n  files:\n  - passwd\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", app.join("passwd")).unwrap();
    let msg = renderer()
        .render(&fx.repo(), &source("kustomize/symlinked"), &ctx(), None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("configMapGenerator of kustomize/symlinked/kustomization.yaml")
            && msg.contains("symlink to /etc/passwd"),
        "{msg}"
    );

    // A remote base.
    let app = fx.repo().join("kustomize/remote");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("kustomization.yaml"),
        "resources:\n- https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v5.0.0\n",
    )
    .unwrap();
    let msg = renderer()
        .render(&fx.repo(), &source("kustomize/remote"), &ctx(), None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("remote resources are not supported"), "{msg}");
}

#[test]
fn kustomize_errors_are_reported_with_the_tool_message() {
    let fx = Fixture::new();
    let app = fx.repo().join("kustomize/bad");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("kustomization.yaml"),
        "resources:\n- missing.yaml\n",
    )
    .unwrap();
    let msg = renderer()
        .render(&fx.repo(), &source("kustomize/bad"), &ctx(), None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(
            "resources of kustomize/bad/kustomization.yaml \"missing.yaml\" does not exist"
        ),
        "{msg}"
    );
    std::fs::write(app.join("kustomization.yaml"), "resources: [cm.yaml]\n").unwrap();
    std::fs::write(app.join("cm.yaml"), "apiVersion: v1\nkind: ConfigMap\n").unwrap();
    let msg = renderer()
        .render(&fx.repo(), &source("kustomize/bad"), &ctx(), None)
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("kustomize build failed:"), "{msg}");
    assert!(msg.contains("missing metadata.name"), "{msg}");
}

// ---------------------------------------------------------------- Helm

/// The objects Helm's engine produces when called directly, filtered the way Capstan
/// documents (no NOTES.txt, no test hooks unless kept, CRDs unless skipped).
fn direct_objects(
    chart: &std::path::Path,
    values: Value,
    options: Value,
    crds: bool,
    tests: bool,
) -> Vec<Value> {
    let (templates, crd_texts) = helm_engine_direct(chart, &values, &options);
    let mut objects = Vec::new();
    if crds {
        for text in crd_texts {
            objects.extend(parse_stream(&text));
        }
    }
    for (name, text) in templates {
        if name.ends_with("NOTES.txt") {
            continue;
        }
        for obj in parse_stream(&text) {
            let hook = obj["metadata"]["annotations"]["helm.sh/hook"]
                .as_str()
                .unwrap_or("");
            if !tests && hook.split(',').any(|h| h.trim().starts_with("test")) {
                continue;
            }
            objects.push(obj);
        }
    }
    sorted(objects)
}

#[test]
fn helm_dev_values_and_parameters_match_the_engine_called_directly() {
    let fx = Fixture::new();
    let mut opts = source("helm/web");
    opts.helm = Some(HelmOptions {
        value_files: vec!["envs/values-dev.yaml".into()],
        values: Some("service:\n  port: 8443\nimage:\n  tag: \"9.9\"\n".into()),
        parameters: vec![
            HelmParameter {
                name: "image.tag".into(),
                value: "1.27".into(),
                force_string: false,
            },
            HelmParameter {
                name: "servers[1].port".into(),
                value: "9090".into(),
                force_string: false,
            },
            HelmParameter {
                name: "extraLabels.version".into(),
                value: "2".into(),
                force_string: true,
            },
            HelmParameter {
                name: "extraLabels.note".into(),
                value: "a,b".into(),
                force_string: false,
            },
        ],
        release_name: Some("rel".into()),
        ..HelmOptions::default()
    });
    let got = renderer().render(&fx.repo(), &opts, &ctx(), None).unwrap();
    assert_eq!(got.tool, Tool::Helm);
    // Helm's precedence, written out: values-dev.yaml < values < --set, lists replaced by the
    // file and then one element updated by the indexed --set; `version` stays a string.
    let user_values = json!({
        "env": "dev",
        "image": {"tag": 1.27},
        "extraLabels": {"tier": "dev", "version": "2", "note": "a,b"},
        "servers": [{"name": "dev-a", "port": 8080}, {"name": "dev-b", "port": 9090}],
        "service": {"port": 8443},
    });
    let want = direct_objects(
        &fx.repo().join("helm/web"),
        user_values,
        json!({"name": "rel", "namespace": "default", "revision": 1, "is_install": true, "kube_version": "v1.31.2"}),
        true,
        false,
    );
    assert_eq!(got.objects, want);
    let deploy = got
        .objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .unwrap();
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.27");
    assert_eq!(container["ports"][1]["containerPort"], 9090);
    assert_eq!(container["env"][1]["value"], "v1.31.2");
    assert_eq!(deploy["metadata"]["labels"]["version"], "2");
    assert_eq!(deploy["metadata"]["name"], "rel-web");
    // Hooks kept with their annotations, the test hook and NOTES.txt dropped, the CRD and the
    // vendored subchart present, `lookup` found nothing.
    let all = names(&got.objects);
    assert!(all.contains(&"Job/rel-web-migrate".to_string()), "{all:?}");
    assert!(!all.contains(&"Pod/rel-web-test".to_string()), "{all:?}");
    assert!(all.contains(&"CustomResourceDefinition/widgets.example.com".to_string()));
    assert!(all.contains(&"ConfigMap/rel-cache".to_string()));
    assert!(!all.iter().any(|n| n.contains("lookup-found")));
    let job = got.objects.iter().find(|o| o["kind"] == "Job").unwrap();
    assert_eq!(
        job["metadata"]["annotations"]["helm.sh/hook"],
        "pre-install,pre-upgrade"
    );
}

#[test]
fn helm_prod_values_capabilities_skip_crds_and_keep_tests() {
    let fx = Fixture::new();
    let mut opts = source("helm/web");
    opts.helm = Some(HelmOptions {
        value_files: vec!["envs/values-prod.yaml".into()],
        skip_crds: true,
        skip_tests: Some(false),
        api_versions: vec!["monitoring.coreos.com/v1".into()],
        ..HelmOptions::default()
    });
    let got = renderer().render(&fx.repo(), &opts, &ctx(), None).unwrap();
    let want = direct_objects(
        &fx.repo().join("helm/web"),
        json!({"env": "prod", "replicaCount": 4, "cache": {"size": "1Gi"}, "extraLabels": {"tier": "prod"}}),
        json!({"name": "web", "namespace": "default", "revision": 1, "is_install": true,
               "kube_version": "v1.31.2", "api_versions": ["monitoring.coreos.com/v1"]}),
        false,
        true,
    );
    assert_eq!(got.objects, want);
    let all = names(&got.objects);
    assert!(all.contains(&"Pod/web-web-test".to_string()), "{all:?}");
    assert!(
        all.contains(&"ServiceMonitor/web-web".to_string()),
        "{all:?}"
    );
    assert!(
        !all.iter()
            .any(|n| n.starts_with("CustomResourceDefinition/"))
    );
    let cache = got
        .objects
        .iter()
        .find(|o| o["metadata"]["name"] == "web-cache")
        .unwrap();
    assert_eq!(cache["data"]["size"], "1Gi");
}

#[test]
fn helm_subchart_condition_and_values_object() {
    let fx = Fixture::new();
    let mut opts = source("helm/web");
    opts.helm = Some(HelmOptions {
        values: Some("replicaCount: 7\n".into()),
        // valuesObject takes the place of values.
        values_object: Some(json!({"cache": {"enabled": false}, "replicaCount": 2})),
        ..HelmOptions::default()
    });
    let got = renderer().render(&fx.repo(), &opts, &ctx(), None).unwrap();
    let all = names(&got.objects);
    assert!(!all.contains(&"ConfigMap/web-cache".to_string()), "{all:?}");
    let deploy = got
        .objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .unwrap();
    assert_eq!(deploy["spec"]["replicas"], 2);
}

#[test]
fn helm_template_error_is_reported_with_the_template_and_line() {
    let fx = Fixture::new();
    let err = renderer()
        .render(&fx.repo(), &source("helm/broken"), &ctx(), None)
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RenderError::Helm(_)), "{msg}");
    assert!(msg.contains("broken/templates/cm.yaml:6"), "{msg}");
    assert!(msg.contains("nil pointer"), "{msg}");
}

#[test]
fn helm_value_files_are_confined_to_the_repository() {
    let fx = Fixture::new();
    std::fs::write(fx.outside().join("x"), "replicaCount: 99\n").unwrap();
    let mut opts = source("helm/web");
    opts.helm = Some(HelmOptions {
        value_files: vec!["../../../x".into()],
        ..HelmOptions::default()
    });
    let msg = renderer()
        .render(&fx.repo(), &opts, &ctx(), None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        "helm.valueFiles[0] \"../../../x\" is outside the repository: `..` leads above the repository root"
    );
    std::os::unix::fs::symlink("/etc/passwd", fx.repo().join("helm/web/envs/passwd.yaml")).unwrap();
    opts.helm = Some(HelmOptions {
        value_files: vec!["envs/passwd.yaml".into()],
        ..HelmOptions::default()
    });
    let msg = renderer()
        .render(&fx.repo(), &opts, &ctx(), None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        "helm.valueFiles[0] \"envs/passwd.yaml\" is outside the repository: it resolves through a symlink to /etc/passwd"
    );
    std::fs::remove_file(fx.repo().join("helm/web/envs/passwd.yaml")).unwrap();
    opts.helm = Some(HelmOptions {
        value_files: vec!["/etc/passwd".into()],
        ..HelmOptions::default()
    });
    let msg = renderer()
        .render(&fx.repo(), &opts, &ctx(), None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("absolute paths are not allowed"), "{msg}");
    // A missing values file fails, unless told to ignore it.
    opts.helm = Some(HelmOptions {
        value_files: vec!["envs/values-nope.yaml".into()],
        ..HelmOptions::default()
    });
    let msg = renderer()
        .render(&fx.repo(), &opts, &ctx(), None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("\"envs/values-nope.yaml\" does not exist"),
        "{msg}"
    );
    opts.helm.as_mut().unwrap().ignore_missing_value_files = true;
    assert!(renderer().render(&fx.repo(), &opts, &ctx(), None).is_ok());
}

#[test]
fn helm_renders_concurrently_from_several_threads() {
    let fx = Fixture::new();
    let r = renderer();
    let mut opts = source("helm/web");
    opts.helm = Some(HelmOptions {
        value_files: vec!["envs/values-prod.yaml".into()],
        ..HelmOptions::default()
    });
    let first = r.render(&fx.repo(), &opts, &ctx(), None).unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    (0..10)
                        .map(|_| r.render(&fx.repo(), &opts, &ctx(), None).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for got in h.join().unwrap() {
                assert_eq!(got, first);
            }
        }
    });
    assert_eq!(r.stats().renders, 41);
}

/// A one-file-per-path HTTP server for the chart repository test.
fn serve(
    files: Vec<(String, Vec<u8>)>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).is_err() || header == "\r\n" || header.is_empty() {
                    break;
                }
            }
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            let found = files.iter().find(|(p, _)| *p == path);
            let response = match found {
                Some((_, body)) => {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(body);
                    r
                }
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = stream.write_all(&response);
        }
    });
    (format!("http://{addr}"), hits)
}

#[test]
fn helm_dependency_from_a_chart_repository_is_fetched_into_a_scratch_copy() {
    let fx = Fixture::new();
    // Package a small chart with Helm's own packager, as a chart repository would serve it.
    let dep_src = fx.outside().join("redis");
    std::fs::create_dir_all(dep_src.join("templates")).unwrap();
    std::fs::write(
        dep_src.join("Chart.yaml"),
        "apiVersion: v2\nname: redis\nversion: 0.2.0\n",
    )
    .unwrap();
    std::fs::write(dep_src.join("values.yaml"), "port: 6379\n").unwrap();
    std::fs::write(
        dep_src.join("templates/svc.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}-redis\nspec:\n  ports:\n  - port: {{ .Values.port }}\n",
    )
    .unwrap();
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys; from helm_python import chart; print(chart.package(sys.argv[1], destination=sys.argv[2]))",
        ])
        .arg(&dep_src)
        .arg(fx.outside())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tgz = std::fs::read(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    let index = "apiVersion: v1\nentries:\n  redis:\n  - name: redis\n    version: 0.3.0\n    urls: [redis-0.3.0.tgz]\n  - name: redis\n    version: 0.2.0\n    urls: [redis-0.2.0.tgz]\n";
    let (base, hits) = serve(vec![
        ("/charts/index.yaml".into(), index.as_bytes().to_vec()),
        ("/charts/redis-0.2.0.tgz".into(), tgz),
    ]);

    let chart = fx.repo().join("helm/with-dep");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        format!("apiVersion: v2\nname: with-dep\nversion: 1.0.0\ndependencies:\n- name: redis\n  version: \"~0.2\"\n  repository: {base}/charts\n"),
    )
    .unwrap();
    std::fs::write(
        chart.join("Chart.lock"),
        format!("dependencies:\n- name: redis\n  repository: {base}/charts\n  version: 0.2.0\ndigest: sha256:0\ngenerated: \"2024-01-01T00:00:00Z\"\n"),
    )
    .unwrap();
    std::fs::write(
        chart.join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-main\n",
    )
    .unwrap();
    let got = renderer()
        .render(&fx.repo(), &source("helm/with-dep"), &ctx(), None)
        .unwrap();
    assert_eq!(
        names(&got.objects),
        ["ConfigMap/web-main", "Service/web-redis"]
    );
    assert_eq!(got.objects[1]["spec"]["ports"][0]["port"], 6379);
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    assert!(
        !chart.join("charts").exists(),
        "the repository tree is not written to"
    );

    // An unreachable repository is a clear error.
    std::fs::write(
        chart.join("Chart.lock"),
        "dependencies:\n- name: redis\n  repository: http://127.0.0.1:9/charts\n  version: 0.2.0\n",
    )
    .unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: with-dep\nversion: 1.0.0\ndependencies:\n- name: redis\n  version: \"~0.2\"\n  repository: http://127.0.0.1:9/charts\n",
    )
    .unwrap();
    let msg = renderer()
        .render(&fx.repo(), &source("helm/with-dep"), &ctx(), None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("chart dependency redis: GET http://127.0.0.1:9/charts/index.yaml"),
        "{msg}"
    );
}

// ---------------------------------------------------------------- Directory and Jsonnet

#[test]
fn directory_reads_multi_documents_lists_json_and_ignores_non_manifests() {
    let fx = Fixture::new();
    let r = renderer();
    let got = r
        .render(&fx.repo(), &source("directory/app"), &ctx(), None)
        .unwrap();
    assert_eq!(got.tool, Tool::Directory);
    assert_eq!(
        names(&got.objects),
        [
            "ConfigMap/first",
            "ConfigMap/second",
            "ServiceAccount/from-list-a",
            "ServiceAccount/from-list-b",
            "Deployment/from-json"
        ]
    );

    let mut opts = source("directory/app");
    opts.directory = Some(DirectoryOptions {
        recurse: true,
        ..DirectoryOptions::default()
    });
    let got = r.render(&fx.repo(), &opts, &ctx(), None).unwrap();
    assert_eq!(
        names(&got.objects),
        [
            "ConfigMap/deeper",
            "ConfigMap/first",
            "ConfigMap/second",
            "Secret/nested-secret",
            "ServiceAccount/from-list-a",
            "ServiceAccount/from-list-b",
            "Deployment/from-json"
        ]
    );

    opts.directory = Some(DirectoryOptions {
        recurse: true,
        exclude: Some("sub/deeper/*".into()),
        include: Some("{*.yaml,*.yml}".into()),
        ..DirectoryOptions::default()
    });
    let got = r.render(&fx.repo(), &opts, &ctx(), None).unwrap();
    assert_eq!(
        names(&got.objects),
        [
            "ConfigMap/first",
            "ConfigMap/second",
            "Secret/nested-secret",
            "ServiceAccount/from-list-a",
            "ServiceAccount/from-list-b"
        ]
    );
}

#[test]
fn broken_yaml_names_the_file_and_line_and_nothing_is_returned() {
    let fx = Fixture::new();
    std::fs::write(
        fx.repo().join("directory/app/zz-broken.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad: value\n  labels: {}\n",
    )
    .unwrap();
    let err = renderer()
        .render(&fx.repo(), &source("directory/app"), &ctx(), None)
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("directory/app/zz-broken.yaml line 9: "),
        "{msg}"
    );
    match err {
        RenderError::Parse {
            line: Some(line), ..
        } => assert_eq!(line, 9),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn source_path_escapes_symlinks_and_missing_paths_are_refused() {
    let fx = Fixture::new();
    let r = renderer();
    let msg = r
        .render(&fx.repo(), &source("../x"), &ctx(), None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        "source path \"../x\" is outside the repository: `..` leads above the repository root"
    );
    let msg = r
        .render(&fx.repo(), &source("/etc"), &ctx(), None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("absolute paths are not allowed"), "{msg}");
    let msg = r
        .render(&fx.repo(), &source("nope/here"), &ctx(), None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        "source path \"nope/here\" does not exist in the repository"
    );

    std::os::unix::fs::symlink("/etc", fx.repo().join("etc-link")).unwrap();
    let msg = r
        .render(&fx.repo(), &source("etc-link"), &ctx(), None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        "source path \"etc-link\" is outside the repository: it resolves through a symlink to /etc"
    );
    std::os::unix::fs::symlink("/etc/hostname", fx.repo().join("directory/app/host.yaml")).unwrap();
    let msg = r
        .render(&fx.repo(), &source("directory/app"), &ctx(), None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("directory/app/host.yaml") && msg.contains("symlink to /etc/hostname"),
        "{msg}"
    );
}

fn jsonnet_opts() -> SourceOptions {
    let mut opts = source("jsonnet/app");
    opts.directory = Some(DirectoryOptions {
        jsonnet: Some(JsonnetOptions {
            ext_vars: vec![
                JsonnetVar {
                    name: "env".into(),
                    value: "staging".into(),
                    code: false,
                },
                JsonnetVar {
                    name: "labels".into(),
                    value: "{team: 'a' + 'b'}".into(),
                    code: true,
                },
            ],
            tlas: vec![
                JsonnetVar {
                    name: "replicas".into(),
                    value: "2 + 1".into(),
                    code: true,
                },
                JsonnetVar {
                    name: "team".into(),
                    value: "platform".into(),
                    code: false,
                },
            ],
            libs: vec!["jsonnet/lib".into()],
        }),
        ..DirectoryOptions::default()
    });
    opts
}

#[test]
fn jsonnet_ext_vars_tlas_and_libs() {
    let fx = Fixture::new();
    let got = renderer()
        .render(&fx.repo(), &jsonnet_opts(), &ctx(), None)
        .unwrap();
    assert_eq!(got.tool, Tool::Jsonnet);
    assert_eq!(
        got.objects,
        [
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "env-staging"}, "data": {"replicas": "3", "team": "platform"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "from-nested-list"}, "data": {}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "yaml-beside-jsonnet"}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "jsonnet-web", "labels": {"team": "ab"}}, "spec": {"replicas": 3}}),
        ]
    );
}

#[test]
fn jsonnet_errors_and_escapes_are_reported() {
    let fx = Fixture::new();
    // Without the lib path the import fails, naming the file.
    let mut opts = jsonnet_opts();
    opts.directory
        .as_mut()
        .unwrap()
        .jsonnet
        .as_mut()
        .unwrap()
        .libs
        .clear();
    let msg = renderer()
        .render(&fx.repo(), &opts, &ctx(), None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("jsonnet jsonnet/app/main.jsonnet:"),
        "{msg}"
    );
    assert!(msg.contains("k.libsonnet"), "{msg}");
    // A lib path outside the repository.
    let mut opts = jsonnet_opts();
    opts.directory
        .as_mut()
        .unwrap()
        .jsonnet
        .as_mut()
        .unwrap()
        .libs = vec!["../lib".into()];
    let msg = renderer()
        .render(&fx.repo(), &opts, &ctx(), None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("directory.jsonnet.libs[0] \"../lib\" is outside the repository"),
        "{msg}"
    );
    // An import that climbs out of the repository.
    std::fs::write(fx.outside().join("secret.libsonnet"), "{a: 1}").unwrap();
    std::fs::write(
        fx.repo().join("jsonnet/app/evil.jsonnet"),
        "local s = import '../../../secret.libsonnet'; {apiVersion: 'v1', kind: 'ConfigMap', metadata: {name: 'x'}, data: s}",
    )
    .unwrap();
    let msg = renderer()
        .render(&fx.repo(), &jsonnet_opts(), &ctx(), None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("jsonnet/app/evil.jsonnet") && msg.contains("is outside the repository"),
        "{msg}"
    );
}

// ---------------------------------------------------------------- Cache

#[test]
fn a_second_render_of_the_same_key_comes_from_the_cache_without_running_anything() {
    let fx = Fixture::new();
    let r = renderer();
    let opts = source("kustomize/overlays/prod");
    let first = r
        .render(&fx.repo(), &opts, &ctx(), Some("repo@abc123"))
        .unwrap();
    assert!(!first.from_cache);
    // Change the tree under the same key: a cache hit does not look at it at all.
    std::fs::remove_dir_all(fx.repo().join("kustomize")).unwrap();
    let second = r
        .render(&fx.repo(), &opts, &ctx(), Some("repo@abc123"))
        .unwrap();
    assert!(second.from_cache);
    assert_eq!(second.objects, first.objects);
    assert_eq!(second.tool, Tool::Kustomize);
    assert_eq!(r.stats().renders, 1);
    assert_eq!(r.stats().cache_hits, 1);
    // Another key, other options or another context miss the cache (and here fail, because
    // the tree is gone): the key covers them all.
    assert!(
        r.render(&fx.repo(), &opts, &ctx(), Some("repo@def456"))
            .is_err()
    );
    let mut other_ctx = ctx();
    other_ctx.namespace = "elsewhere".into();
    assert!(
        r.render(&fx.repo(), &opts, &other_ctx, Some("repo@abc123"))
            .is_err()
    );
    // Without a key nothing is cached.
    assert!(r.render(&fx.repo(), &opts, &ctx(), None).is_err());
    assert_eq!(r.stats().renders, 4);
}

#[test]
fn a_failed_render_is_not_cached() {
    let fx = Fixture::new();
    let r = renderer();
    let err = r.render(&fx.repo(), &source("helm/broken"), &ctx(), Some("k"));
    assert!(err.is_err());
    assert!(
        r.render(&fx.repo(), &source("helm/broken"), &ctx(), Some("k"))
            .is_err()
    );
    assert_eq!(r.stats().renders, 2);
    assert_eq!(r.stats().cache_hits, 0);
}

// ---------------------------------------------------------------- Limits and sharing

#[test]
fn the_renderer_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<capstan_render::Renderer>();
}

fn helm_library_path() -> std::path::PathBuf {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import helm_python, os; print(os.path.dirname(helm_python.__file__))",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm-python-sdk is installed by scripts/setup"
    );
    std::path::Path::new(String::from_utf8(out.stdout).unwrap().trim()).join("lib/libhelm_c.so")
}

fn limited_renderer(timeout_ms: u64, max_output_bytes: usize) -> capstan_render::Renderer {
    capstan_render::Renderer::new(capstan_render::RendererConfig {
        helm: capstan_render::HelmEngineChoice::Library(helm_library_path()),
        timeout: std::time::Duration::from_millis(timeout_ms),
        max_output_bytes,
        ..capstan_render::RendererConfig::default()
    })
    .unwrap()
}

#[test]
fn helm_renders_are_bounded_by_the_timeout_and_the_output_limit() {
    let fx = Fixture::new();
    let chart = fx.repo().join("helm/slow");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: slow\nversion: 0.1.0\n",
    )
    .unwrap();
    // 25 million template iterations: seconds of work, no output.
    std::fs::write(
        chart.join("templates/cm.yaml"),
        "{{- range until 5000 }}{{ range until 5000 }}{{ end }}{{ end }}\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: slow\n",
    )
    .unwrap();
    let err = limited_renderer(300, 1 << 20)
        .render(&fx.repo(), &source("helm/slow"), &ctx(), None)
        .unwrap_err();
    assert_eq!(err.to_string(), "helm timed out after 300ms");

    let chart = fx.repo().join("helm/big");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: big\nversion: 0.1.0\n",
    )
    .unwrap();
    std::fs::write(
        chart.join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n  blob: {{ repeat 200000 \"x\" | quote }}\n",
    )
    .unwrap();
    let err = limited_renderer(60_000, 10_000)
        .render(&fx.repo(), &source("helm/big"), &ctx(), None)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "helm output exceeds the limit of 10000 bytes"
    );
    // The same chart renders with the default limit.
    assert!(
        limited_renderer(60_000, 64 << 20)
            .render(&fx.repo(), &source("helm/big"), &ctx(), None)
            .is_ok()
    );
}

#[test]
fn a_directory_larger_than_the_output_limit_is_refused() {
    let fx = Fixture::new();
    let err = limited_renderer(60_000, 200)
        .render(&fx.repo(), &source("directory/app"), &ctx(), None)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("output exceeds the limit of 200 bytes"),
        "{err}"
    );
}

#[test]
fn helm_chart_symlinks_out_of_the_repository_are_refused() {
    let fx = Fixture::new();
    std::os::unix::fs::symlink("/etc/passwd", fx.repo().join("helm/web/passwd.txt")).unwrap();
    let msg = renderer()
        .render(&fx.repo(), &source("helm/web"), &ctx(), None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        "chart file \"helm/web/passwd.txt\" is outside the repository: it resolves through a symlink to /etc/passwd"
    );
}

#[test]
fn helm_file_dependency_is_copied_from_the_repository() {
    let fx = Fixture::new();
    let lib = fx.repo().join("helm/libchart");
    std::fs::create_dir_all(lib.join("templates")).unwrap();
    std::fs::write(
        lib.join("Chart.yaml"),
        "apiVersion: v2\nname: libchart\nversion: 0.1.0\n",
    )
    .unwrap();
    std::fs::write(
        lib.join("templates/sa.yaml"),
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {{ .Release.Name }}-lib\n",
    )
    .unwrap();
    let app = fx.repo().join("helm/uses-lib");
    std::fs::create_dir_all(app.join("templates")).unwrap();
    std::fs::write(
        app.join("Chart.yaml"),
        "apiVersion: v2\nname: uses-lib\nversion: 0.1.0\ndependencies:\n- name: libchart\n  version: 0.1.0\n  repository: file://../libchart\n",
    )
    .unwrap();
    let got = renderer()
        .render(&fx.repo(), &source("helm/uses-lib"), &ctx(), None)
        .unwrap();
    assert_eq!(names(&got.objects), ["ServiceAccount/web-lib"]);
    assert!(
        !app.join("charts").exists(),
        "the repository tree is not written to"
    );
    // A file:// dependency outside the repository is refused.
    std::fs::write(
        app.join("Chart.yaml"),
        "apiVersion: v2\nname: uses-lib\nversion: 0.1.0\ndependencies:\n- name: libchart\n  version: 0.1.0\n  repository: file://../../../../libchart\n",
    )
    .unwrap();
    let msg = renderer()
        .render(&fx.repo(), &source("helm/uses-lib"), &ctx(), None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("dependency libchart repository") && msg.contains("outside the repository"),
        "{msg}"
    );
}
