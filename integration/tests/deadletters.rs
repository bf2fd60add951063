//! Listing and requeueing dead letters through the real dispatcher, on a real nats-server.
//! The dead letter is written here exactly as a worker writes one (the contract's format),
//! so this test does not depend on making a worker exhaust its deliveries.

use async_nats::jetstream;
use longshore_contract::{
    ClusterName, Envelope, OperationRecord, State, deadletter, jetstream as names,
    record::ErrorClass, record::ErrorInfo,
};
use longshore_integration::{dispatcher::Dispatcher, nats::NatsServer};
use serde_json::{Value, json};

async fn get_json(http: &reqwest::Client, url: String) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

async fn stream_messages(js: &jetstream::Context, name: &str) -> u64 {
    js.get_stream(name)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

/// Accepts an operation, then moves it to dead_lettered as a worker would: consume the
/// work-queue message, copy it to the dead-letter stream, record the state, acknowledge.
async fn dead_lettered_operation(d: &Dispatcher, js: &jetstream::Context) -> String {
    let body = json!({"cluster": "prod", "action": "apply", "manifests": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "default"}}]});
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/operations", d.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let stream = js.get_stream(names::STREAM).await.unwrap();
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("test".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut batch = consumer.fetch().max_messages(1).messages().await.unwrap();
    let message = futures::StreamExt::next(&mut batch).await.unwrap().unwrap();
    let envelope = Envelope::from_message(message.headers.as_ref(), &message.payload).unwrap();
    let seq = message.info().unwrap().stream_sequence;
    let cluster = ClusterName::new("prod").unwrap();
    js.publish_with_headers(
        deadletter::subject(&cluster, &envelope.id),
        deadletter::headers(&envelope.id, seq, 10, "503 Service Unavailable"),
        message.payload.clone(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let kv = js.get_key_value(names::OPERATIONS_BUCKET).await.unwrap();
    let entry = kv.entry(id.as_str()).await.unwrap().unwrap();
    let mut record = OperationRecord::from_bytes(&entry.value).unwrap();
    record.state = State::DeadLettered;
    record.error = Some(ErrorInfo {
        class: ErrorClass::Transient,
        message: "503 Service Unavailable".into(),
    });
    kv.update(id.as_str(), record.to_bytes(), entry.revision)
        .await
        .unwrap();
    message.double_ack().await.unwrap();
    stream.delete_consumer("test").await.unwrap();
    id
}

#[tokio::test]
async fn a_dead_letter_is_listed_and_requeued_once() {
    let nats = NatsServer::start().await.unwrap();
    let mut config = Dispatcher::config(&nats.url(), &["prod"]);
    config.http.public_url = Some("https://longshore.example.com".into());
    let d = Dispatcher::start_with(config).await.unwrap();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let id = dead_lettered_operation(&d, &js).await;
    assert_eq!(stream_messages(&js, names::STREAM).await, 0);
    let http = reqwest::Client::new();

    let list: Value = get_json(&http, format!("{}/v1/dead-letters", d.url)).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["items"][0]["id"], id.as_str());
    assert_eq!(list["items"][0]["cluster"], "prod");
    assert_eq!(list["items"][0]["reason"], "503 Service Unavailable");
    assert_eq!(list["next"], Value::Null);

    let resp = http
        .post(format!("{}/v1/operations/{id}/retry", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    // Like every 202, it names the status URL as clients reach it.
    let status_url = format!("https://longshore.example.com/v1/operations/{id}");
    assert_eq!(resp.headers()["location"], status_url.as_str());
    let accepted: Value = resp.json().await.unwrap();
    assert_eq!(accepted["statusUrl"], status_url.as_str(), "{accepted}");
    let status: Value = get_json(&http, format!("{}/v1/operations/{id}", d.url)).await;
    assert_eq!(status["state"], "queued");
    assert!(status.get("error").is_none());
    assert_eq!(
        stream_messages(&js, names::STREAM).await,
        1,
        "requeued to the work queue"
    );
    assert_eq!(
        stream_messages(&js, names::DEAD_LETTER_STREAM).await,
        0,
        "the dead letter is gone"
    );
    let list: Value = get_json(&http, format!("{}/v1/dead-letters", d.url)).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);

    // A second retry finds nothing to retry.
    let again = http
        .post(format!("{}/v1/operations/{id}/retry", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let problem: Value = again.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("queued"),
        "{problem}"
    );
    assert_eq!(stream_messages(&js, names::STREAM).await, 1);
}

#[tokio::test]
async fn retry_and_listing_refuse_bad_input_clearly() {
    let nats = NatsServer::start().await.unwrap();
    let d = Dispatcher::start(&nats.url(), &["prod"]).await.unwrap();
    let http = reqwest::Client::new();
    let unknown = format!("{}/v1/operations/op-{}/retry", d.url, "b".repeat(32));
    assert_eq!(http.post(unknown).send().await.unwrap().status(), 404);
    let malformed = http
        .post(format!("{}/v1/operations/nope/retry", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let bad_limit = http
        .get(format!("{}/v1/dead-letters?limit=0", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_limit.status(), 400);
    let problem: Value = bad_limit.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "limit");
    let bad_param = http
        .get(format!("{}/v1/dead-letters?afterr=3", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_param.status(), 400);
}

#[tokio::test]
async fn dead_letters_are_paged_by_sequence() {
    let nats = NatsServer::start().await.unwrap();
    let d = Dispatcher::start(&nats.url(), &["prod"]).await.unwrap();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let cluster = ClusterName::new("prod").unwrap();
    for i in 0..5u64 {
        let key = longshore_contract::IdempotencyKey::new(format!("k{i}")).unwrap();
        let id = longshore_contract::OperationId::derive("api", &key);
        js.publish_with_headers(
            deadletter::subject(&cluster, &id),
            deadletter::headers(&id, i + 1, 3, "r"),
            "{}".into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let http = reqwest::Client::new();
    let page1: Value = get_json(&http, format!("{}/v1/dead-letters?limit=3", d.url)).await;
    assert_eq!(page1["items"].as_array().unwrap().len(), 3);
    let next = page1["next"].as_u64().unwrap();
    let page2: Value = get_json(
        &http,
        format!("{}/v1/dead-letters?limit=3&after={next}", d.url),
    )
    .await;
    assert_eq!(page2["items"].as_array().unwrap().len(), 2);
    assert_eq!(page2["next"], Value::Null);
}
