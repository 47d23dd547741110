//! The lock relay, door contact and exit button on the Pi's GPIO, through rppal (works on every
//! Pi up to the Pi 5; retired upstream, so everything rppal is in this one file: another GPIO
//! backend, such as gpiocdev, replaces this file only).
//!
//! Wiring (BCM numbers, set in config): the relay board's IN to `relay.pin` (3.3 V logic; many
//! boards switch on a low input: `relay.active_low = true`), the door contact (reed switch) and
//! the exit button between their pins and GND, read with the internal pull-ups.

use rppal::gpio::{Gpio, InputPin, OutputPin};

use super::{DoorInputs, HwError, InputLevels, Relay};

fn gpio() -> Result<Gpio, String> {
    Gpio::new().map_err(|e| format!("cannot open the GPIO controller: {e}; is this a Raspberry Pi, and is the user in group gpio?"))
}

/// The relay's control line.
pub struct GpioRelay(OutputPin);

impl GpioRelay {
    /// Claims BCM pin `pin` as an output at `idle_high`: the level is written before the line
    /// becomes an output, so the lock never sees another level, not even for a moment.
    pub fn open(pin: u8, idle_high: bool) -> Result<GpioRelay, HwError> {
        let p = gpio()
            .and_then(|g| g.get(pin).map_err(|e| format!("GPIO {pin}: {e}")))
            .map_err(HwError::Relay)?;
        let mut out = if idle_high {
            p.into_output_high()
        } else {
            p.into_output_low()
        };
        // On drop rppal would turn the line back into an input, leaving it floating: keep it
        // driven. The agent drives it to the idle level on every stop path before that.
        out.set_reset_on_drop(false);
        Ok(GpioRelay(out))
    }
}

impl Relay for GpioRelay {
    fn set(&mut self, high: bool) -> Result<(), HwError> {
        if high {
            self.0.set_high();
        } else {
            self.0.set_low();
        }
        Ok(())
    }
}

/// The door contact and exit button, with pull-ups.
pub struct GpioInputs {
    door_contact: Option<InputPin>,
    exit_button: Option<InputPin>,
}

impl GpioInputs {
    pub fn open(door_contact: Option<u8>, exit_button: Option<u8>) -> Result<GpioInputs, HwError> {
        let input = |pin: Option<u8>| -> Result<Option<InputPin>, HwError> {
            let Some(pin) = pin else { return Ok(None) };
            let p = gpio()
                .and_then(|g| g.get(pin).map_err(|e| format!("GPIO {pin}: {e}")))
                .map_err(HwError::Inputs)?;
            Ok(Some(p.into_input_pullup()))
        };
        Ok(GpioInputs {
            door_contact: input(door_contact)?,
            exit_button: input(exit_button)?,
        })
    }
}

impl DoorInputs for GpioInputs {
    fn read(&mut self) -> Result<InputLevels, HwError> {
        Ok(InputLevels {
            door_contact: self.door_contact.as_ref().map(InputPin::is_high),
            exit_button: self.exit_button.as_ref().map(InputPin::is_high),
        })
    }
}

/// Whether the GPIO controller opens and every pin in `pins` exists, touching no line: no
/// mode or level changes, so the lock never moves (`acceso doctor`, while the agent may run).
pub fn probe(pins: &[u8]) -> Result<String, String> {
    let g = gpio()?;
    for &pin in pins {
        // An unconfigured `Pin` changes nothing when it is taken or dropped.
        g.get(pin).map_err(|e| format!("GPIO {pin}: {e}"))?;
    }
    let model = rppal::system::DeviceInfo::new()
        .map(|d| d.model().to_string())
        .unwrap_or_else(|_| "unknown model".into());
    Ok(model)
}
