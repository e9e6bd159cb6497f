//! `capstan repo add|list|rm` through the built binary against an in-process devcluster: the
//! Secrets have the shape the controller reads, and no secret value is ever printed.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};

const PASSWORD: &str = "pw-Canary-Repo-4mR9-never-printed";
const TOKEN: &str = "tok-Canary-Repo-Zq71-never-printed";

fn capstan(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("capstan runs");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("stdin written");
        }
    }
    child.wait_with_output().expect("capstan finishes")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn never_shows_a_secret(out: &Output, what: &str) {
    let all = text(out);
    for canary in [PASSWORD, TOKEN] {
        assert!(!all.contains(canary), "{what} printed a secret: {all}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repo_add_list_rm_write_what_the_controller_reads_and_never_print_secrets() {
    let cluster = devcluster::DevCluster::start(devcluster::Config::default())
        .await
        .expect("devcluster starts");
    let kubeconfig = cluster.kubeconfig_path().to_path_buf();
    let client = cluster.client();
    capstan_testkit::create_namespaces(&client, &["capstan"]).await;
    let secrets: Api<Secret> = Api::namespaced(client, "capstan");

    // A repository with basic authentication, the password from stdin.
    let out = capstan(
        &kubeconfig,
        &[
            "repo",
            "add",
            "https://git.example/team/app.git",
            "--username",
            "deployer",
            "--password-stdin",
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(out.status.success(), "repo add: {}", text(&out));
    never_shows_a_secret(&out, "repo add");
    // A credential template with a token.
    let out = capstan(
        &kubeconfig,
        &[
            "repo",
            "add",
            "https://git.example/team",
            "--creds-template",
            "--token-stdin",
        ],
        Some(TOKEN),
    );
    assert!(out.status.success(), "repo add template: {}", text(&out));
    never_shows_a_secret(&out, "repo add --creds-template");

    // The Secrets carry the label, URL and credential keys the controller reads.
    let all = secrets.list(&ListParams::default()).await.expect("list");
    let by_type = |t: &str| {
        all.items
            .iter()
            .filter(|s| {
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("capstan.dev/secret-type"))
                    .is_some_and(|v| v == t)
            })
            .collect::<Vec<_>>()
    };
    let repos = by_type("repository");
    assert_eq!(repos.len(), 1, "{all:?}");
    let data = repos[0].data.as_ref().expect("data");
    assert_eq!(data["url"].0, b"https://git.example/team/app.git");
    assert_eq!(data["username"].0, b"deployer");
    // The trailing newline of stdin is not part of the password.
    assert_eq!(data["password"].0, PASSWORD.as_bytes());
    let templates = by_type("repo-creds");
    assert_eq!(templates.len(), 1);
    assert_eq!(
        templates[0].data.as_ref().expect("data")["token"].0,
        TOKEN.as_bytes()
    );

    // list: which kind of credential, never its value (table and JSON).
    for output in ["table", "json", "yaml"] {
        let out = capstan(&kubeconfig, &["repo", "list", "-o", output], None);
        assert!(
            out.status.success(),
            "repo list -o {output}: {}",
            text(&out)
        );
        never_shows_a_secret(&out, "repo list");
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            listed.contains("https://git.example/team/app.git") && listed.contains("deployer"),
            "{listed}"
        );
    }
    let out = capstan(&kubeconfig, &["repo", "list", "-o", "json"], None);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let auths: Vec<&str> = rows
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|r| r["auth"].as_str())
        .collect();
    assert!(
        auths.contains(&"basic") && auths.contains(&"token"),
        "{rows}"
    );

    // Bad input is refused before anything is written, naming what is wrong.
    let out = capstan(
        &kubeconfig,
        &[
            "repo",
            "add",
            "git@git.example:team/app.git",
            "--ssh-key",
            "/nonexistent/id_ed25519",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("/nonexistent/id_ed25519"),
        "{}",
        text(&out)
    );
    let out = capstan(
        &kubeconfig,
        &[
            "repo",
            "add",
            "git@git.example:team/app.git",
            "--username",
            "u",
            "--password-stdin",
        ],
        Some(PASSWORD),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    never_shows_a_secret(&out, "refused repo add");
    assert_eq!(
        secrets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        all.items.len(),
        "a refused add wrote a Secret"
    );

    // rm removes exactly the repository's Secret; removing it again says there is none (exit 1).
    let out = capstan(
        &kubeconfig,
        &["repo", "rm", "https://git.example/team/app.git"],
        None,
    );
    assert!(out.status.success(), "repo rm: {}", text(&out));
    assert!(by_type_after(&secrets, "repository").await.is_empty());
    assert_eq!(by_type_after(&secrets, "repo-creds").await.len(), 1);
    let out = capstan(
        &kubeconfig,
        &["repo", "rm", "https://git.example/team/app.git"],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

async fn by_type_after(secrets: &Api<Secret>, t: &str) -> Vec<String> {
    secrets
        .list(&ListParams::default().labels(&format!("capstan.dev/secret-type={t}")))
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect()
}
