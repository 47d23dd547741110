//! Hardware seams: small traits the agent talks to, with real backends here and simulated
//! ones in `crate::sim`. Nothing above this module knows which one it has.
//!
//! Implementations do blocking IO (SPI, GPIO, V4L2); the agent calls them from dedicated
//! threads, never from the async reactor.

use acceso_protocol::CardUid;

#[derive(Debug, thiserror::Error)]
pub enum HwError {
    #[error("card reader: {0}")]
    Reader(String),
    #[error("relay: {0}")]
    Relay(String),
    #[error("camera: {0}")]
    Camera(String),
    #[error("door inputs: {0}")]
    Inputs(String),
}

pub mod gpio;
pub mod mfrc522;
pub mod spidev;

/// What one poll of a card reader saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A card with this UID answered.
    Card(CardUid),
    /// No card answered.
    Empty,
    /// Something answered but could not be read (CRC or BCC error, a collision that did not
    /// resolve, a card that left mid-exchange, an invalid UID). Says nothing about presence.
    Unreadable(String),
}

/// A card reader, polled: which card is in the field right now?
pub trait CardReader: Send + 'static {
    /// One look at the field. Must return within a bounded time. An `Err` means the reader
    /// itself is not working (no answer, wrong chip, reset); the caller backs off and polls
    /// again, and the reader re-initialises itself.
    fn poll(&mut self) -> Result<Seen, HwError>;
}

/// The lock relay's control line. `true` drives it high. What a level means for the lock
/// (active-low boards, fail-safe maglocks) is `door::Wiring`'s business, not the relay's.
pub trait Relay: Send + 'static {
    fn set(&mut self, high: bool) -> Result<(), HwError>;
}

/// The raw levels of the door's input lines (`true` = high); `None` for a line not wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InputLevels {
    pub door_contact: Option<bool>,
    pub exit_button: Option<bool>,
}

/// The door contact and exit button lines, polled.
pub trait DoorInputs: Send + 'static {
    fn read(&mut self) -> Result<InputLevels, HwError>;
}

/// One camera frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// An encoded image (JPEG, PNG), as a file or an MJPEG camera gives it.
    Encoded { name: String, bytes: Vec<u8> },
    /// Raw pixels as a camera gives them: 8-bit BGR, row after row, `width * height * 3` bytes.
    Bgr {
        width: u32,
        height: u32,
        data: Vec<u8>,
    },
}

/// A camera: the next frame, or `None` when there is nothing new to look at.
pub trait FrameSource: Send + 'static {
    fn next_frame(&mut self) -> Result<Option<Frame>, HwError>;
}
