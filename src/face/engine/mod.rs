//! OpenCV face engine (being written).
