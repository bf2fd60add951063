//! A hub and a leaf node, real nats-servers on loopback, as an agent's private cluster
//! reaches the hub: the hub runs JetStream in domain [`DOMAIN`] and accepts leaf node
//! connections; each leaf runs no JetStream, serves its own clients without
//! authentication, and dials out to the hub as one of the hub's users, whose permissions
//! the hub enforces on that connection. A leaf can be stopped (the link cut) and started
//! again on the same port.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

/// The hub's JetStream domain.
pub const DOMAIN: &str = "hub";

/// A user of the hub that a leaf node connects as: an nkey and its permissions.
pub struct LeafUser {
    /// The public key (`U…`), in the hub's configuration.
    pub public_key: String,
    /// The seed (`SU…`), in the leaf's.
    pub seed: String,
    /// A `permissions { … }` block, or empty for none.
    pub permissions: String,
}

impl LeafUser {
    /// A new key pair with `permissions`.
    pub fn new(permissions: String) -> Self {
        let pair = nkeys::KeyPair::new_user();
        Self {
            public_key: pair.public_key(),
            seed: pair.seed().expect("a new key pair has its seed"),
            permissions,
        }
    }
}

fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?)
}

fn spawn(config: &std::path::Path) -> anyhow::Result<Child> {
    Command::new(crate::nats::binary())
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", crate::nats::binary().display()))
}

/// The hub: JetStream in domain [`DOMAIN`], clients without credentials as its own user
/// (the hub's dispatchers and workers), leaf nodes as the [`LeafUser`]s given.
pub struct Hub {
    child: Option<Child>,
    client_port: u16,
    leaf_port: u16,
    _dir: tempfile::TempDir,
}

impl Hub {
    pub async fn start(leaf_users: &[&LeafUser]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ports = free_ports(2)?;
        let users: Vec<String> = leaf_users
            .iter()
            .map(|u| format!("{{ nkey: \"{}\"\n{}\n}}", u.public_key, u.permissions))
            .collect();
        let config = dir.path().join("hub.conf");
        std::fs::write(
            &config,
            format!(
                "server_name: hub\nlisten: 127.0.0.1:{client}\nlog_file: \"{log}\"\n\
                 jetstream {{ store_dir: {store:?}, domain: {DOMAIN} }}\n\
                 leafnodes {{ listen: 127.0.0.1:{leaf} }}\n\
                 no_auth_user: hub\n\
                 authorization {{ users: [\n{{ user: hub, password: hub }}\n{users}\n] }}\n",
                client = ports[0],
                leaf = ports[1],
                log = dir.path().join("hub.log").display(),
                store = dir.path().join("store"),
                users = users.join("\n"),
            ),
        )?;
        let child = spawn(&config)?;
        let hub = Self {
            child: Some(child),
            client_port: ports[0],
            leaf_port: ports[1],
            _dir: dir,
        };
        let url = hub.url();
        crate::wait::eventually(Duration::from_secs(15), "the hub's JetStream", || {
            let url = url.clone();
            async move {
                let client = async_nats::connect(url).await.ok()?;
                async_nats::jetstream::new(client)
                    .query_account()
                    .await
                    .ok()
                    .map(|_| ())
            }
        })
        .await?;
        Ok(hub)
    }

    /// Where the hub's own clients connect.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    /// The hub server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Where leaf nodes connect.
    pub fn leafnode_url(&self) -> String {
        format!("nats-leaf://127.0.0.1:{}", self.leaf_port)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A leaf node of a [`Hub`], connected as one [`LeafUser`].
pub struct Leaf {
    child: Option<Child>,
    client_port: u16,
    monitoring_port: u16,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Leaf {
    /// Starts a leaf dialing `hub_leafnode_url` as `user`, and waits until the link is up.
    pub async fn start(hub_leafnode_url: &str, user: &LeafUser) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ports = free_ports(2)?;
        let config = dir.path().join("leaf.conf");
        std::fs::write(
            &config,
            format!(
                "server_name: leaf-{client}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{http}\n\
                 log_file: \"{log}\"\n\
                 leafnodes {{ reconnect: 1, remotes = [ {{ url: \"{hub_leafnode_url}\", nkey: \"{seed}\" }} ] }}\n",
                client = ports[0],
                http = ports[1],
                log = dir.path().join("leaf.log").display(),
                seed = user.seed,
            ),
        )?;
        let mut leaf = Self {
            child: None,
            client_port: ports[0],
            monitoring_port: ports[1],
            config,
            _dir: dir,
        };
        leaf.start_again().await?;
        Ok(leaf)
    }

    /// Where the agents of the leaf's cluster connect.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    /// Stops the leaf (SIGKILL): the link to the hub is cut, and its clients lose their
    /// server.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the leaf again on the same port, and waits until its link to the hub is up.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.child = Some(spawn(&self.config)?);
        let monitoring = self.monitoring_port;
        crate::wait::eventually(
            Duration::from_secs(20),
            "the leaf node's link to the hub",
            || async move { (leafnodes(monitoring).await? > 0).then_some(()) },
        )
        .await
        .map_err(|e| {
            let log =
                std::fs::read_to_string(self.config.with_file_name("leaf.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            e.context(format!("leaf log ends: {tail:?}"))
        })?;
        if self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok())
            .flatten()
            .is_some()
        {
            bail!("the leaf node exited");
        }
        Ok(())
    }
}

/// How many leaf node connections the server with monitoring port `port` has (`/leafz`).
async fn leafnodes(port: u16) -> Option<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(b"GET /leafz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let body = response.split("\r\n\r\n").nth(1)?;
    serde_json::from_str::<serde_json::Value>(body).ok()?["leafnodes"].as_u64()
}

impl Drop for Leaf {
    fn drop(&mut self) {
        self.kill();
    }
}
