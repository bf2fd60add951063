//! The worker's double ack: confirmed by the server before it returns, and sent without a
//! subscription of its own (async-nats' `double_ack` subscribes to a fresh inbox for every
//! acknowledgement and unsubscribes after it). The client talks to a real nats-server
//! through a loopback relay that counts the `SUB` commands the client sends.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;
use longshore_testkit::nats::NatsServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Relays one client connection to `upstream`, counting the client's `SUB` commands.
async fn counting_relay(upstream: u16) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let subs = Arc::new(AtomicUsize::new(0));
    let counted = subs.clone();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        });
        // Commands start a line; the last bytes of a read are kept for a command split
        // across two reads.
        let mut buf = vec![0u8; 64 * 1024];
        let mut seen: Vec<u8> = b"\r\n".to_vec();
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            seen.extend_from_slice(&buf[..n]);
            let found = seen.windows(6).filter(|w| w == b"\r\nSUB ").count();
            counted.fetch_add(found, Ordering::SeqCst);
            let keep = seen.len().saturating_sub(5);
            seen.drain(..keep);
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    (port, subs)
}

#[tokio::test]
async fn the_double_ack_is_confirmed_and_needs_no_subscription_per_message() {
    let nats = NatsServer::start().await.unwrap();
    let (port, subs) = counting_relay(nats.port()).await;
    let client = async_nats::connect(format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap();
    let js = jetstream::new(client);
    let stream = js
        .create_stream(stream::Config {
            name: "ACKS".into(),
            subjects: vec!["acks.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .unwrap();
    const SHARED: u64 = 20;
    const LIBRARY: u64 = 5;
    for i in 0..SHARED + LIBRARY {
        js.publish(format!("acks.{i}"), "m".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("acks".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();

    let mut first = messages.next().await.unwrap().unwrap();
    // The first request opens the connection's shared reply subscription.
    longshore_worker::settle::double_ack(&first).await.unwrap();
    let before = subs.load(Ordering::SeqCst);
    for _ in 1..SHARED {
        first = messages.next().await.unwrap().unwrap();
        longshore_worker::settle::double_ack(&first).await.unwrap();
    }
    assert_eq!(
        subs.load(Ordering::SeqCst),
        before,
        "the worker's double ack subscribed again"
    );
    // Confirmed means the server has them: every one acknowledged is off the pending list
    // (the rest were delivered ahead, and wait for theirs).
    let mut asked = consumer.clone();
    let info = asked.info().await.unwrap().clone();
    assert_eq!(info.ack_floor.stream_sequence, SHARED, "{info:?}");
    assert_eq!(
        info.num_ack_pending as u64,
        info.delivered.stream_sequence - SHARED,
        "{info:?}"
    );

    // What the counter sees for the library's own: one subscription per acknowledgement.
    for _ in 0..LIBRARY {
        messages
            .next()
            .await
            .unwrap()
            .unwrap()
            .double_ack()
            .await
            .unwrap();
    }
    assert_eq!(
        subs.load(Ordering::SeqCst),
        before + LIBRARY as usize,
        "the relay should count the library's subscriptions"
    );

    // A message that is not JetStream's cannot be acknowledged: an error, not a hang.
    let mut plain = first;
    plain.message.reply = None;
    let e = longshore_worker::settle::double_ack(&plain)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no reply subject"), "{e}");
}
