pub mod door;
pub mod mosquitto;
pub mod pki;
pub mod reliability;
pub mod wiring;
