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

/// Returns once the server has taken in everything `client` sent before this call, its
/// subscriptions included, so that what other connections publish from now on reaches
/// them. `Client::flush` is not enough: it only hands the bytes to the socket, and a
/// publish on another connection can overtake a subscription still on its way.
pub async fn round_trip(client: &async_nats::Client) -> anyhow::Result<()> {
    // The server answers a connection's requests in the order it sent them.
    tokio::time::timeout(
        Duration::from_secs(10),
        client.request("$JS.API.INFO", "".into()),
    )
    .await
    .context("no answer from the server within 10 s")?
    .context("the server did not answer")?;
    Ok(())
}

pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    /// The HTTP monitoring port (`/varz`, `/jsz`), when started with one.
    monitoring_port: Option<u16>,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a single JetStream server on a port the server picks itself (so no other test
    /// can race for it), and waits until it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_inner(false).await
    }

    /// Like [`start`](Self::start), plus the HTTP monitoring endpoint on a port the server
    /// picks (see [`monitoring_url`](Self::monitoring_url)): what KEDA's `nats-jetstream`
    /// scaler reads the consumer's lag from.
    pub async fn start_with_monitoring() -> anyhow::Result<Self> {
        Self::start_inner(true).await
    }

    async fn start_inner(monitoring: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ports_dir = dir.path().join("ports");
        std::fs::create_dir_all(&ports_dir)?;
        let http_port = monitoring.then_some("-1");
        let child = spawn(dir.path(), "-1", http_port, Some(&ports_dir))?;
        let pid = child.id();
        let mut server = Self {
            child: Some(child),
            port: 0,
            monitoring_port: None,
            dir,
        };
        let ports = wait_for_ports_file(&ports_dir, pid, monitoring).await?;
        server.port = ports.client;
        server.monitoring_port = ports.monitoring;
        server.wait_ready().await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>` of the monitoring endpoint, if the server was started
    /// with [`start_with_monitoring`](Self::start_with_monitoring).
    pub fn monitoring_url(&self) -> Option<String> {
        self.monitoring_port
            .map(|port| format!("http://127.0.0.1:{port}"))
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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
        let http_port = self.monitoring_port.map(|p| p.to_string());
        self.child = Some(spawn(
            self.dir.path(),
            &self.port.to_string(),
            http_port.as_deref(),
            None,
        )?);
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

fn spawn(
    dir: &Path,
    port: &str,
    http_port: Option<&str>,
    ports_dir: Option<&Path>,
) -> anyhow::Result<Child> {
    let mut cmd = Command::new(binary());
    cmd.args(["-js", "-a", "127.0.0.1", "-p", port, "-sd"])
        .arg(dir.join("store"))
        .arg("-l")
        .arg(dir.join("nats.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(http_port) = http_port {
        cmd.args(["-m", http_port]);
    }
    if let Some(ports_dir) = ports_dir {
        cmd.arg("--ports_file_dir").arg(ports_dir);
    }
    cmd.spawn().with_context(|| {
        format!(
            "starting {} (run `source deploy/local/prereqs.sh && ensure_nats_server`, which installs it into .longshore/venv and sets NATS_SERVER_BIN, or set NATS_SERVER_BIN yourself)",
            binary().display()
        )
    })
}

struct Ports {
    client: u16,
    monitoring: Option<u16>,
}

fn port_of(url: Option<&str>) -> Option<u16> {
    url?.rsplit(':').next()?.parse().ok()
}

/// nats-server writes `<name>_<pid>.ports` with the client URL it bound (and the monitoring
/// URL, when it serves one).
async fn wait_for_ports_file(dir: &Path, pid: u32, monitoring: bool) -> anyhow::Result<Ports> {
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
            let client = port_of(ports["nats"][0].as_str());
            let http = port_of(ports["monitoring"][0].as_str());
            if let Some(client) = client
                && (http.is_some() || !monitoring)
            {
                return Ok(Ports {
                    client,
                    monitoring: http,
                });
            }
        }
        if std::time::Instant::now() >= deadline {
            bail!("nats-server wrote no ports file within 15s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A JetStream cluster of real nats-servers on loopback, for R3 streams and node failures.
pub struct NatsCluster {
    nodes: Vec<ClusterNode>,
    _dir: tempfile::TempDir,
}

struct ClusterNode {
    config: PathBuf,
    client_port: u16,
    monitoring_port: u16,
    child: Option<Child>,
}

impl NatsCluster {
    /// Starts `size` nodes routed to each other, and waits until JetStream has a meta leader.
    pub async fn start(size: usize) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        // Hold every port until all are chosen, so no two nodes get the same one.
        // Per node: a client port, a route port and a monitoring port.
        let listeners: Vec<std::net::TcpListener> = (0..size * 3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()?;
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<_, _>>()?;
        drop(listeners);
        let routes: Vec<String> = (0..size)
            .map(|i| format!("nats://127.0.0.1:{}", ports[size + i]))
            .collect();
        let mut nodes = Vec::new();
        for i in 0..size {
            let store = dir.path().join(format!("n{i}"));
            let config = dir.path().join(format!("n{i}.conf"));
            let others: Vec<&str> = routes
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, r)| r.as_str())
                .collect();
            std::fs::write(
                &config,
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{http}\n\
                     log_file: \"{log}\"\njetstream {{ store_dir: {store:?} }}\n\
                     cluster {{ name: longshore, listen: 127.0.0.1:{route}, routes: [{others}] }}\n",
                    client = ports[i],
                    http = ports[2 * size + i],
                    log = dir.path().join(format!("n{i}.log")).display(),
                    store = store,
                    route = ports[size + i],
                    others = others.join(", "),
                ),
            )?;
            nodes.push(ClusterNode {
                config,
                client_port: ports[i],
                monitoring_port: ports[2 * size + i],
                child: None,
            });
        }
        let mut cluster = Self { nodes, _dir: dir };
        for i in 0..size {
            cluster.start_node(i)?;
        }
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    /// All client URLs, comma-separated, as the binaries take them.
    pub fn url(&self) -> String {
        self.urls().join(",")
    }

    /// All client URLs, as async-nats takes them.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect()
    }

    /// The process ids of the running nodes, in node order.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(Child::id))
            .collect()
    }

    /// `http://127.0.0.1:<port>` of node `i`'s monitoring endpoint (`/connz`, `/jsz`).
    pub fn monitoring_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].monitoring_port)
    }

    /// Node `i`'s `server_name`, as JetStream names stream and consumer leaders.
    pub fn node_name(i: usize) -> String {
        format!("n{i}")
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again with its store, and waits until it accepts connections.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        self.start_node(i)?;
        let port = self.nodes[i].client_port;
        crate::wait::eventually(
            Duration::from_secs(15),
            "a restarted nats node to listen",
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await
    }

    fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let child = Command::new(binary())
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary().display()))?;
        node.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let urls = self.urls();
        crate::wait::eventually(
            Duration::from_secs(30),
            "the JetStream cluster to elect a meta leader",
            || {
                let urls = urls.clone();
                async move {
                    let client = async_nats::connect(urls).await.ok()?;
                    let js = async_nats::jetstream::new(client);
                    js.query_account().await.ok().map(|_| ())
                }
            },
        )
        .await
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
