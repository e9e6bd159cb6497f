//! The API server the browser tests drive: plain HTTP on a free localhost port (so session
//! cookies go without `Secure`), its generated admin password, and a stop that waits for it.
//! Shared by the browser tests and the UI benchmark, each of which uses only part of it.

#![allow(dead_code)]

use capstan_controller::manifests::Handle;
use capstan_server::cache::AppCache;
use capstan_server::{Config, Server, serve, serve_unwatched};
use std::net::SocketAddr;
use tokio::sync::oneshot;

/// A running API server.
pub struct UiServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The admin password the first start on a fresh cluster generates.
    pub password: String,
    server: Server,
    stop: oneshot::Sender<()>,
}

impl UiServer {
    /// Starts the server against `client`; `controller` is the manifests handle the diff and
    /// desired-manifest routes read (without one they answer 503).
    pub async fn start(client: &kube::Client, controller: Option<Handle>) -> UiServer {
        UiServer::start_with(client, controller, true).await
    }

    /// Starts the server without its Application watch: the cache stays as the caller fills it
    /// through [`UiServer::cache`] (the benchmark seeds thousands of rows this way).
    pub async fn start_unwatched(client: &kube::Client) -> UiServer {
        UiServer::start_with(client, None, false).await
    }

    async fn start_with(
        client: &kube::Client,
        controller: Option<Handle>,
        watched: bool,
    ) -> UiServer {
        let (stop, stopped) = oneshot::channel::<()>();
        let config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            insecure_cookies: true,
            controller,
            ..Config::default()
        };
        let shutdown = async move {
            let _ = stopped.await;
        };
        let server = if watched {
            serve(config, client.clone(), shutdown).await
        } else {
            serve_unwatched(config, client.clone(), shutdown).await
        }
        .expect("API server starts");
        let password = server
            .initial_admin_password
            .clone()
            .expect("a fresh cluster gets a generated admin password");
        let base = format!("http://{}", server.addr);
        UiServer {
            base,
            password,
            server,
            stop,
        }
    }

    /// The Applications cache the API answers from.
    pub fn cache(&self) -> &AppCache {
        &self.server.cache
    }

    /// Asks the server to shut down and waits until it has.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.server.wait().await;
    }
}
