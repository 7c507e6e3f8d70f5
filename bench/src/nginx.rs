//! The reference hop: nginx as an HTTP/1.1 reverse proxy with keep-alive
//! upstreams, one worker process, so two of them in a row cost what two
//! plain proxy hops cost on this machine.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::sidecar::{Probe, Usage, free_port};

/// One nginx process proxying `port` to `upstream`.
pub struct Nginx {
    child: Child,
    pub port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The nginx binary, if this machine has one.
pub fn binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

fn config(port: u16, upstream: u16, prefix: &Path) -> String {
    // master_process off: the one process serving requests is the one whose
    // CPU time is read.
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\nerror_log {prefix}/error.log crit;\npid {prefix}/nginx.pid;\n\
events {{ worker_connections 1024; }}\n\
http {{\n  access_log off;\n  client_body_temp_path {prefix}/body;\n  proxy_temp_path {prefix}/proxy;\n\
  fastcgi_temp_path {prefix}/fastcgi;\n  uwsgi_temp_path {prefix}/uwsgi;\n  scgi_temp_path {prefix}/scgi;\n\
  upstream next {{ server 127.0.0.1:{upstream}; keepalive 64; }}\n\
  server {{\n    listen 127.0.0.1:{port};\n    keepalive_requests 1000000;\n    location / {{\n\
      proxy_pass http://next;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
      proxy_buffering off;\n      proxy_request_buffering off;\n    }}\n  }}\n}}\n",
        prefix = prefix.display()
    )
}

impl Nginx {
    /// Starts a proxy in front of `upstream` and waits until it accepts.
    pub async fn start(binary: &Path, home: &Path, name: &str, upstream: u16) -> anyhow::Result<Self> {
        let dir = home.join(name);
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config(port, upstream, &dir))?;
        let child = Command::new(binary)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let mut n = Self { child, port };
        let t0 = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Some(code) = n.child.try_wait()? {
                bail!("nginx {name} exited with {code}");
            }
            if t0.elapsed() > Duration::from_secs(10) {
                bail!("nginx {name} not listening after 10 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(n)
    }
}

impl Probe for Nginx {
    fn usage(&self) -> anyhow::Result<Usage> {
        Usage::of(self.child.id())
    }
}
