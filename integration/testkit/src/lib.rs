//! What every longshore test starts from, shared by the contract's, the worker's and the
//! integration tests so there is one way to do each:
//!
//! - [`nats`]: a real `nats-server` with JetStream on a port it picks itself (no race for
//!   a free port) and a temporary store, killed and cleaned up on drop; or a JetStream
//!   cluster of several servers whose nodes can be killed and restarted;
//! - [`leaf`]: a hub and leaf nodes, as an agent's private cluster reaches the hub;
//! - [`wait`]: bounded waits for asynchronous effects, never a bare sleep.

pub mod leaf;
pub mod nats;
pub mod wait;
