//! Test harness for integration tests: a real local control plane (etcd, kube-apiserver,
//! kube-controller-manager) built from source by `tests/cluster/build.sh`.
//!
//! `make test` starts one control plane for every test binary and exports its kubeconfig as
//! `PHONEFLEET_TEST_KUBECONFIG`. Run on their own (`cargo test --test X`), the tests start a
//! private control plane with `tests/cluster/up.sh --owner-pid`, whose watchdog tears it down
//! when the test process exits, however it exits. Tests isolate themselves by namespace.
#![allow(dead_code)]

pub mod controller;
pub mod fleet;
pub mod nginx;
pub mod provisioning;
pub mod proxy;
pub mod simulation;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// A running control plane shared by the tests of this process.
pub struct TestCluster {
    pub kubeconfig: PathBuf,
    /// Directory holding kubectl, helm and the control plane binaries.
    pub bin_dir: PathBuf,
}

static CLUSTER: OnceLock<TestCluster> = OnceLock::new();
static NODE_CLUSTER: OnceLock<TestCluster> = OnceLock::new();
static NAMESPACE_SEQ: AtomicU32 = AtomicU32::new(0);

/// Repository root (where Cargo.toml is).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The control plane for this test process, started on first use.
pub async fn cluster() -> &'static TestCluster {
    CLUSTER.get_or_init(start_or_reuse)
}

/// A control plane with a node (kube-scheduler, containerd, CNI, kube-proxy, a Ready kubelet:
/// `tests/cluster/node-up.sh`), shared by the tests of this process, for tests that run pods.
/// Reuses `PHONEFLEET_TEST_NODE_KUBECONFIG` (a cluster started with `PHONEFLEET_NODE=1`) when
/// set; otherwise starts one that is torn down, node included, when the test process exits.
/// Needs root and the node's Debian packages (see docs/helm.md). One node per machine.
pub async fn node_cluster() -> &'static TestCluster {
    NODE_CLUSTER.get_or_init(|| {
        let bin_dir = build_tools_with(true);
        let kubeconfig =
            match std::env::var_os("PHONEFLEET_TEST_NODE_KUBECONFIG").filter(|p| !p.is_empty()) {
                Some(path) => PathBuf::from(path),
                None => start_cluster_with(
                    &std::env::temp_dir().join(format!("phonefleet-node-{}", std::process::id())),
                    true,
                ),
            };
        TestCluster {
            kubeconfig,
            bin_dir: PathBuf::from(bin_dir),
        }
    })
}

/// A control plane of the caller's own, for tests that break it (API server restarts). It is
/// torn down when the test process exits.
pub async fn private_cluster() -> TestCluster {
    let bin_dir = build_tools();
    let seq = NAMESPACE_SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("phonefleet-private-{}-{seq}", std::process::id()));
    TestCluster {
        kubeconfig: start_cluster(&dir),
        bin_dir: PathBuf::from(bin_dir),
    }
}

fn build_tools() -> String {
    build_tools_with(false)
}

fn build_tools_with(node: bool) -> String {
    last_line(
        &Command::new("bash")
            .arg(repo_root().join("tests/cluster/build.sh"))
            .args(node.then_some("--node"))
            .output()
            .expect("run tests/cluster/build.sh"),
        "build.sh",
    )
}

fn start_cluster(dir: &Path) -> PathBuf {
    start_cluster_with(dir, false)
}

fn start_cluster_with(dir: &Path, node: bool) -> PathBuf {
    let out = Command::new("bash")
        .arg(repo_root().join("tests/cluster/up.sh"))
        .env("PHONEFLEET_NODE", if node { "1" } else { "" })
        .arg("--dir")
        .arg(dir)
        .arg("--owner-pid")
        .arg(std::process::id().to_string())
        .arg("--remove-dir-on-exit")
        .output()
        .expect("run tests/cluster/up.sh");
    PathBuf::from(last_line(&out, "up.sh"))
}

fn start_or_reuse() -> TestCluster {
    let bin_dir = build_tools();
    let kubeconfig = match std::env::var_os("PHONEFLEET_TEST_KUBECONFIG").filter(|p| !p.is_empty())
    {
        Some(path) => PathBuf::from(path),
        None => start_cluster(
            &std::env::temp_dir().join(format!("phonefleet-test-{}", std::process::id())),
        ),
    };
    TestCluster {
        kubeconfig,
        bin_dir: PathBuf::from(bin_dir),
    }
}

fn last_line(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_else(|| panic!("{what} printed nothing"))
        .to_string()
}

impl TestCluster {
    /// A client for the calling test's runtime (clients must not outlive the runtime that
    /// created them, so each test makes its own).
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig to client config");
        Client::try_from(config).expect("build kube client")
    }

    /// Kills the API server and starts it again on the same port; returns once it is ready.
    /// Only for a [`private_cluster`]: other tests share the default one.
    pub fn restart_apiserver(&self) {
        let dir = self
            .kubeconfig
            .parent()
            .expect("kubeconfig in the cluster directory");
        let out = Command::new("bash")
            .arg(repo_root().join("tests/cluster/restart-apiserver.sh"))
            .arg(dir)
            .output()
            .expect("run restart-apiserver.sh");
        assert!(
            out.status.success(),
            "restart-apiserver.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A command for one of the built tools (kubectl, helm, …) pointed at this control plane.
    pub fn tool(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(name));
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", std::env::temp_dir())
            .current_dir(repo_root());
        cmd
    }

    /// Runs kubectl with `args` and returns its output, successful or not.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.tool("kubectl")
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// Runs kubectl and asserts success; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Applies the repository's CRDs (`crds/`) and waits until they are Established.
    pub async fn apply_crds(&self) {
        let dir = repo_root().join("crds");
        let dir = dir.to_str().expect("utf-8 path");
        self.kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", dir]);
        self.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "-f",
            dir,
        ]);
    }

    /// Creates a namespace with a unique name starting with `prefix`.
    pub async fn namespace(&self, prefix: &str) -> TestNamespace {
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NAMESPACE_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let api: Api<Namespace> = Api::all(self.client().await);
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.clone());
        api.create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        TestNamespace {
            name,
            kubeconfig: self.kubeconfig.clone(),
            kubectl: self.bin_dir.join("kubectl"),
            deleted: false,
        }
    }
}

/// A namespace owned by one test. `delete()` it at the end; if the test panics first, `Drop`
/// asks the API server to delete it without waiting.
pub struct TestNamespace {
    pub name: String,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    deleted: bool,
}

impl TestNamespace {
    /// Deletes the namespace (its content goes with it, through the namespace controller).
    pub async fn delete(mut self) {
        let cluster = TestCluster {
            kubeconfig: self.kubeconfig.clone(),
            bin_dir: PathBuf::new(),
        };
        let api: Api<Namespace> = Api::all(cluster.client().await);
        api.delete(&self.name, &DeleteParams::background())
            .await
            .unwrap_or_else(|e| panic!("delete namespace {}: {e}", self.name));
        self.deleted = true;
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if !self.deleted {
            let _ = Command::new(&self.kubectl)
                .env("KUBECONFIG", &self.kubeconfig)
                .args(["delete", "namespace", &self.name, "--wait=false"])
                .output();
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
