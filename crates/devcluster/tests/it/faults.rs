//! Fault injection seen from real clients: failed writes that retrying clients survive,
//! refused writes, the admin endpoint, and watch streams that are cut.

use std::future::Future;
use std::time::Duration;

use devcluster::faults::FaultConfig;
use devcluster::{Config, DevCluster};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{ListParams, PostParams, WatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

/// Codes a controller retries: the server is busy or failed, the request may succeed later.
fn retryable(code: u16) -> bool {
    matches!(code, 429 | 500 | 503 | 504)
}

/// Runs `call` until it succeeds, as a controller would: on a retryable error it waits the
/// server's Retry-After (from the Status details) or an exponential backoff. Returns the
/// result and how many retries it took.
async fn with_retries<T, F, Fut>(mut call: F) -> (Result<T, kube::Error>, u32)
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0u32;
    loop {
        match call(attempt).await {
            Err(kube::Error::Api(s)) if retryable(s.code) && attempt < 30 => {
                let after = s.details.as_ref().map_or(0, |d| d.retry_after_seconds);
                let wait = if after > 0 {
                    Duration::from_secs(u64::from(after))
                } else {
                    Duration::from_millis(20 << attempt.min(6))
                };
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            other => return (other, attempt),
        }
    }
}

/// A client of `cluster` authenticating with `token` and without kube's built-in retries of
/// 429/503/504 (on by default in kube 5), so each call is one request and what the server
/// answered is what the test sees.
async fn plain_client(cluster: &DevCluster, token: &str) -> kube::Client {
    let yaml = devcluster::tls::kubeconfig_yaml(cluster.url(), cluster.ca_pem(), token);
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": name}})).unwrap()
}

/// Creates `name`, retrying; an AlreadyExists after a retry means an earlier attempt landed.
async fn create_with_retries(api: &Api<ConfigMap>, name: &str) -> u32 {
    let (r, retries) = with_retries(|attempt| async move {
        match api.create(&PostParams::default(), &cm(name)).await {
            Err(kube::Error::Api(s)) if s.code == 409 && attempt > 0 => Ok(()),
            other => other.map(|_| ()),
        }
    })
    .await;
    r.unwrap_or_else(|e| panic!("creating {name} failed for good: {e}"));
    retries
}

fn write_faults(rate: f64, seed: u64) -> FaultConfig {
    FaultConfig {
        error_rate: rate,
        codes: vec![500, 503, 429],
        only_writes: true,
        seed: Some(seed),
        ..FaultConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_clients_converge_under_20_percent_write_failures() {
    let cluster = DevCluster::start(Config {
        faults: write_faults(0.2, 7),
        ..Config::default()
    })
    .await
    .unwrap();
    let client = plain_client(&cluster, cluster.admin_token()).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "load"}})).unwrap();
    let pp = PostParams::default();
    let (r, _) = with_retries(|_| namespaces.create(&pp, &ns)).await;
    r.expect("the namespace is created");
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "load");

    // Without retries, some of 200 creates fail, with the injected Status errors.
    let mut failed = Vec::new();
    for i in 0..200 {
        match api
            .create(&PostParams::default(), &cm(&format!("once-{i}")))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) => failed.push((s.code, s.reason.clone())),
            Err(e) => panic!("not an API error: {e}"),
        }
    }
    assert!(
        (10..=80).contains(&failed.len()),
        "{} of 200 single-shot creates failed at a 20% fault rate",
        failed.len()
    );
    for (code, reason) in &failed {
        let want = match code {
            500 => "InternalError",
            503 => "ServiceUnavailable",
            429 => "TooManyRequests",
            other => panic!("unexpected code {other}"),
        };
        assert_eq!(reason, want);
    }
    let landed = api.list(&ListParams::default()).await.unwrap().items.len();
    assert_eq!(landed, 200 - failed.len(), "a failed write changed nothing");

    // With retries, 16 concurrent writers create 200 more, and all of them are there.
    let retries: Vec<u32> = futures::stream::iter(0..200)
        .map(|i| {
            let api = api.clone();
            async move { create_with_retries(&api, &format!("cm-{i}")).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let total_retries: u32 = retries.iter().sum();
    assert!(
        total_retries > 0,
        "the faults were real: some creates needed retries"
    );
    let names: std::collections::BTreeSet<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .filter(|n| n.starts_with("cm-"))
        .collect();
    let want: std::collections::BTreeSet<String> = (0..200).map(|i| format!("cm-{i}")).collect();
    assert_eq!(names, want, "all 200 objects are present after retries");
    println!(
        "converged: 200/200 created with {total_retries} retries; without retries {} of 200 failed",
        failed.len()
    );
}

/// GET or PUT the admin endpoint with a client; the body as JSON, or the API error.
async fn admin_call(
    client: &kube::Client,
    method: &str,
    body: Option<Value>,
) -> Result<Value, kube::Error> {
    let req = http::Request::builder()
        .method(method)
        .uri(devcluster::faults::ADMIN_PATH)
        .header("content-type", "application/json")
        .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
        .unwrap();
    let text = client.request_text(req).await?;
    Ok(serde_json::from_str(&text).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoint_switches_faults_at_run_time() {
    let cluster = DevCluster::start(Config::default()).await.unwrap();
    let client = plain_client(&cluster, cluster.admin_token()).await;
    assert_eq!(
        admin_call(&client, "GET", None).await.unwrap()["errorRate"],
        0.0
    );
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
    let _ = namespaces.create(&PostParams::default(), &ns).await;

    // Writes refused: 503 ServiceUnavailable with Retry-After, reads still served.
    let set = admin_call(&client, "PUT", Some(json!({"refuseWrites": true})))
        .await
        .unwrap();
    assert_eq!(set["refuseWrites"], true);
    let refused = match api.create(&PostParams::default(), &cm("a")).await {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected a refused write, got {other:?}"),
    };
    assert_eq!(
        (refused.code, refused.reason.as_str()),
        (503, "ServiceUnavailable")
    );
    assert_eq!(refused.details.map(|d| d.retry_after_seconds), Some(1));
    let raw = http::Request::builder()
        .method("POST")
        .uri("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(kube::client::Body::from(
            serde_json::to_vec(&json!({"metadata": {"name": "raw"}})).unwrap(),
        ))
        .unwrap();
    let resp = client.send(raw).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    api.list(&ListParams::default())
        .await
        .expect("reads are served");

    // A window of refusal works the same; the window starts when it is set.
    admin_call(
        &client,
        "PUT",
        Some(json!({"refuseWritesWindow": "0s..1h"})),
    )
    .await
    .unwrap();
    assert!(api.create(&PostParams::default(), &cm("b")).await.is_err());

    // Every request failing still leaves health, version and the admin endpoint alone.
    admin_call(
        &client,
        "PUT",
        Some(json!({"errorRate": 1.0, "codes": [500]})),
    )
    .await
    .unwrap();
    let e = match api.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected a failure, got {other:?}"),
    };
    assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));
    client
        .apiserver_version()
        .await
        .expect("/version is never faulted");
    let health = http::Request::builder()
        .uri("/healthz")
        .body(Vec::new())
        .unwrap();
    assert_eq!(client.request_text(health).await.unwrap(), "ok");

    // Bad configurations are refused with the field named, and change nothing.
    for (bad, field) in [
        (json!({"errorRate": 2.0}), "errorRate"),
        (json!({"codes": [418]}), "codes"),
        (json!({"latency": "soon"}), "duration"),
        (json!({"errorrate": 0.5}), "errorrate"),
    ] {
        match admin_call(&client, "PUT", Some(bad.clone())).await {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 400);
                assert!(s.message.contains(field), "{bad}: {}", s.message);
            }
            other => panic!("{bad} was accepted: {other:?}"),
        }
    }
    assert_eq!(
        admin_call(&client, "GET", None).await.unwrap()["errorRate"],
        1.0
    );

    // Switched off: everything works again.
    admin_call(&client, "PUT", Some(json!({}))).await.unwrap();
    api.create(&PostParams::default(), &cm("c"))
        .await
        .expect("writes work again");

    // Only the admin may change faults.
    let user_token = "a-plain-user-token";
    cluster.state().authenticator.add(
        user_token,
        devcluster::auth::UserInfo {
            name: "jane".into(),
            groups: vec!["system:authenticated".into()],
        },
    );
    let user = plain_client(&cluster, user_token).await;
    match admin_call(&user, "PUT", Some(json!({"refuseWrites": true}))).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403),
        other => panic!("a plain user changed faults: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_watches_are_resumed_by_a_kube_runtime_watcher() {
    let cluster = DevCluster::start(Config {
        faults: FaultConfig {
            drop_watch_after: Some(Duration::from_millis(300)),
            ..FaultConfig::default()
        },
        ..Config::default()
    })
    .await
    .unwrap();
    let client = cluster.client();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "w"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "w");

    // A plain watch asking for an hour is cut by the server (the bound is only a failsafe).
    let stream = api
        .watch(&WatchParams::default().timeout(3600), "0")
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(60), stream.collect::<Vec<_>>()).await;
    assert!(ended.is_ok(), "the watch stream was cut");

    // A kube-runtime watcher re-watches after each cut and sees every later change.
    let mut seen = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .map_ok(|c: ConfigMap| c.metadata.name.unwrap_or_default())
        .boxed();
    for i in 0..4 {
        let name = format!("cm-{i}");
        api.create(&PostParams::default(), &cm(&name))
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match seen.try_next().await {
                    Ok(Some(n)) if n == name => return Ok(()),
                    Ok(Some(_)) => continue,
                    Ok(None) => return Err("the watcher stream ended".to_string()),
                    // A cut may surface as an error the watcher recovers from on its own.
                    Err(_) => continue,
                }
            }
        })
        .await;
        assert_eq!(got, Ok(Ok(())), "the watcher saw {name}");
        // Let the server cut the current watch before the next change.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
