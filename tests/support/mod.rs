pub mod door;
pub mod mosquitto;
pub mod wiring;
