//! `capstan repo …`: repository credentials kept as Secrets in the controller's namespace,
//! labelled `capstan.dev/secret-type: repository` (one repository) or `repo-creds` (a template
//! matched by URL prefix). Secret values are read from stdin or files, never from the command
//! line (where `ps` and shell history would show them), and are never printed.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use capstan_controller::creds::{
    SECRET_TYPE_LABEL, TYPE_REPO_CREDS, TYPE_REPOSITORY, template_prefix,
};
use capstan_source::RepoUrl;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};

/// Arguments of `capstan repo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kubeconfig (default: $KUBECONFIG, ~/.kube/config).
    #[arg(long, env = "KUBECONFIG", global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the controller (where it reads credential Secrets).
    #[arg(long, short = 'n', default_value = capstan_api::application::DEFAULT_NAMESPACE, global = true)]
    pub namespace: String,
    /// What to do.
    #[command(subcommand)]
    pub verb: Verb,
}

/// `capstan repo` verbs.
#[derive(Debug, clap::Subcommand)]
pub enum Verb {
    /// Store credentials for a repository (or, with --creds-template, for every repository under
    /// a URL prefix). Writing again replaces them.
    Add {
        /// Repository URL (or URL prefix with --creds-template).
        url: String,
        /// Name of the Secret (default: derived from the URL).
        #[arg(long)]
        name: Option<String>,
        /// User name for HTTP basic authentication (the password comes from stdin).
        #[arg(long, requires = "password_stdin")]
        username: Option<String>,
        /// Read the password from stdin.
        #[arg(long, requires = "username", conflicts_with_all = ["token_stdin", "ssh_key"])]
        password_stdin: bool,
        /// Read an access token from stdin.
        #[arg(long, conflicts_with = "ssh_key")]
        token_stdin: bool,
        /// Private key file (OpenSSH format) for ssh URLs.
        #[arg(long)]
        ssh_key: Option<PathBuf>,
        /// known_hosts file with the server's host keys (with --ssh-key).
        #[arg(
            long,
            requires = "ssh_key",
            conflicts_with = "insecure_accept_new_host"
        )]
        known_hosts: Option<PathBuf>,
        /// Trust the server's host key the first time it is seen (a changed key is still refused).
        #[arg(long, requires = "ssh_key")]
        insecure_accept_new_host: bool,
        /// Write a credential template (`repo-creds`) matched by URL prefix.
        #[arg(long)]
        creds_template: bool,
    },
    /// List stored repositories and templates (never their secrets).
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: super::app::Output,
    },
    /// Remove the credentials of a repository (or, with --creds-template, a template).
    Rm {
        /// Repository URL (or URL prefix with --creds-template).
        url: String,
        /// Remove a credential template.
        #[arg(long)]
        creds_template: bool,
    },
}

/// Runs `capstan repo`.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    let client = super::server::kube_client(args.kubeconfig.as_deref()).await?;
    let api: Api<Secret> = Api::namespaced(client, &args.namespace);
    match args.verb {
        Verb::Add {
            url,
            name,
            username,
            password_stdin,
            token_stdin,
            ssh_key,
            known_hosts,
            insecure_accept_new_host,
            creds_template,
        } => {
            let key = url_key(&url, creds_template)?;
            let is_ssh = RepoUrl::parse(&url)
                .is_ok_and(|u| u.scheme() == capstan_source::Scheme::Ssh)
                || key.starts_with("ssh://");
            let mut data: BTreeMap<String, ByteString> = BTreeMap::new();
            let mut put = |k: &str, v: &str| {
                data.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
            };
            put("url", url.trim());
            if let Some(file) = &ssh_key {
                if !is_ssh {
                    bail!("--ssh-key is for ssh URLs; {url} is not one");
                }
                put("sshPrivateKey", &read_file(file, "--ssh-key")?);
                if let Some(kh) = &known_hosts {
                    put("sshKnownHosts", &read_file(kh, "--known-hosts")?);
                }
                if insecure_accept_new_host {
                    put("insecureIgnoreHostKey", "true");
                }
            } else if password_stdin || token_stdin {
                if is_ssh {
                    bail!("{url} is an ssh URL: use --ssh-key");
                }
                let secret = read_stdin(if token_stdin { "token" } else { "password" })?;
                if let Some(user) = &username {
                    put("username", user);
                }
                put(if token_stdin { "token" } else { "password" }, &secret);
            }
            let kind = if creds_template {
                TYPE_REPO_CREDS
            } else {
                TYPE_REPOSITORY
            };
            let name = name.unwrap_or_else(|| secret_name(kind, &key));
            let secret = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": name,
                    "namespace": args.namespace,
                    "labels": { SECRET_TYPE_LABEL: kind },
                },
                "type": "Opaque",
                "data": data,
            });
            api.patch(
                &name,
                &PatchParams::apply(capstan_api::annotations::FIELD_MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await
            .with_context(|| format!("writing Secret {}/{name}", args.namespace))?;
            println!("{kind} {url} stored in Secret {}/{name}", args.namespace);
            Ok(0)
        }
        Verb::List { output } => {
            let rows = list(&api).await?;
            match output {
                super::app::Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                super::app::Output::Yaml => print!("{}", serde_yaml_ng::to_string(&rows)?),
                _ => {
                    let mut table = vec![vec![
                        "NAME".to_string(),
                        "TYPE".into(),
                        "URL".into(),
                        "AUTH".into(),
                        "USERNAME".into(),
                    ]];
                    for r in &rows {
                        table.push(vec![
                            r.name.clone(),
                            r.kind.clone(),
                            r.url.clone(),
                            r.auth.clone(),
                            r.username.clone().unwrap_or_else(|| "-".into()),
                        ]);
                    }
                    print_table(&table);
                }
            }
            Ok(0)
        }
        Verb::Rm {
            url,
            creds_template,
        } => {
            let key = url_key(&url, creds_template)?;
            let kind = if creds_template {
                TYPE_REPO_CREDS
            } else {
                TYPE_REPOSITORY
            };
            let mut removed = 0;
            for r in list(&api).await? {
                if r.kind == kind && url_key(&r.url, creds_template).is_ok_and(|k| k == key) {
                    api.delete(&r.name, &DeleteParams::default())
                        .await
                        .with_context(|| {
                            format!("deleting Secret {}/{}", args.namespace, r.name)
                        })?;
                    println!("removed Secret {}/{}", args.namespace, r.name);
                    removed += 1;
                }
            }
            if removed == 0 {
                eprintln!("no {kind} Secret for {url} in namespace {}", args.namespace);
                return Ok(1);
            }
            Ok(0)
        }
    }
}

