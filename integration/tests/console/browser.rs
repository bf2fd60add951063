//! A real headless Chromium, driven over WebDriver by chromedriver, for the console's tests.
//!
//! The browser is Debian's `chromium` and `chromium-driver` (`integration/test.sh` installs
//! them), or the binaries `LONGSHORE_CHROMIUM` and `LONGSHORE_CHROMEDRIVER` name. With
//! neither, a test is skipped, except under `CI=true`, where a missing browser fails it.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use longshore_integration::wait::eventually;
use serde_json::{Value, json};

/// The window the console's screenshots are taken at.
pub const WIDTH: u32 = 1280;
pub const HEIGHT: u32 = 800;

/// How long a page may take to show what a test waits for.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct Browser {
    pub client: Client,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

fn found(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path));
    }
    candidates
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map(Path::to_path_buf)
}

impl Browser {
    /// A browser session at 1280×800, or `None` (the test is skipped) when no browser is
    /// installed outside CI.
    pub async fn start() -> anyhow::Result<Option<Self>> {
        let chromium = found(
            "LONGSHORE_CHROMIUM",
            &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        );
        let driver = found("LONGSHORE_CHROMEDRIVER", &["/usr/bin/chromedriver"]);
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                bail!(
                    "no Chromium and chromedriver (apt-get install chromium chromium-driver, or set LONGSHORE_CHROMIUM and LONGSHORE_CHROMEDRIVER); CI=true makes this a failure"
                );
            }
            eprintln!(
                "skipped: no Chromium and chromedriver installed (integration/test.sh installs them)"
            );
            return Ok(None);
        };
        let port = longshore_integration::process::free_port();
        // In a process group of its own, so dropping it ends Chromium's processes too.
        let driver = Command::new(&driver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", driver.display()))?;
        let profile = tempfile::tempdir()?;
        // As root (CI), Chromium's sandbox cannot start; the rest keep it off this
        // machine's closed network and its first-run work.
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--hide-scrollbars".to_owned(),
            "--force-device-scale-factor=1".to_owned(),
            format!("--window-size={WIDTH},{HEIGHT}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        });
        let Value::Object(caps) = caps else {
            unreachable!("a JSON object")
        };
        let url = format!("http://127.0.0.1:{port}");
        let mut driver = Driver(driver);
        let http = reqwest::Client::new();
        let listening = eventually(WAIT, "chromedriver to listen", || async {
            let ready: Value = http
                .get(format!("{url}/status"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (ready["value"]["ready"] == true).then_some(())
        })
        .await;
        if let Err(e) = listening {
            match driver.0.try_wait() {
                Ok(Some(status)) => bail!("{e}: chromedriver exited ({status})"),
                _ => bail!("{e}: chromedriver runs but does not answer"),
            }
        }
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .with_context(|| format!("starting {} through chromedriver", chromium.display()))?;
        let browser = Browser {
            client,
            _driver: driver,
            _profile: profile,
        };
        browser.viewport(WIDTH, HEIGHT).await?;
        Ok(Some(browser))
    }
}

/// chromedriver, killed when the browser is dropped (its Chromium goes with it).
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        // `--` before the negative id: procps' kill reads `-KILL -<pgid>` as `-1`, every
        // process there is.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.0.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Browser {
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.client.goto(url).await?;
        Ok(())
    }

    /// Waits until `script` (a JavaScript expression's body: `return …`) returns something
    /// other than `null`, `false` or `undefined`, and returns it.
    pub async fn until(&self, what: &str, script: &str) -> anyhow::Result<Value> {
        let reached = eventually(WAIT, what, || async {
            match self.client.execute(script, Vec::new()).await {
                Ok(Value::Null | Value::Bool(false)) | Err(_) => None,
                Ok(v) => Some(v),
            }
        })
        .await;
        match reached {
            Ok(v) => Ok(v),
            Err(e) => {
                let main = self
                    .client
                    .execute(
                        "return document.getElementById('main')?.innerText",
                        Vec::new(),
                    )
                    .await
                    .unwrap_or(Value::Null);
                let notice = self
                    .client
                    .execute(
                        "return document.getElementById('notice')?.innerText",
                        Vec::new(),
                    )
                    .await
                    .unwrap_or(Value::Null);
                bail!("{e}; the page shows: {main}; its notice: {notice}")
            }
        }
    }

    /// Clicks the element `css` finds, once it is there. A live page may draw it again
    /// between finding and clicking it: then it is found again.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let clicked = eventually(WAIT, &format!("{css} to be clicked"), || async {
            self.try_click(css).await.ok()
        })
        .await;
        match clicked {
            Ok(()) => Ok(()),
            Err(e) => Err(self.try_click(css).await.err().unwrap_or(e)),
        }
    }

    async fn try_click(&self, css: &str) -> anyhow::Result<()> {
        self.client
            .find(Locator::Css(css))
            .await
            .with_context(|| format!("finding {css}"))?
            .click()
            .await
            .with_context(|| format!("clicking {css}"))?;
        Ok(())
    }

    /// Sizes the window so that the page's viewport is `width`×`height`.
    pub async fn viewport(&self, width: u32, height: u32) -> anyhow::Result<()> {
        let inner =
            "return [window.innerWidth, window.innerHeight, window.outerWidth, window.outerHeight]";
        let size = |v: &Value, i: usize| v[i].as_u64().unwrap_or(0) as u32;
        let now = self.client.execute(inner, Vec::new()).await?;
        let (dx, dy) = (
            size(&now, 2).saturating_sub(size(&now, 0)),
            size(&now, 3).saturating_sub(size(&now, 1)),
        );
        self.client.set_window_size(width + dx, height + dy).await?;
        let now = self.client.execute(inner, Vec::new()).await?;
        if (size(&now, 0), size(&now, 1)) != (width, height) {
            bail!("the viewport is {now}, not {width}×{height}");
        }
        Ok(())
    }

    /// Whether anything matches `css` now.
    pub async fn has(&self, css: &str) -> anyhow::Result<bool> {
        Ok(!self.client.find_all(Locator::Css(css)).await?.is_empty())
    }

    /// Takes a screenshot at 1280×800, checks it is not blank (many colours, the page's
    /// text among them) and saves it as `docs/console/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<()> {
        let png = self.client.screenshot().await?;
        let (width, height, colours) = look(&png)?;
        if (width, height) != (WIDTH, HEIGHT) {
            bail!("the screenshot {name} is {width}×{height}, not {WIDTH}×{HEIGHT}");
        }
        if colours < 16 {
            bail!("the screenshot {name} looks blank: {colours} colours");
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/console");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("{name}.png")), png)?;
        Ok(())
    }
}

/// A PNG's size and how many distinct colours it has (up to 256 counted).
fn look(png_bytes: &[u8]) -> anyhow::Result<(u32, u32, usize)> {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size().context("PNG too large")?];
    let info = reader.next_frame(&mut buf)?;
    let pixel = info.color_type.samples() * usize::from(info.bit_depth as u8).div_ceil(8);
    let mut colours = std::collections::HashSet::new();
    for px in buf[..info.buffer_size()].chunks(pixel) {
        colours.insert(px.to_vec());
        if colours.len() >= 256 {
            break;
        }
    }
    Ok((info.width, info.height, colours.len()))
}
