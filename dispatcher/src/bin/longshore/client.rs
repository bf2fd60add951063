//! The dispatcher's API as the CLI uses it.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::time::Instant;

/// Why a command did not succeed, and so its exit code.
pub enum Failure {
    /// Bad arguments or input files: exit 2.
    Usage(String),
    /// The dispatcher refused or could not be reached: exit 1.
    Request(String),
    /// The operation did not finish in time: exit 2.
    Timeout {
        record: Option<Value>,
        after: Duration,
    },
}

/// How a paged listing names the page to go on from: the query parameter to send, and
/// the field of a page that holds it.
#[derive(Clone, Copy)]
pub struct Cursor {
    pub param: &'static str,
    pub field: &'static str,
}

pub struct Client {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
}

/// The longest one status request waits; the loop asks again until the timeout.
const WAIT_PER_REQUEST: Duration = Duration::from_secs(60);

/// How long a request that does not wait for anything may take.
const API_TIMEOUT: Duration = Duration::from_secs(30);

impl Client {
    pub fn new(server: &str, token: Option<String>) -> Result<Self, Failure> {
        let server = server.trim_end_matches('/').to_owned();
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(Failure::Usage(format!(
                "--server {server:?}: must start with http:// or https://"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Failure::Usage(e.to_string()))?;
        Ok(Self {
            http,
            server,
            token,
        })
    }

    fn request(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn submit(&self, body: &Value, key: Option<&str>) -> Result<Value, Failure> {
        let mut req = self.request(self.http.post(format!("{}/v1/operations", self.server)));
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        send(req.json(body)).await
    }

    pub async fn status(&self, id: &str) -> Result<Value, Failure> {
        send(self.request(self.http.get(self.url(id)?))).await
    }

    /// Long-polls until the operation is terminal or `timeout` passes.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Value, Failure> {
        let url = self.url(id)?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = left.min(WAIT_PER_REQUEST);
            let req = self
                .request(self.http.get(&url))
                .query(&[("wait", format!("{}ms", wait.as_millis()))])
                .timeout(wait + Duration::from_secs(30));
            let record = send(req).await?;
            let state = record["state"].as_str().unwrap_or_default();
            if !matches!(state, "queued" | "running") {
                return Ok(record);
            }
            if Instant::now() >= deadline {
                return Err(Failure::Timeout {
                    record: Some(record),
                    after: timeout,
                });
            }
        }
    }

    /// `method` on `path` (under the server, e.g. `/v1/clusters/prod`) with `query` and a
    /// JSON `body`: the status and body of whatever the dispatcher answered, refusals
    /// included, so the caller can tell 201 from 200 and add to a refusal. A dispatcher
    /// that does not answer within [`API_TIMEOUT`] is a [`Failure::Request`].
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), Failure> {
        self.exchange(method, path, query, None, body).await
    }

    /// [`Client::call`] without a query, with an `Idempotency-Key` header when given.
    pub async fn call_with_key(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), Failure> {
        self.exchange(method, path, &[], key, body).await
    }

    async fn exchange(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), Failure> {
        let mut req = self
            .request(self.http.request(method, format!("{}{path}", self.server)))
            .query(query)
            .timeout(API_TIMEOUT);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        exchange(req).await.map_err(|f| match f {
            Failure::Timeout { .. } => Failure::Request(format!(
                "the dispatcher did not answer within {}s",
                API_TIMEOUT.as_secs()
            )),
            other => other,
        })
    }