/// What `repo list` shows of one Secret: no secret value, only which kind of credential it holds.
#[derive(Debug, serde::Serialize)]
struct Row {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    url: String,
    /// `basic`, `token`, `ssh` or `none`.
    auth: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
}

async fn list(api: &Api<Secret>) -> anyhow::Result<Vec<Row>> {
    let selector = format!("{SECRET_TYPE_LABEL} in ({TYPE_REPOSITORY},{TYPE_REPO_CREDS})");
    let secrets = api
        .list(&ListParams::default().labels(&selector))
        .await
        .context("listing repository Secrets")?;
    let mut rows = Vec::new();
    for s in secrets.items {
        let text = |k: &str| {
            s.data
                .as_ref()
                .and_then(|d| d.get(k))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .filter(|v| !v.is_empty())
        };
        let has = |k: &str| text(k).is_some();
        let auth = if has("sshPrivateKey") {
            "ssh"
        } else if has("token") || (has("password") && !has("username")) {
            "token"
        } else if has("password") {
            "basic"
        } else {
            "none"
        };
        rows.push(Row {
            name: s.metadata.name.clone().unwrap_or_default(),
            kind: s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SECRET_TYPE_LABEL))
                .cloned()
                .unwrap_or_default(),
            url: text("url").unwrap_or_default(),
            auth: auth.into(),
            username: text("username"),
        });
    }
    rows.sort_by(|a, b| (&a.kind, &a.url).cmp(&(&b.kind, &b.url)));
    Ok(rows)
}

/// The normalised URL (repository) or prefix (template) that identifies a Secret.
fn url_key(url: &str, template: bool) -> anyhow::Result<String> {
    if template {
        template_prefix(url).with_context(|| format!("{url:?} is not a repository URL prefix"))
    } else {
        Ok(RepoUrl::parse(url)
            .with_context(|| format!("repository URL {url:?}"))?
            .cache_key()
            .to_string())
    }
}

/// `repo-…`/`creds-…` plus a readable part of the URL and a hash of its normalised form, so
/// two URLs never share a Secret and the name stays a valid DNS label.
fn secret_name(kind: &str, key: &str) -> String {
    let tail = key.rsplit('/').find(|s| !s.is_empty()).unwrap_or("repo");
    let prefix = if kind == TYPE_REPO_CREDS {
        "creds"
    } else {
        "repo"
    };
    capstan_api::names::generated_name(prefix, tail, key, 30)
}

fn read_file(path: &Path, flag: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{flag} {}: cannot read", path.display()))?;
    if text.trim().is_empty() {
        bail!("{flag} {}: the file is empty", path.display());
    }
    Ok(text)
}

fn read_stdin(what: &str) -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .with_context(|| format!("reading the {what} from stdin"))?;
    let text = text.trim_end_matches(['\r', '\n']).to_string();
    if text.is_empty() {
        bail!("the {what} read from stdin is empty");
    }
    Ok(text)
}

fn print_table(rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_are_dns_labels_and_differ_per_url() {
        let a = secret_name(TYPE_REPOSITORY, "https://git.example.com/team/App_1");
        let b = secret_name(TYPE_REPOSITORY, "https://git.example.com/other/App_1");
        assert!(a.starts_with("repo-app-1-"), "{a}");
        assert_ne!(a, b);
        assert!(
            a.len() <= 63
                && a.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert!(secret_name(TYPE_REPO_CREDS, "https://h").starts_with("creds-h-"));
    }
}
