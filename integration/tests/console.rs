//! The web console in a real headless Chromium (WebDriver, through chromedriver), against
//! a real nats-server, kube-sim, the real dispatcher serving the console and real workers:
//!
//! - the operations list updates live when an operation is submitted over HTTP, and an
//!   operation's page shows its dry-run diff, its trace link and, for an unknown one, the
//!   API's problem detail;
//! - a rollout's waves change colour as it runs, and its pause, resume and approve buttons
//!   work;
//! - a cluster that kube-sim makes unreachable is shown as such, and a cluster's page shows
//!   its inventory;
//! - a dead letter is retried from its page, and its operation then succeeds;
//! - a token without permissions sees no control buttons, and is refused (403) when it
//!   sends the request anyway; an anonymous reader reads and changes nothing; the token is
//!   never in the URL or in local storage;
//! - pages work from the keyboard, and fit a phone-width screen.
//!
//! Each page's screenshot at 1280×800 is checked not to be blank and saved in
//! `docs/console/`. Without a browser the tests are skipped, except under `CI=true`.

#[path = "console/browser.rs"]
mod browser;

use std::time::Duration;

use browser::Browser;
use fantoccini::Locator;
use longshore_contract::rollout::state::ControlAction;
use longshore_integration::{
    nats::NatsServer,
    process::{Process, binary, free_port},
    wait::eventually,
    worker::Worker,
};
use longshore_kube_sim::{Faults, KubeSim, SimOptions};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const TRACE_URL: &str = "http://jaeger.example/trace/{trace_id}";

/// A system with tokens: `admin` may do everything, `viewer` only what an ordinary
/// pipeline token may (no rollout controls), and anonymous readers may read.
struct Console {
    _nats: NatsServer,
    sim: KubeSim,
    _kubeconfig: tempfile::NamedTempFile,
    /// The dispatcher's configuration, token files and log.
    _dir: tempfile::TempDir,
    url: String,
    _dispatcher: Process,
    _workers: Vec<Worker>,
    http: reqwest::Client,
    browser: Browser,
}

