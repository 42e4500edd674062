//! The daemonless image build (`make image`, scripts/build-image.sh): an OCI image equivalent to
//! the Dockerfile's (same release binary, user, entrypoint, command, ports and labels), on a
//! base of Debian packages with no shell, runnable with nothing but its own files, and
//! reproducible. No container engine, no network beyond what the build already cached.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

struct Built {
    reference: String,
    digest: String,
    out: PathBuf,
    /// The image's single layer, unpacked.
    rootfs: tempfile::TempDir,
}

/// Builds the image once per test process (the release build is cached by cargo).
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Command::new("bash")
            .arg(support::repo_root().join("scripts/build-image.sh"))
            .output()
            .expect("run scripts/build-image.sh");
        assert!(
            out.status.success(),
            "build-image.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last: Vec<&str> = stdout
            .lines()
            .last()
            .expect("a last line")
            .split(' ')
            .collect();
        let [reference, digest, archive] = last[..] else {
            panic!("unexpected last line: {stdout}")
        };
        let out = Path::new(archive).parent().unwrap().to_path_buf();
        let rootfs = tempfile::tempdir().unwrap();
        let layer = layer_path(&out);
        let status = Command::new("tar")
            .args(["-xzf", layer.to_str().unwrap(), "-C"])
            .arg(rootfs.path())
            .status()
            .unwrap();
        assert!(status.success(), "unpack the layer");
        Built {
            reference: reference.to_owned(),
            digest: digest.to_owned(),
            out,
            rootfs,
        }
    })
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn blob(out: &Path, digest: &str) -> PathBuf {
    out.join("layout/blobs/sha256")
        .join(digest.strip_prefix("sha256:").expect("sha256 digest"))
}

fn manifest(out: &Path) -> Value {
    let index = read_json(&out.join("layout/index.json"));
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    read_json(&blob(out, manifests[0]["digest"].as_str().unwrap()))
}

fn layer_path(out: &Path) -> PathBuf {
    let manifest = manifest(out);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "one layer: {manifest}");
    blob(out, layers[0]["digest"].as_str().unwrap())
}

fn image_config(out: &Path) -> Value {
    read_json(&blob(
        out,
        manifest(out)["config"]["digest"].as_str().unwrap(),
    ))
}

fn sha256_file(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the Dockerfile's final stage declares, read here independently of the build script.
fn dockerfile_final_stage() -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(support::repo_root().join("Dockerfile")).unwrap();
    let mut logical = Vec::new();
    let mut buf = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if buf.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(cont) = trimmed.strip_suffix('\\') {
            buf.push_str(cont);
            buf.push(' ');
        } else {
            buf.push_str(trimmed);
            logical.push(std::mem::take(&mut buf));
        }
    }
    let start = logical
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM");
    let mut out = BTreeMap::new();
    for line in &logical[start + 1..] {
        let (word, rest) = line.split_once(' ').unwrap();
        match word {
            "USER" => {
                out.insert("User".into(), json!(rest.trim()));
            }
            "ENTRYPOINT" | "CMD" => {
                let key = if word == "CMD" { "Cmd" } else { "Entrypoint" };
                out.insert(key.into(), serde_json::from_str(rest).expect("exec form"));
            }
            "EXPOSE" => {
                let ports: serde_json::Map<String, Value> = rest
                    .split_whitespace()
                    .map(|p| (format!("{p}/tcp"), json!({})))
                    .collect();
                out.insert("ExposedPorts".into(), Value::Object(ports));
            }
            "LABEL" => {
                // key="value" pairs; values are double-quoted and may contain spaces.
                let mut labels = serde_json::Map::new();
                let mut rest = rest.trim();
                while let Some((key, after)) = rest.split_once("=\"") {
                    let end = after.find('"').expect("closing quote");
                    labels.insert(key.trim().to_owned(), json!(&after[..end]));
                    rest = after[end + 1..].trim();
                }
                out.insert("Labels".into(), Value::Object(labels));
            }
            _ => {}
        }
    }
    out
}

