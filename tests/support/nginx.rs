//! nginx from Debian as an upstream provisioning server for tests: a child process with its own
//! configuration in a temporary directory (never the system service), killed on drop.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// nginx serving `root`, a child process killed on drop.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    /// Configuration, logs and temporary files (removed after nginx is killed).
    _dir: tempfile::TempDir,
}

fn nginx_binary() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("nginx is not installed (Debian package `nginx`; .ci/run installs it)");
}

impl Nginx {
    /// Starts nginx on a free loopback port; with `auth`, basic auth `(user, password)`.
    pub async fn start(root: &Path, auth: Option<(&str, &str)>) -> Nginx {
        Self::start_with(root, auth, None).await
    }

    /// Like [`Nginx::start`]; with `tls` (PEM certificate chain, key), HTTPS.
    pub async fn start_with(
        root: &Path,
        auth: Option<(&str, &str)>,
        tls: Option<(&Path, &Path)>,
    ) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let d = dir.path().display();
        let auth_conf = match auth {
            Some((user, password)) => {
                std::fs::write(
                    dir.path().join("htpasswd"),
                    format!("{user}:{{PLAIN}}{password}\n"),
                )
                .expect("htpasswd");
                format!("auth_basic \"old provisioning\"; auth_basic_user_file {d}/htpasswd;")
            }
            None => String::new(),
        };
        let (ssl, tls_conf) = match tls {
            Some((cert, key)) => (
                " ssl",
                format!(
                    "ssl_certificate {}; ssl_certificate_key {};",
                    cert.display(),
                    key.display()
                ),
            ),
            None => ("", String::new()),
        };
        // 256 connections stand for an existing server's bounded capacity: beyond them nginx
        // closes idle keep-alive connections ("worker_connections are not enough, reusing
        // connections"). phonefleet's overlay opens at most --upstream-max-connections (64 by
        // default) to it, whatever the number of phones asking at once.
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n\
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;\n\
               uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               types {{ text/plain cfg; application/xml xml; audio/x-wav wav; }}\n\
               default_type application/octet-stream;\n\
               server {{ listen {addr}{ssl}; {tls_conf} root {root}; location / {{ {auth_conf} }} }}\n}}\n",
            root = root.display()
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).expect("nginx.conf");
        // Everything nginx writes is under `dir` (`-e`: the log of its start, before the
        // configuration is read), so copies of a test running at once never share a file.
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx {
            child,
            addr,
            _dir: dir,
        };
        super::eventually("nginx to listen", Duration::from_secs(30), || {
            let exited = nginx.child.try_wait().ok().flatten();
            async move {
                if let Some(status) = exited {
                    panic!("nginx exited: {status}");
                }
                tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
            }
        })
        .await;
        nginx
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Stops nginx now (the upstream goes down).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}
