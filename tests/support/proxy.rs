//! A TCP proxy between one client and the API server that a test can stall: bytes stop moving
//! both ways (connections stay open, as with a hung load balancer or a partitioned network)
//! until the test lets them flow again.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy; dropping it stops accepting (open connections end with their peers).
pub struct StallingProxy {
    addr: SocketAddr,
    stalled: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl StallingProxy {
    /// Proxies a loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (stalled, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let rx = rx.clone();
                tokio::spawn(async move {
                    let Ok(up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    tokio::join!(pipe(dr, uw, rx.clone()), pipe(ur, dw, rx));
                });
            }
        });
        Self {
            addr,
            stalled,
            task,
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops moving bytes (reads stay unanswered) until [`StallingProxy::resume`].
    pub fn stall(&self) {
        let _ = self.stalled.send(true);
    }

    /// Lets bytes flow again.
    pub fn resume(&self) {
        let _ = self.stalled.send(false);
    }

    /// A kube client for the cluster of `kubeconfig`, reaching its API server through this
    /// proxy (the server's certificate names 127.0.0.1, not a port, so TLS still verifies).
    pub async fn client(&self, kubeconfig: &Path) -> Client {
        let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig to client config");
        let mut parts = config.cluster_url.clone().into_parts();
        parts.authority = Some(self.addr.to_string().parse().expect("authority"));
        config.cluster_url = http::Uri::from_parts(parts).expect("proxied URL");
        Client::try_from(config).expect("build kube client")
    }

    /// The API server address a kubeconfig names.
    pub async fn upstream_of(kubeconfig: &Path) -> SocketAddr {
        let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig to client config");
        let host = config.cluster_url.host().expect("host");
        let port = config.cluster_url.port_u16().unwrap_or(443);
        tokio::net::lookup_host((host, port))
            .await
            .expect("resolve API server")
            .next()
            .expect("an address")
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // A stall while waiting for bytes: wait for its end before reading on.
            _ = stalled.wait_for(|s| *s) => continue,
        };
        // Bytes read just before a stall are held until it ends, like a stuck middlebox.
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
