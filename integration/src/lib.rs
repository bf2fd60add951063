//! The longshore test harness: real components, started in-process or as processes, for
//! the integration tests in `tests/`.
//!
//! - [`nats`] and [`wait`] (from `longshore-testkit`, which the worker's and the contract's
//!   tests use too): a real `nats-server` with JetStream on a free port and a temporary
//!   store, or a 3-node JetStream cluster whose nodes can be killed and restarted; bounded
//!   waits for asynchronous effects;
//! - [`process`]: the real binaries as processes, for tests that SIGKILL them;
//! - [`dispatcher`] and [`worker`]: the real binaries' `run` functions, in-process;
//! - [`system`]: all of it together, with the calls a pipeline makes;
//! - [`otlp`]: an OTLP/gRPC trace receiver, collecting the spans the binaries export;
//! - [`cli`]: the `longshore` CLI binary, as a pipeline step runs it;
//! - [`sse`]: a server-sent event stream, read a message at a time;
//! - [`prometheus`]: `promtool` and a real Prometheus server, for metrics and alert rules.
//!
//! The Kubernetes API stand-in is the `longshore-kube-sim` crate beside this one.

pub mod cli;
pub mod dispatcher;
pub mod otlp;
pub mod process;
pub mod prometheus;
pub mod sse;
pub mod system;
pub mod worker;

pub use longshore_testkit::{nats, wait};
