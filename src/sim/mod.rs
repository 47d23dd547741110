//! Simulation as a product feature: simulated hardware, an embedded broker, and the scenario
//! runner behind `acceso sim` and `acceso demo`.

pub mod broker;
pub mod hw;
pub mod mfrc522;
mod runner;
pub mod scenario;

pub use runner::{run_scenario, Summary};
pub use scenario::{Scenario, Step};

/// The built-in scenario of `acceso demo`.
pub const DEMO_SCENARIO: &str = include_str!("demo.json");

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scenario itself is wrong: exit non-zero, nothing ran.
    #[error("bad scenario: {0}")]
    Scenario(String),
    #[error("simulated broker: {0}")]
    Broker(String),
    #[error(transparent)]
    Agent(#[from] crate::AgentError),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}
