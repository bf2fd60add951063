//! The longshore test harness: real components, started in-process or as processes, for
//! the integration tests in `tests/`.
//!
//! - [`nats`]: a real `nats-server` with JetStream on a free port and a temporary store;
//! - [`dispatcher`]: the real dispatcher through its `run` function;
//! - [`wait`]: bounded waits for asynchronous effects.
//!
//! The Kubernetes API stand-in is the `longshore-kube-sim` crate beside this one.

pub mod dispatcher;
pub mod nats;
pub mod wait;