#[test]
fn image_declares_what_the_dockerfile_declares() {
    let b = built();
    let config = image_config(&b.out);
    let declared = dockerfile_final_stage();
    for key in ["User", "Entrypoint", "Cmd", "ExposedPorts", "Labels"] {
        assert!(declared.contains_key(key), "Dockerfile declares no {key}");
        assert_eq!(
            config["config"][key], declared[key],
            "{key}: image config vs Dockerfile"
        );
    }
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(
        config["config"]["Entrypoint"],
        json!(["/usr/local/bin/phonefleet"])
    );
    assert_eq!(config["config"]["Cmd"], json!(["run"]));
    // The version label, the image tag, the crate and the chart's appVersion agree.
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.version"],
        version
    );
    assert_eq!(
        b.reference,
        format!("docker.io/library/phonefleet:{version}")
    );
    // What the distroless base sets and the Dockerfile inherits.
    assert_eq!(config["config"]["WorkingDir"], "/home/nonroot");
    let env: Vec<&str> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"),
        "{env:?}"
    );
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    let index = read_json(&b.out.join("layout/index.json"));
    assert_eq!(index["manifests"][0]["digest"], b.digest.as_str());
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        b.reference.as_str()
    );
}

#[test]
fn image_binary_is_the_release_build_without_simulated_time() {
    let b = built();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::repo_root().join("target"));
    let release = target.join("release/phonefleet");
    let in_image = b.rootfs.path().join("usr/local/bin/phonefleet");
    assert_eq!(
        sha256_file(&in_image),
        sha256_file(&release),
        "the image's binary is the release build"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&in_image).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o755);
    // Built with the Dockerfile's profile: no debug info (symbols kept).
    let sections = Command::new("readelf")
        .args(["-S", "-W"])
        .arg(&in_image)
        .output()
        .expect("readelf");
    let sections = String::from_utf8_lossy(&sections.stdout);
    assert!(
        !sections.contains(".debug_info"),
        "debug info in the image binary"
    );
    assert!(
        sections.contains(".symtab"),
        "symbols stripped from the image binary"
    );
    // It runs with the image's own loader and libraries only, and has no compressed clock.
    let root = b.rootfs.path();
    let out = Command::new(root.join("lib64/ld-linux-x86-64.so.2"))
        .arg("--library-path")
        .arg(root.join("lib/x86_64-linux-gnu"))
        .arg(&in_image)
        .args(["run", "--help"])
        .env_clear()
        .output()
        .expect("run the image's binary with the image's glibc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--leader-elect"), "{help}");
    assert!(
        !help.contains("--time-scale"),
        "a release image has no simulated clock: {help}"
    );
}

#[test]
fn image_is_a_minimal_non_root_base_without_shell() {
    let b = built();
    let root = b.rootfs.path();
    let mut names = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ty = e.file_type().unwrap();
            if ty.is_dir() {
                stack.push(e.path());
            }
            names.push(e.path().strip_prefix(root).unwrap().to_path_buf());
        }
    }
    for forbidden in ["sh", "bash", "dash", "busybox", "apt", "dpkg", "ldconfig"] {
        assert!(
            !names.iter().any(|p| p.file_name().unwrap() == forbidden),
            "{forbidden} in the image"
        );
    }
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l == "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin"),
        "{passwd}"
    );
    assert!(
        passwd.lines().all(|l| l.ends_with(":/sbin/nologin")),
        "{passwd}"
    );
    use std::os::unix::fs::MetadataExt;
    let home = std::fs::metadata(root.join("home/nonroot")).unwrap();
    assert_eq!((home.uid(), home.gid()), (65532, 65532));
    let bin = std::fs::metadata(root.join("usr/local/bin/phonefleet")).unwrap();
    assert_eq!(
        (bin.uid(), bin.gid()),
        (0, 0),
        "the binary is root's, not the runtime user's"
    );
    let ca = std::fs::read_to_string(root.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    assert!(ca.matches("BEGIN CERTIFICATE").count() > 100, "CA bundle");
    // Time zones are compiled in (chrono-tz): no tzdata in the image.
    assert!(!root.join("usr/share/zoneinfo").exists());
    let total: u64 = names
        .iter()
        .filter_map(|p| std::fs::symlink_metadata(root.join(p)).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    assert!(total < 64 << 20, "image is {} MiB unpacked", total >> 20);
}

#[test]
fn image_build_is_reproducible() {
    let b = built();
    // The whole build again, into another directory: the same manifest digest.
    let again = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(support::repo_root().join("scripts/build-image.sh"))
        .arg("--out")
        .arg(again.path())
        .output()
        .expect("run scripts/build-image.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    assert_eq!(line.split(' ').nth(1), Some(b.digest.as_str()), "{line}");
}
