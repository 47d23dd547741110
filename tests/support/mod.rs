pub mod daemon;
pub mod door;
pub mod mosquitto;
pub mod pki;
pub mod relay;
pub mod reliability;
pub mod unwritable;
pub mod wiring;
