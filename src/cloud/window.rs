//! Which outbox events are in flight on the MQTT session, and which packet id carries which.
//!
//! Pure bookkeeping, no IO. rumqttc assigns packet ids itself and reports them, in the order
//! publishes were handed to it, as `Outgoing::Publish(pkid)`; a retransmission after a resumed
//! session reports a pkid we already know. A new session (no `session_present`) drops
//! everything rumqttc held, so every unacknowledged event is sent again from the outbox. The
//! cloud deduplicates on `event_id`, so a resend after a lost PUBACK is harmless; a loss is not.

use std::collections::{HashMap, VecDeque};

#[derive(Debug)]
pub struct Window {
    cap: usize,
    /// Handed to the client, packet id not yet known, in hand-over order (`None`: a publish
    /// that is not an outbox event, such as the status message).
    handed: VecDeque<Option<u64>>,
    /// Sent with this packet id, waiting for PUBACK.
    sent: HashMap<u16, u64>,
    /// The next outbox sequence number to hand over.
    next: u64,
}

impl Window {
    pub fn new(cap: usize) -> Window {
        Window {
            cap,
            handed: VecDeque::new(),
            sent: HashMap::new(),
            next: 0,
        }
    }

    /// How many more events may be handed over now.
    pub fn room(&self) -> usize {
        self.cap.saturating_sub(self.in_flight())
    }

    /// The lowest outbox sequence number not yet handed over in this session.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Outbox events handed over or sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.handed.iter().filter(|h| h.is_some()).count() + self.sent.len()
    }

    /// A CONNACK. Without a resumed session the broker and rumqttc hold nothing of ours:
    /// start again from the oldest queued event.
    pub fn connected(&mut self, session_present: bool) {
        if !session_present {
            self.handed.clear();
            self.sent.clear();
            self.next = 0;
        }
    }

    pub fn handed(&mut self, seq: u64) {
        self.handed.push_back(Some(seq));
        self.next = self.next.max(seq + 1);
    }

    /// A QoS 1 publish that is not an outbox event went to the client: it takes its place in
    /// the packet-id order, but nothing waits for its PUBACK.
    pub fn handed_other(&mut self) {
        self.handed.push_back(None);
    }

    /// Passes over an event that cannot be sent in this session.
    pub fn skip(&mut self, seq: u64) {
        self.next = self.next.max(seq + 1);
    }

    /// rumqttc wrote a publish with `pkid`.
    pub fn written(&mut self, pkid: u16) {
        if self.sent.contains_key(&pkid) {
            return; // a retransmission of one we already track
        }
        if let Some(Some(seq)) = self.handed.pop_front() {
            self.sent.insert(pkid, seq);
        }
    }

    /// A PUBACK: the outbox sequence number it acknowledges, if it is one of ours.
    pub fn acked(&mut self, pkid: u16) -> Option<u64> {
        self.sent.remove(&pkid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkids_map_to_sequence_numbers_in_hand_over_order() {
        let mut w = Window::new(3);
        w.connected(false);
        for seq in [5, 6, 7] {
            w.handed(seq);
        }
        assert_eq!(w.room(), 0);
        assert_eq!(w.next_seq(), 8);
        w.written(1);
        w.written(2);
        w.written(3);
        assert_eq!(w.acked(2), Some(6));
        assert_eq!(w.room(), 1);
        assert_eq!(w.acked(2), None);
        assert_eq!(w.acked(1), Some(5));
        assert_eq!(w.acked(3), Some(7));
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn other_publishes_keep_the_packet_id_order_straight() {
        let mut w = Window::new(10);
        w.handed(1);
        w.handed_other();
        w.handed(2);
        w.written(1);
        w.written(2); // the status message
        w.written(3);
        assert_eq!(w.acked(2), None);
        assert_eq!(w.acked(1), Some(1));
        assert_eq!(w.acked(3), Some(2));
    }

    #[test]
    fn new_session_resends_from_the_start() {
        let mut w = Window::new(10);
        w.handed(1);
        w.handed(2);
        w.written(1);
        w.connected(false);
        assert_eq!(w.next_seq(), 0);
        assert_eq!(w.in_flight(), 0);
        assert_eq!(w.acked(1), None);
    }

    #[test]
    fn resumed_session_keeps_mappings_and_ignores_retransmits() {
        let mut w = Window::new(10);
        w.handed(1);
        w.handed(2);
        w.written(1);
        w.connected(true);
        w.written(1); // retransmission of seq 1
        w.written(2); // first write of seq 2
        assert_eq!(w.acked(1), Some(1));
        assert_eq!(w.acked(2), Some(2));
        assert_eq!(w.next_seq(), 3);
    }
}
