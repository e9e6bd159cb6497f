//! Authentication and authorization over real HTTP: every route refuses anonymous requests
//! (except the public ones), read-only users are refused every action, login, logout, CSRF and
//! the login rate limit.

use crate::common;

use capstan_server::Access;
use capstan_server::auth::{self, Role};
use common::{Env, app, concrete};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_anonymous_requests_except_public_ones() {
    let env = Env::start().await;
    env.create_app(&app("guestbook")).await;
    let routes = capstan_server::routes();
    assert!(routes.len() >= 20, "{} routes", routes.len());
    for (method, path, access) in &routes {
        let url = env.url(&concrete(path, "capstan", "guestbook"));
        let r = env.http.request(method.clone(), &url).send().await.unwrap();
        let status = r.status().as_u16();
        match access {
            Access::Public => assert_ne!(status, 401, "{method} {path} is public"),
            _ => {
                assert_eq!(
                    status, 401,
                    "{method} {path} must refuse an anonymous request"
                );
                assert_eq!(r.headers()["www-authenticate"], "Bearer");
            }
        }
        // A made-up token is as anonymous as none.
        let r = env
            .http
            .request(method.clone(), &url)
            .bearer_auth("not-a-session")
            .send()
            .await
            .unwrap();
        if *access != Access::Public {
            assert_eq!(r.status(), 401, "{method} {path} with a bogus token");
        }
    }
    // The public ones answer.
    let (s, _) = env.get("", "/healthz").await;
    assert_eq!(s, 200);
    let (s, _) = env.get("", "/readyz").await;
    assert_eq!(s, 200);
    // Unknown routes are 404, not 401: the 401s above prove each route exists in the router.
    let r = env.http.get(env.url("/api/v1/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // Metrics need no session, on their own listener.
    let text = env
        .http
        .get(format!("{}/metrics", env.metrics_base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("capstan_applications{sync=\"Unknown\",health=\"Unknown\"} 1"),
        "{text}"
    );
    assert!(text.contains("# TYPE capstan_reconcile_duration_seconds histogram"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_user_gets_403_on_every_action_and_200_on_every_read() {
    let env = Env::start().await;
    env.create_app(&app("guestbook")).await;
    env.set_status(
        "guestbook",
        json!({"sync": {"status": "Synced", "revision": "aaa"},
               "resources": [{"group": "", "version": "v1", "kind": "Namespace", "name": "demo", "status": "Synced"}],
               "history": [{"id": 1, "revision": "aaa", "deployedAt": "2026-01-01T00:00:00Z",
                            "source": {"repoURL": "https://git.example/guestbook.git"}},
                           {"id": 2, "revision": "bbb", "deployedAt": "2026-01-02T00:00:00Z",
                            "source": {"repoURL": "https://git.example/guestbook.git"}}]}),
    )
    .await;
    auth::set_user(
        &env.client,
        "capstan",
        "viewer",
        "viewer-pass-1",
        Role::Readonly,
    )
    .await
    .unwrap();
    let token = env.token("viewer", "viewer-pass-1").await;
    let (s, me) = env.get(&token, "/api/v1/session").await;
    assert_eq!(s, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&me).unwrap(),
        json!({"username": "viewer", "role": "readonly"})
    );
    let before = env.apps().get("guestbook").await.unwrap();
    let mut actions = 0;
    for (method, path, access) in capstan_server::routes() {
        let mut p = concrete(path, "capstan", "guestbook");
        if path.ends_with("/manifests") {
            p.push_str("?kind=Namespace&name=demo");
        }
        match access {
            Access::Action => {
                actions += 1;
                let (s, body) = env
                    .send(&token, method.clone(), &p, json!({"enabled": true}))
                    .await;
                assert_eq!(s, 403, "{method} {path}: {body}");
                assert!(
                    body["error"].as_str().unwrap().contains("read-only"),
                    "{body}"
                );
            }
            // The event stream never ends; it has its own test.
            Access::Read if method == Method::GET && path != "/api/v1/events" => {
                let (s, body) = env.get(&token, &p).await;
                // The test application's repository cannot be fetched: the diff answers 422,
                // which is not a refusal of the role.
                let want = if path.ends_with("/diff") { 422 } else { 200 };
                assert_eq!(s, want, "{method} {path}: {body}");
            }
            _ => {}
        }
    }
    assert_eq!(actions, 7);
    // Nothing was written.
    let after = env.apps().get("guestbook").await.unwrap();
    assert_eq!(
        before.metadata.resource_version,
        after.metadata.resource_version
    );
    assert!(after.operation.is_none());
    // The same request as admin goes through.
    let admin = env.admin().await;
    let (s, body) = env
        .send(
            &admin,
            Method::POST,
            "/api/v1/applications/capstan/guestbook/refresh",
            json!({}),
        )
        .await;
    assert_eq!(s, 202, "{body}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_cookie_csrf_logout_and_rate_limit() {
    let env = Env::start().await;
    env.create_app(&app("guestbook")).await;
    // The Secret stores an argon2 hash, never the password.
    let secret = Api::<Secret>::namespaced(env.client.clone(), "capstan")
        .get(auth::USERS_SECRET)
        .await
        .unwrap();
    let stored = String::from_utf8(secret.data.unwrap()["admin"].0.clone()).unwrap();
    assert!(stored.contains("$argon2id$"), "{stored}");
    assert!(!stored.contains(&env.admin_password));

    // Login: cookie attributes and bearer token.
    let r = env.login("admin", &env.admin_password).await;
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["capstan_session=", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    assert!(
        !cookie.contains("Secure"),
        "dev mode sends no Secure: {cookie}"
    );
    let body: Value = r.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_string();
    assert_eq!(body["role"], "admin");
    assert!(token.len() >= 43, "256-bit token: {token}");
    let session_cookie = cookie.split(';').next().unwrap().to_string();

    // The cookie authenticates reads; actions also need the CSRF header.
    let r = env
        .http
        .get(env.url("/api/v1/session"))
        .header("cookie", &session_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let refresh = env.url("/api/v1/applications/capstan/guestbook/refresh");
    let r = env
        .http
        .post(&refresh)
        .header("cookie", &session_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "cookie without the CSRF header");
    let r = env
        .http
        .post(&refresh)
        .header("cookie", &session_cookie)
        .header("x-capstan-csrf", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // Logout revokes the token (and the cookie, which is the same session).
    let r = env
        .http
        .delete(env.url("/api/v1/session"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (s, _) = env.get(&token, "/api/v1/session").await;
    assert_eq!(s, 401);
    let r = env
        .http
        .get(env.url("/api/v1/session"))
        .header("cookie", &session_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Rate limit: five failures, then 429 with Retry-After, even for the right password.
    for i in 0..5 {
        let r = env.login("admin", "wrong").await;
        assert_eq!(r.status(), 401, "failure {i}");
    }
    let r = env.login("admin", "wrong").await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let r = env.login("admin", &env.admin_password).await;
    assert_eq!(
        r.status(),
        429,
        "the right password does not bypass the limit"
    );
    // Another user name from the same address is not throttled.
    auth::set_user(&env.client, "capstan", "ops", "ops-pass-1", Role::Admin)
        .await
        .unwrap();
    assert_eq!(env.login("ops", "ops-pass-1").await.status(), 200);
    // An unknown user fails like a wrong password.
    let r = env.login("nobody", "x").await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid user name or password");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_start_keeps_the_users_secret_and_shows_no_password() {
    let env = Env::start().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = capstan_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..capstan_server::Config::default()
    };
    let again = capstan_server::serve(config, env.client.clone(), async move {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    assert!(again.initial_admin_password.is_none());
    assert!(!format!("{again:?}").contains(&env.admin_password));
    // The first password still logs in on the second server.
    let r = env
        .http
        .post(format!("http://{}/api/v1/session", again.addr))
        .json(&json!({"username": "admin", "password": env.admin_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = stop.send(());
    again.wait().await;
    env.stop().await;
}
