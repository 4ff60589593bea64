//! An in-process `pharos serve` on `127.0.0.1:0` for the gRPC tests.

use pharos::server::config::ServeConfig;
use pharos::server::Server;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// A server running on a background task, stopped (and awaited) on drop of the sender.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) stop: Option<oneshot::Sender<()>>,
    pub(crate) done: tokio::task::JoinHandle<pharos::Result<()>>,
    pub(crate) metrics: Arc<pharos::metrics::Metrics>,
    pub(crate) _dir: tempfile::TempDir,
}

impl TestServer {
    pub(crate) async fn start(cfg: ServeConfig) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(cfg, dir).await
    }

    pub(crate) async fn start_in(cfg: ServeConfig, dir: tempfile::TempDir) -> TestServer {
        Self::start_with(cfg, dir, |_| {}).await
    }

    /// Starts a server after `setup` has seen it (to set test hooks on its pipeline or banks).
    pub(crate) async fn start_with(
        cfg: ServeConfig,
        dir: tempfile::TempDir,
        setup: impl FnOnce(&Server),
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::new(cfg, dir.path().to_path_buf()).expect("server starts");
        setup(&server);
        let metrics = server.metrics();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(server.run(listener, async { drop(stopped.await) }));
        TestServer { addr, stop: Some(stop), done, metrics, _dir: dir }
    }

    pub(crate) async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr)).unwrap().connect().await.expect("connect")
    }

    /// Triggers shutdown and waits for `run` to return.
    pub(crate) async fn shutdown(mut self) -> pharos::Result<()> {
        drop(self.stop.take());
        tokio::time::timeout(Duration::from_secs(60), self.done).await.expect("server stops").unwrap()
    }
}