    /// Every item a paged listing at `path` returns for `query`, or the first `limit`, a
    /// page of `chunk_size` at a time: each page's `cursor.field` goes back as
    /// `cursor.param` until a page has none. Also whether more matched than `limit`.
    pub async fn pages(
        &self,
        path: &str,
        query: &[(&str, String)],
        cursor: Cursor,
        limit: Option<u64>,
        chunk_size: u64,
    ) -> Result<(Vec<Value>, bool), Failure> {
        let mut items: Vec<Value> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let left = limit.map_or(u64::MAX, |l| l.saturating_sub(items.len() as u64));
            let mut page_query = query.to_vec();
            page_query.push(("limit", chunk_size.min(left).to_string()));
            if let Some(after) = &after {
                page_query.push((cursor.param, after.clone()));
            }
            let (status, page) = self
                .call(reqwest::Method::GET, path, &page_query, None)
                .await?;
            if !status.is_success() {
                return Err(Failure::Request(problem(status, &page)));
            }
            let got = page["items"].as_array().cloned().unwrap_or_default();
            let empty = got.is_empty();
            items.extend(got);
            let Some(next) = page[cursor.field].as_str() else {
                return Ok((items, false));
            };
            if limit.is_some_and(|l| items.len() as u64 >= l) {
                return Ok((items, true));
            }
            if empty || after.as_deref() == Some(next) {
                return Err(Failure::Request(format!(
                    "the dispatcher's listing does not advance past {next:?}"
                )));
            }
            after = Some(next.to_owned());
        }
    }

    /// Opens the server-sent event stream at `path`, resuming after `last_event_id` if
    /// given: the stream, or the status and body of a refusal. No overall timeout: a
    /// stream stays open as long as the dispatcher keeps it.
    pub async fn events(
        &self,
        path: &str,
        query: &[(&str, String)],
        last_event_id: Option<u64>,
    ) -> Result<Result<reqwest::Response, (StatusCode, Value)>, Failure> {
        let mut req = self
            .request(self.http.get(format!("{}{path}", self.server)))
            .query(query)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Failure::Request(format!("cannot reach the dispatcher: {e}")))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(Ok(resp));
        }
        Ok(Err((status, resp.json().await.unwrap_or(Value::Null))))
    }

    fn url(&self, id: &str) -> Result<String, Failure> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(Failure::Usage(format!("{id:?} is not an operation id")));
        }
        Ok(format!("{}/v1/operations/{id}", self.server))
    }
}

async fn send(req: reqwest::RequestBuilder) -> Result<Value, Failure> {
    let (status, body) = exchange(req).await?;
    if status.is_success() {
        return Ok(body);
    }
    Err(Failure::Request(problem(status, &body)))
}

/// Sends `req` and reads the JSON body of whatever the dispatcher answered, refusals
/// included. A timeout is [`Failure::Timeout`], anything else that got no answer
/// [`Failure::Request`].
async fn exchange(req: reqwest::RequestBuilder) -> Result<(StatusCode, Value), Failure> {
    let resp = req.send().await.map_err(|e| {
        if e.is_timeout() {
            Failure::Timeout {
                record: None,
                after: Duration::ZERO,
            }
        } else {
            Failure::Request(format!("cannot reach the dispatcher: {e}"))
        }
    })?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// A refusal as people read it: the status, the RFC 9457 problem's `detail`, and each
/// field it names with the reason, one a line. The detail of an invalid request already
/// lists its fields on one line; that part is not printed twice.
pub fn problem(status: StatusCode, body: &Value) -> String {
    let fields: Vec<String> = body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{}: {}",
                e["field"].as_str().unwrap_or_default(),
                e["reason"].as_str().unwrap_or_default()
            )
        })
        .collect();
    let detail = body["detail"].as_str().unwrap_or("(no detail)");
    let detail = match fields.first().and_then(|f| detail.find(f.as_str())) {
        Some(at) if fields.iter().all(|f| detail.contains(f.as_str())) => {
            match detail[..at].trim_end_matches([':', ';', ' ']) {
                "" => "invalid request",
                head => head,
            }
        }
        _ => detail,
    };
    let mut message = format!(
        "{} {}: {detail}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default(),
    );
    for field in fields {
        message.push_str(&format!("\n  {field}"));
    }
    message
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_problem_names_each_field_once() {
        let body = json!({
            "detail": "invalid request: pool: unknown pool \"x\"; labels.a: too long",
            "errors": [
                {"field": "pool", "reason": "unknown pool \"x\""},
                {"field": "labels.a", "reason": "too long"},
            ],
        });
        assert_eq!(
            problem(StatusCode::BAD_REQUEST, &body),
            "400 Bad Request: invalid request\n  pool: unknown pool \"x\"\n  labels.a: too long"
        );
        let body = json!({"detail": "2 operation(s) are queued for cluster y"});
        assert_eq!(
            problem(StatusCode::CONFLICT, &body),
            "409 Conflict: 2 operation(s) are queued for cluster y"
        );
        assert_eq!(
            problem(StatusCode::BAD_GATEWAY, &Value::Null),
            "502 Bad Gateway: (no detail)"
        );
    }
}