impl Console {
    /// `None` when no browser is installed (outside CI).
    async fn start(clusters: &[&str]) -> Option<Self> {
        let browser = Browser::start().await.unwrap()?;
        let nats = NatsServer::start().await.unwrap();
        let sim = KubeSim::start(SimOptions {
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
        let kubeconfig = tempfile::NamedTempFile::new().unwrap();
        sim.write_kubeconfig(kubeconfig.path()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for name in ["admin", "viewer"] {
            std::fs::write(dir.path().join(name), format!("{name}-secret")).unwrap();
        }
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let controls: Vec<&str> = ControlAction::ALL.iter().map(|a| a.as_str()).collect();
        let config = format!(
            r#"listen = "127.0.0.1:{port}"
clusters = {clusters:?}

[nats]
url = "{nats}"

[console]
trace_url = "{TRACE_URL}"

[console.anonymous_read]

[tokens.admin]
secret_file = "{dir}/admin"

[tokens.admin.policy]
manage_clusters = true
rollout_controls = {controls:?}

[tokens.viewer]
secret_file = "{dir}/viewer"
"#,
            nats = nats.url(),
            dir = dir.path().display(),
        );
        let file = dir.path().join("dispatcher.toml");
        std::fs::write(&file, config).unwrap();
        // The real binary: its trace ids (which the records carry) come from its telemetry.
        let dispatcher = Process::spawn(
            "dispatcher",
            &binary("longshore-dispatcher").unwrap(),
            &["--config", file.to_str().unwrap()],
            &[],
            dir.path(),
        )
        .unwrap();
        let http = reqwest::Client::new();
        eventually(WAIT, "the dispatcher to be ready", || async {
            let ready = http.get(format!("{url}/readyz")).send().await.ok()?;
            ready.status().is_success().then_some(())
        })
        .await
        .unwrap();
        let workers = (0..2)
            .map(|i| {
                let mut config =
                    Worker::config(&nats.url(), kubeconfig.path(), &format!("worker-{i}"));
                config.pool.max_deliver = 3;
                config.clusters.probe_interval = Duration::from_secs(1);
                Worker::start_with(config)
            })
            .collect();
        Some(Self {
            _nats: nats,
            sim,
            _kubeconfig: kubeconfig,
            _dir: dir,
            url,
            _dispatcher: dispatcher,
            _workers: workers,
            http,
            browser,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A request as `token` (`None`: without one).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(format!("{t}-secret"));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn submit(&self, body: Value) -> String {
        let (status, accepted) = self
            .call(
                reqwest::Method::POST,
                "/v1/operations",
                Some("admin"),
                Some(body),
            )
            .await;
        assert_eq!(status, 202, "{accepted}");
        accepted["id"].as_str().unwrap().to_owned()
    }

    async fn operation(&self, id: &str) -> Value {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/operations/{id}"),
            Some("admin"),
            None,
        )
        .await
        .1
    }

    async fn until_operation(&self, id: &str, state: &str) -> Value {
        eventually(WAIT, &format!("{id} to be {state}"), || async {
            let op = self.operation(id).await;
            (op["state"] == state).then_some(op)
        })
        .await
        .unwrap()
    }

    /// Opens `path` and signs in with `token` through the page's form.
    async fn sign_in(&self, path: &str, token: &str) {
        let b = &self.browser;
        b.goto(&self.url(path)).await.unwrap();
        let input = b
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css("#token-input"))
            .await
            .unwrap();
        input.send_keys(&format!("{token}-secret")).await.unwrap();
        b.click("#sign-in button[type=submit]").await.unwrap();
        b.until(
            "the session to name the token",
            &format!(
                "return document.querySelector('#session .who')?.textContent.includes('token \"{token}\"')"
            ),
        )
        .await
        .unwrap();
    }
}

fn config_map(name: &str, value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": "default"}, "data": {"greeting": value}})
}

fn apply(cluster: &str, manifests: Vec<Value>) -> Value {
    json!({"cluster": cluster, "action": "apply", "manifests": manifests})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operations_list_is_live_and_an_operation_shows_its_diff() {
    let Some(c) = Console::start(&["prod"]).await else {
        return;
    };
    let b = &c.browser;
    let first = c
        .submit(apply("prod", vec![config_map("web", "hello")]))
        .await;
    c.until_operation(&first, "succeeded").await;
    c.sign_in("/ui/operations", "admin").await;
    b.until(
        "the list to show the first operation",
        &format!("return document.querySelector('tr[data-id=\"{first}\"]')?.dataset.state === 'succeeded'"),
    )
    .await
    .unwrap();
    b.until(
        "the list to be following changes",
        "return document.querySelector('[data-live]')?.dataset.live === 'on'",
    )
    .await
    .unwrap();

    // Submitted over HTTP while the page is open: the row appears, and moves to succeeded,
    // with no reload.
    b.client
        .execute("window.__marker = 'still the same page'", Vec::new())
        .await
        .unwrap();
    let second = c
        .submit(apply(
            "prod",
            vec![config_map("api", "hi"), config_map("db", "x")],
        ))
        .await;
    let state = b
        .until(
            "the new operation to appear, succeeded",
            &format!(
                "const r = document.querySelector('#operations tbody tr'); return r?.dataset.id === '{second}' && r.dataset.state === 'succeeded' && r.dataset.state"
            ),
        )
        .await
        .unwrap();
    assert_eq!(state, "succeeded");
    let same = b
        .client
        .execute("return window.__marker", Vec::new())
        .await
        .unwrap();
    assert_eq!(
        same, "still the same page",
        "the list was reloaded, not updated"
    );
    b.screenshot("operations").await.unwrap();

    // A filter shows only what matches.
    b.goto(&c.url("/ui/operations?state=failed")).await.unwrap();
    b.until(
        "the filtered list to say none match",
        "return document.getElementById('no-operations')?.hidden === false",
    )
    .await
    .unwrap();
    assert!(!b.has("#operations tbody tr").await.unwrap());

    // A dry run: its page renders the diff, removed and added lines apart.
    let dry = c
        .submit(
            json!({"cluster": "prod", "action": "apply", "options": {"dryRun": true},
                       "manifests": [config_map("web", "bonjour")]}),
        )
        .await;
    let record = c.until_operation(&dry, "succeeded").await;
    b.goto(&c.url("/ui/operations")).await.unwrap();
    b.until(
        "the dry run in the list",
        &format!("return !!document.querySelector('tr[data-id=\"{dry}\"] a')"),
    )
    .await
    .unwrap();
    b.click(&format!("tr[data-id=\"{dry}\"] td.id a"))
        .await
        .unwrap();
    let diff = b
        .until(
            "the diff",
            "const d = document.querySelector('pre.diff'); return d && {del: [...d.querySelectorAll('del')].map(e => e.textContent), ins: [...d.querySelectorAll('ins')].map(e => e.textContent), colour: getComputedStyle(d.querySelector('ins')).backgroundColor, deleted: getComputedStyle(d.querySelector('del')).backgroundColor}",
        )
        .await
        .unwrap();
    assert!(
        diff["del"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "- data.greeting: \"hello\""),
        "{diff}"
    );
    assert!(
        diff["ins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "+ data.greeting: \"bonjour\""),
        "{diff}"
    );
    assert_ne!(
        diff["colour"], diff["deleted"],
        "added and removed lines look alike"
    );
    // The trace link follows the configured template.
    let trace = record["traceId"]
        .as_str()
        .expect("the record has a trace id");
    let href = b
        .until(
            "the trace link",
            "return [...document.querySelectorAll('dd a')].find(a => a.href.includes('/trace/'))?.href",
        )
        .await
        .unwrap();
    assert_eq!(href, TRACE_URL.replace("{trace_id}", trace));
    assert_eq!(
        b.client.current_url().await.unwrap().path(),
        format!("/ui/operations/{dry}")
    );
    b.screenshot("operation").await.unwrap();

    // An error from the API is shown as its problem detail.
    b.goto(&c.url("/ui/operations/op-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"))
        .await
        .unwrap();
    let problem = b
        .until(
            "the problem detail",
            "return document.querySelector('section.problem')?.innerText",
        )
        .await
        .unwrap();
    let problem = problem.as_str().unwrap();
    assert!(problem.contains("Not Found"), "{problem}");
    assert!(
        problem.contains("operation op-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa not found"),
        "{problem}"
    );
    assert!(problem.contains("HTTP 404"), "{problem}");
}

async fn rollout_state(c: &Console, id: &str) -> Value {
    c.call(
        reqwest::Method::GET,
        &format!("/v1/fleet-rollouts/{id}"),
        Some("admin"),
        None,
    )
    .await
    .1
}

async fn until_rollout(c: &Console, id: &str, state: &str) -> Value {
    eventually(WAIT, &format!("rollout {id} to be {state}"), || async {
        let r = rollout_state(c, id).await;
        (r["state"] == state).then_some(r)
    })
    .await
    .unwrap()
}

/// Submits a two-wave rollout over `clusters` that waits for an approval before wave 2.
async fn gated_rollout(c: &Console, clusters: &[&str]) -> String {
    let (status, accepted) = c
        .call(
            reqwest::Method::POST,
            "/v1/fleet-rollouts",
            Some("admin"),
            Some(json!({
                "template": {"action": "apply", "manifests": [config_map("fleet", "1")]},
                "clusters": {"names": clusters},
                "strategy": {"waves": [1, "100%"], "approvalBefore": [2]},
            })),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    accepted["id"].as_str().unwrap().to_owned()
}

/// A cluster cell's state and its background colour, as the page draws it.
async fn cell(b: &Browser, cluster: &str) -> (String, String) {
    let v = b
        .client
        .execute(
            &format!(
                "const c = document.querySelector('.cell[data-cluster=\"{cluster}\"]'); return c ? [c.dataset.state, getComputedStyle(c).backgroundColor] : null"
            ),
            Vec::new(),
        )
        .await
        .unwrap();
    (
        v[0].as_str().unwrap_or_default().to_owned(),
        v[1].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollouts_waves_change_colour_and_its_controls_work() {
    let clusters = ["eu-1", "eu-2", "us-1", "us-2"];
    let Some(c) = Console::start(&clusters).await else {
        return;
    };
    let b = &c.browser;
    let id = gated_rollout(&c, &clusters).await;
    until_rollout(&c, &id, "waiting_approval").await;
    c.sign_in(&format!("/ui/rollouts/{id}"), "admin").await;
    b.until(
        "the first wave drawn succeeded",
        "return document.querySelector('section.wave[data-wave=\"1\"]')?.dataset.state === 'succeeded'",
    )
    .await
    .unwrap();
    let (first, done_colour) = cell(b, "eu-1").await;
    assert_eq!(first, "succeeded");
    let (waiting, waiting_colour) = cell(b, "us-2").await;
    assert_eq!(waiting, "pending");
    assert_ne!(
        done_colour, waiting_colour,
        "pending and succeeded cells look alike"
    );
    b.until(
        "the page to follow the rollout",
        "return document.querySelector('[data-live]')?.dataset.live === 'on'",
    )
    .await
    .unwrap();

    // Pause: the rollout is paused, and the page says so and offers resume.
    b.click("button[data-control=pause]").await.unwrap();
    until_rollout(&c, &id, "paused").await;
    b.until(
        "the page to offer resume",
        "return !!document.querySelector('button[data-control=resume]') && !document.querySelector('button[data-control=approve]')",
    )
    .await
    .unwrap();
    b.screenshot("rollout").await.unwrap();
    b.click("button[data-control=resume]").await.unwrap();
    until_rollout(&c, &id, "waiting_approval").await;

    // Approve: the second wave runs, and its cells change colour on the open page.
    b.until(
        "the approve button",
        "return !!document.querySelector('button[data-control=approve]')",
    )
    .await
    .unwrap();
    b.click("button[data-control=approve]").await.unwrap();
    b.until(
        "the last cell drawn succeeded",
        "return document.querySelector('.cell[data-cluster=\"us-2\"]')?.dataset.state === 'succeeded'",
    )
    .await
    .unwrap();
    let (_, now) = cell(b, "us-2").await;
    assert_eq!(
        now, done_colour,
        "a succeeded cell has the succeeded colour"
    );
    assert_ne!(now, waiting_colour);
    let done = until_rollout(&c, &id, "succeeded").await;
    let controls: Vec<&str> = done["controls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert_eq!(controls, ["pause", "resume", "approve"]);
    assert!(
        done["controls"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["by"] == "admin")
    );
    b.until(
        "the page to show it succeeded, with no controls left but none",
        "return document.querySelector('h1 .badge')?.textContent === 'succeeded' && !document.querySelector('button[data-control=pause]')",
    )
    .await
    .unwrap();

    b.click("nav a[data-section=rollouts]").await.unwrap();
    b.until(
        "the rollouts list",
        &format!("return !!document.querySelector('#rollouts tr[data-id=\"{id}\"]')"),
    )
    .await
    .unwrap();
    b.screenshot("rollouts").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_going_unreachable_is_shown_and_its_inventory_listed() {
    let Some(c) = Console::start(&["prod", "staging"]).await else {
        return;
    };
    let b = &c.browser;
    let op = c
        .submit(apply(
            "prod",
            vec![config_map("web", "hello"), config_map("api", "hi")],
        ))
        .await;
    c.until_operation(&op, "succeeded").await;
    c.sign_in("/ui/clusters", "admin").await;
    b.until(
        "both clusters shown ready",
        "return [...document.querySelectorAll('#clusters tbody tr')].filter(r => r.dataset.phase === 'ready').length === 2",
    )
    .await
    .unwrap();
    assert!(!b.has("#clusters tr.attention").await.unwrap());

    c.sim.cluster("staging").unwrap().set_faults(Faults {
        unavailable: true,
        ..Default::default()
    });
    let shown = b
        .until(
            "staging shown unreachable, standing out",
            "const r = document.querySelector('#clusters tr[data-cluster=\"staging\"]'); return r?.dataset.phase === 'unreachable' && r.classList.contains('attention') && document.getElementById('cluster-summary').textContent",
        )
        .await
        .unwrap();
    assert!(
        shown.as_str().unwrap().contains("staging (unreachable)"),
        "{shown}"
    );
    // The unreachable cluster is listed first.
    let first = b
        .client
        .execute(
            "return document.querySelector('#clusters tbody tr').dataset.cluster",
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(first, "staging");
    b.screenshot("clusters").await.unwrap();

    b.click("#clusters a[href=\"/ui/clusters/prod\"]")
        .await
        .unwrap();
    let objects = b
        .until(
            "prod's inventory",
            "const rows = [...document.querySelectorAll('#inventory tbody tr')]; return rows.length === 2 && rows.map(r => r.dataset.object + ' ' + r.cells[1].textContent)",
        )
        .await
        .unwrap();
    assert_eq!(
        objects,
        json!(["ConfigMap default/api ready", "ConfigMap default/web ready"])
    );
    let watched = b
        .until(
            "who watches prod",
            "return [...document.querySelectorAll('dt')].find(d => d.textContent === 'Watched by')?.nextElementSibling.textContent",
        )
        .await
        .unwrap();
    assert!(
        watched.as_str().unwrap().starts_with("worker-"),
        "{watched}"
    );
    b.screenshot("cluster").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_retried_from_its_page() {
    let Some(c) = Console::start(&["prod"]).await else {
        return;
    };
    let b = &c.browser;
    let cluster = c.sim.cluster("prod").unwrap();
    cluster.set_faults(Faults::writes_answered(503));
    let id = c
        .submit(apply("prod", vec![config_map("web", "hello")]))
        .await;
    c.until_operation(&id, "dead_lettered").await;
    c.sign_in("/ui/dead-letters", "admin").await;
    let reason = b
        .until(
            "the dead letter listed",
            &format!("return document.querySelector('#dead-letters tr[data-id=\"{id}\"]')?.cells[2].textContent"),
        )
        .await
        .unwrap();
    assert!(
        reason
            .as_str()
            .unwrap()
            .contains("gave up after 3 deliveries"),
        "{reason}"
    );
    b.screenshot("dead-letters").await.unwrap();

    cluster.set_faults(Faults::default());
    b.click(&format!("button[data-retry=\"{id}\"]"))
        .await
        .unwrap();
    b.until(
        "the page to say it was requeued and list it no more",
        &format!(
            "return document.getElementById('notice').textContent.includes('Requeued') && !document.querySelector('#dead-letters tr[data-id=\"{id}\"]')"
        ),
    )
    .await
    .unwrap();
    let done = c.until_operation(&id, "succeeded").await;
    assert!(done["attempts"].as_u64().unwrap() > 3, "{done}");
    let applied = cluster
        .writes()
        .into_iter()
        .filter(|w| w.changed && w.name.as_deref() == Some("web"))
        .count();
    assert_eq!(applied, 1, "applied once, after the retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_permissions_no_controls_are_shown_and_sending_one_is_refused() {
    let clusters = ["eu-1", "eu-2"];
    let Some(c) = Console::start(&clusters).await else {
        return;
    };
    let b = &c.browser;
    let id = gated_rollout(&c, &clusters).await;
    until_rollout(&c, &id, "waiting_approval").await;

    // The viewer token sees the rollout, and no control.
    c.sign_in(&format!("/ui/rollouts/{id}"), "viewer").await;
    b.until(
        "the rollout drawn",
        "return document.querySelectorAll('ul.cells .cell').length === 2",
    )
    .await
    .unwrap();
    assert!(!b.has("button[data-control]").await.unwrap());
    // Sent anyway, from the page with its token: refused, and nothing changes.
    let answer = b
        .client
        .execute_async(
            &format!(
                "const done = arguments[0]; fetch('/v1/fleet-rollouts/{id}/approve', {{method: 'POST', headers: {{Authorization: 'Bearer ' + sessionStorage.getItem('longshore.token')}}}}).then(async r => done([r.status, await r.json()]))"
            ),
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(answer[0], 403, "{answer}");
    assert!(
        answer[1]["detail"]
            .as_str()
            .unwrap()
            .contains("token \"viewer\" may not approve"),
        "{answer}"
    );
    assert_eq!(rollout_state(&c, &id).await["state"], "waiting_approval");
    // The token is in this tab's session storage only, never in the URL or local storage.
    let kept = b
        .client
        .execute(
            "return [location.href, localStorage.length, sessionStorage.getItem('longshore.token'), document.cookie]",
            Vec::new(),
        )
        .await
        .unwrap();
    assert!(
        !kept[0].as_str().unwrap().contains("viewer-secret"),
        "{kept}"
    );
    assert_eq!(kept[1], 0, "{kept}");
    assert_eq!(kept[2], "viewer-secret");
    assert_eq!(kept[3], "");

    // The admin token, on the same page, gets the buttons.
    b.click("#sign-out").await.unwrap();
    c.sign_in(&format!("/ui/rollouts/{id}"), "admin").await;
    b.until(
        "the approve button for admin",
        "return !!document.querySelector('button[data-control=approve]')",
    )
    .await
    .unwrap();

    // Signed out: an anonymous reader sees the page read-only, with no controls and no
    // retry; the API refuses it anything else.
    b.click("#sign-out").await.unwrap();
    b.goto(&c.url(&format!("/ui/rollouts/{id}"))).await.unwrap();
    b.until(
        "the rollout drawn for an anonymous reader",
        "return document.querySelectorAll('ul.cells .cell').length === 2 && document.querySelector('#session .who')?.textContent === 'Read-only'",
    )
    .await
    .unwrap();
    assert!(!b.has("button[data-control]").await.unwrap());
    let (status, refused) = c
        .call(
            reqwest::Method::POST,
            &format!("/v1/fleet-rollouts/{id}/approve"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 401, "{refused}");
    let (status, me) = c.call(reqwest::Method::GET, "/v1/whoami", None, None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["readOnly"], true);
    assert_eq!(me["may"]["rolloutControls"], json!([]));
}

/// Presses `key` on the element that has the focus; returns what has it then, as
/// `tag text`.
async fn press(b: &Browser, key: fantoccini::key::Key) -> String {
    b.client
        .active_element()
        .await
        .unwrap()
        .send_keys(&char::from(key).to_string())
        .await
        .unwrap();
    let focused = b
        .client
        .execute(
            "const e = document.activeElement; return `${e.tagName.toLowerCase()} ${e.textContent.trim()}`",
            Vec::new(),
        )
        .await
        .unwrap();
    focused.as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_work_from_the_keyboard_and_fit_a_phone_width_screen() {
    let clusters = ["eu-1", "eu-2"];
    let Some(c) = Console::start(&clusters).await else {
        return;
    };
    let b = &c.browser;
    let op = c
        .submit(
            json!({"cluster": "eu-1", "action": "apply", "options": {"dryRun": true},
                       "manifests": [config_map("a-config-map-with-a-rather-long-name", "x")]}),
        )
        .await;
    c.until_operation(&op, "succeeded").await;
    let id = gated_rollout(&c, &clusters).await;
    until_rollout(&c, &id, "waiting_approval").await;
    c.sign_in("/ui/operations", "admin").await;

    // From the top of a page: the skip link, then the sections, each reached with Tab and
    // followed with Enter.
    use fantoccini::key::Key;
    b.goto(&c.url("/ui/operations")).await.unwrap();
    b.until(
        "the operations page",
        "return !!document.querySelector('#operations tbody tr')",
    )
    .await
    .unwrap();
    b.client
        .execute("document.body.focus()", Vec::new())
        .await
        .unwrap();
    let mut focused = Vec::new();
    for _ in 0..4 {
        focused.push(press(b, Key::Tab).await);
    }
    assert_eq!(
        focused,
        [
            "a Skip to content",
            "a longshore",
            "a Operations",
            "a Rollouts"
        ]
    );
    press(b, Key::Enter).await;
    b.until(
        "the rollouts page, reached from the keyboard",
        &format!(
            "return location.pathname === '/ui/rollouts' && !!document.querySelector('#rollouts tr[data-id=\"{id}\"]')"
        ),
    )
    .await
    .unwrap();
    let current = b
        .client
        .execute(
            "return document.querySelector('nav a[aria-current=page]')?.textContent",
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(current, "Rollouts");

    b.viewport(390, 844).await.unwrap();
    for (path, ready) in [
        ("/ui/operations", "#operations tbody tr"),
        (&*format!("/ui/operations/{op}"), "pre.diff"),
        (&*format!("/ui/rollouts/{id}"), ".cell"),
        ("/ui/clusters", "#clusters tbody tr"),
        ("/ui/dead-letters", "#no-dead-letters"),
    ] {
        b.goto(&c.url(path)).await.unwrap();
        let fits = b
            .until(
                &format!("{path} drawn"),
                &format!(
                    "return document.querySelector('{ready}') && [document.documentElement.scrollWidth, window.innerWidth]"
                ),
            )
            .await
            .unwrap();
        assert!(
            fits[0].as_u64().unwrap() <= fits[1].as_u64().unwrap(),
            "{path} is wider than the screen: {fits}"
        );
    }
}
