//! A server-sent event stream as a test reads it: a message at a time, each within a bound.

use std::time::Duration;

use serde_json::Value;

/// How long [`Sse::next`] waits for a message.
pub const WAIT: Duration = Duration::from_secs(20);

/// A server-sent event stream, read a message at a time.
pub struct Sse {
    resp: reqwest::Response,
    pending: String,
}

/// One server-sent message: its `id`, `event` and `data` lines.
#[derive(Debug, Default)]
pub struct Message {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
}

impl Sse {
    pub fn new(resp: reqwest::Response) -> Self {
        Self {
            resp,
            pending: String::new(),
        }
    }

    /// The next message (keep-alive comments skipped), within [`WAIT`].
    pub async fn next(&mut self) -> Message {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(end) = self.pending.find("\n\n") {
                    let block: String = self.pending.drain(..end + 2).collect();
                    let mut message = Message::default();
                    for line in block.lines() {
                        let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                        match field {
                            "id" => message.id = Some(value.to_owned()),
                            "event" => message.event = Some(value.to_owned()),
                            "data" => message.data = Some(value.to_owned()),
                            _ => {}
                        }
                    }
                    if message.id.is_some() || message.data.is_some() {
                        return message;
                    }
                    continue;
                }
                let chunk = self
                    .resp
                    .chunk()
                    .await
                    .unwrap()
                    .expect("the stream stays open");
                self.pending.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .expect("a message within the wait")
    }

    /// The next event (a message with data): its id (a sequence or revision), type and JSON.
    pub async fn event(&mut self) -> (u64, String, Value) {
        let m = self.next().await;
        let Some(data) = m.data.clone() else {
            panic!("an event, got {m:?}");
        };
        (
            m.id.unwrap().parse().unwrap(),
            m.event.unwrap(),
            serde_json::from_str(&data).unwrap(),
        )
    }

    /// The position a stream starts after: its first message, a bare `id`.
    pub async fn position(&mut self) -> u64 {
        let m = self.next().await;
        assert!(
            m.data.is_none(),
            "the first message is the position, got {m:?}"
        );
        m.id.unwrap().parse().unwrap()
    }

    /// The next raw chunk of the body (`None` at its end), for tests of how it ends.
    pub async fn chunk(&mut self) -> reqwest::Result<Option<bytes::Bytes>> {
        self.resp.chunk().await
    }
}
