//! `capstan health`, run as the built binary on manifest files.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh directory for one test under Cargo's per-target scratch space.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("cli_health")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn capstan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capstan"))
        .arg("health")
        .args(args)
        .env("CAPSTAN_LOG", "warn")
        .output()
        .expect("capstan runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop, generation: 4}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template: {metadata: {labels: {app: web}}, spec: {containers: [{name: web, image: "shop/web:1.8"}]}}
status:
  observedGeneration: 4
  replicas: 4
  updatedReplicas: 3
  readyReplicas: 3
  availableReplicas: 3
---
# A comment-only document between objects is skipped.
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config, namespace: shop}
data: {LOG_LEVEL: info}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: web-7d9f-abcde, namespace: shop}
  spec: {restartPolicy: Always, containers: [{name: web, image: "shop/web:1.9"}]}
  status:
    phase: Pending
    containerStatuses:
    - name: web
      ready: false
      restartCount: 0
      image: shop/web:1.9
      imageID: ""
      state:
        waiting:
          reason: ImagePullBackOff
          message: |-
            Back-off pulling image "shop/web:1.9"
- apiVersion: v1
  kind: PersistentVolumeClaim
  metadata: {name: uploads, namespace: shop}
  spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
  status: {phase: Bound, capacity: {storage: 1Gi}}
"#;

const JSON_FILE: &str = r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
  "metadata": {"name": "shop-viewer"}, "rules": []}"#;

#[test]
fn json_output_lists_every_object_with_its_health_or_null() {
    let dir = scratch("json");
    write(&dir.join("app.yaml"), APP);
    write(&dir.join("role.json"), JSON_FILE);
    let out = capstan(&[
        dir.join("app.yaml").to_str().unwrap(),
        dir.join("role.json").to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got: Value = serde_json::from_str(&stdout(&out)).expect("stdout is JSON");
    assert_eq!(
        got,
        json!([
            {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "shop", "name": "web",
             "health": {"status": "Progressing",
                        "message": "Waiting for rollout to finish: 1 old replicas are pending termination..."}},
            {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "shop", "name": "web-config",
             "health": null},
            {"apiVersion": "v1", "kind": "Pod", "namespace": "shop", "name": "web-7d9f-abcde",
             "health": {"status": "Degraded",
                        "message": "container web: ImagePullBackOff: Back-off pulling image \"shop/web:1.9\""}},
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "shop", "name": "uploads",
             "health": {"status": "Healthy", "message": null}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "namespace": null,
             "name": "shop-viewer", "health": null}
        ])
    );
}

#[test]
fn table_output_has_one_aligned_line_per_object() {
    let dir = scratch("table");
    write(&dir.join("app.yaml"), APP);
    let out = capstan(&[dir.join("app.yaml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    let header = lines[0];
    assert!(header.starts_with("KIND"), "{text}");
    let health_col = header.find("HEALTH").unwrap();
    let message_col = header.find("MESSAGE").unwrap();
    let expect = [
        (
            "Deployment",
            "shop",
            "web",
            "Progressing",
            "Waiting for rollout to finish",
        ),
        ("ConfigMap", "shop", "web-config", "-", ""),
        (
            "Pod",
            "shop",
            "web-7d9f-abcde",
            "Degraded",
            "container web: ImagePullBackOff",
        ),
        ("PersistentVolumeClaim", "shop", "uploads", "Healthy", ""),
    ];
    for (line, (kind, ns, name, health, message)) in lines[1..].iter().zip(expect) {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&words[..4], &[kind, ns, name, health], "{line}");
        // Columns line up under the header.
        assert_eq!(
            &line[health_col..health_col + health.len()],
            health,
            "{text}"
        );
        if !message.is_empty() {
            assert!(line[message_col..].starts_with(message), "{text}");
        }
    }
}

#[test]
fn lua_dir_overrides_builtins_and_covers_custom_kinds() {
    let dir = scratch("lua");
    write(&dir.join("app.yaml"), APP);
    write(
        &dir.join("checks/apps/Deployment/health.lua"),
        r#"
-- Release policy: a rollout still terminating old pods counts as done.
hs = {}
if obj.status.updatedReplicas == obj.spec.replicas then
  hs.status = "Healthy"
  hs.message = "all " .. obj.spec.replicas .. " replicas updated"
else
  hs.status = "Progressing"
end
return hs
"#,
    );
    write(
        &dir.join("checks/core/ConfigMap/health.lua"),
        r#"return {status = obj.data.LOG_LEVEL == "debug" and "Degraded" or "Healthy", message = "log level " .. obj.data.LOG_LEVEL}"#,
    );
    let out = capstan(&[
        dir.join("app.yaml").to_str().unwrap(),
        "--lua-dir",
        dir.join("checks").to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        got[0]["health"],
        json!({"status": "Healthy", "message": "all 3 replicas updated"})
    );
    assert_eq!(
        got[1]["health"],
        json!({"status": "Healthy", "message": "log level info"})
    );
    // No script for Pods: the built-in rule still applies.
    assert_eq!(got[2]["health"]["status"], "Degraded");
}

#[test]
fn a_yaml_error_names_the_file_document_and_line_and_prints_nothing() {
    let dir = scratch("bad-yaml");
    write(&dir.join("good.yaml"), APP);
    let bad = dir.join("bad.yaml");
    write(
        &bad,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n   labels: {}\n",
    );
    let out = capstan(&[
        dir.join("good.yaml").to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(&bad.display().to_string()), "{err}");
    assert!(err.contains("document 2"), "{err}");
    assert!(err.contains("line 9"), "{err}");
    assert_eq!(stdout(&out), "", "nothing printed for a failed run");
}

#[test]
fn objects_without_kind_and_broken_scripts_are_errors() {
    let dir = scratch("bad-input");
    let file = dir.join("nokind.yaml");
    write(
        &file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nmetadata: {name: b}\n",
    );
    let out = capstan(&[file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("nokind.yaml: document 2: missing or non-string field kind"),
        "{err}"
    );

    let list = dir.join("list.yaml");
    write(
        &list,
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n- just a string\n",
    );
    let out = capstan(&[list.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("document 1, item 2"),
        "{}",
        stderr(&out)
    );

    write(&dir.join("app.yaml"), APP);
    let script = dir.join("checks/apps/Deployment/health.lua");
    write(&script, "hs = {\nreturn hs\n");
    let out = capstan(&[
        dir.join("app.yaml").to_str().unwrap(),
        "--lua-dir",
        dir.join("checks").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(&script.display().to_string()), "{err}");
    assert!(err.contains("does not compile"), "{err}");

    let out = capstan(&[dir.join("missing.yaml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.yaml"), "{}", stderr(&out));
}
