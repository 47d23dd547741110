pub mod door;
pub mod mosquitto;
