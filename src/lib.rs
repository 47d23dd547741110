//! acceso: the door agent. Wiring lives in `agent`; each module owns one concern.

pub mod access;
pub mod agent;
pub mod clock;
pub mod cloud;
pub mod config;
pub mod control;
pub mod doctor;
pub mod door;
pub mod face;
pub mod factors;
pub mod guard;
pub mod hw;
pub mod inputs;
pub mod instance;
pub mod observe;
pub mod reader;
pub mod service;
pub mod sim;
pub mod store;
pub mod writer;

pub use agent::{Agent, AgentError, Backends};
pub use config::Config;
