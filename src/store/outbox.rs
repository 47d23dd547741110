//! The outbox: events waiting for the broker's acknowledgement, in sequence order.

use acceso_protocol::AccessEvent;
use rusqlite::params;

use super::{Store, StoreError};

/// One event as stored: its sequence number and its exact JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEvent {
    pub seq: u64,
    pub payload: String,
}

impl Store {
    /// Gives the event the next sequence number and queues it, in one transaction.
    /// `make` receives the sequence number and returns the complete event.
    pub fn append_event(
        &mut self,
        make: impl FnOnce(u64) -> AccessEvent,
    ) -> Result<AccessEvent, StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let seq: i64 = tx
            .query_row(
                "UPDATE meta SET value = value + 1 WHERE key = 'next_seq' RETURNING value - 1",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        let event = make(seq as u64);
        let payload = serde_json::to_string(&event)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode event: {e}")))?;
        tx.execute(
            "INSERT INTO outbox (seq, event_id, payload) VALUES (?1, ?2, ?3)",
            params![seq, event.event_id, payload],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(event)
    }

    /// Up to `limit` queued events with a sequence number of at least `from`, oldest first.
    pub fn queued_from(&self, from: u64, limit: usize) -> Result<Vec<QueuedEvent>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, payload FROM outbox WHERE seq >= ?1 ORDER BY seq LIMIT ?2")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![from as i64, limit as i64], |r| {
                Ok(QueuedEvent {
                    seq: r.get::<_, i64>(0)? as u64,
                    payload: r.get(1)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Removes an event the broker has acknowledged. Removing one already gone is fine.
    pub fn delete_queued(&mut self, seq: u64) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM outbox WHERE seq = ?1", [seq as i64])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn queued_count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use acceso_protocol::{Method, Outcome, Reason};

    fn event(seq: u64) -> AccessEvent {
        AccessEvent {
            event_id: format!("id-{seq}"),
            device: "d".into(),
            door: "front".into(),
            seq,
            boot_id: "b".into(),
            time: "2026-12-03T10:00:00Z".parse().unwrap(),
            time_trusted: true,
            method: Method::Card,
            card_uid: None,
            user_id: None,
            face_score: None,
            decision: Outcome::Denied,
            reason: Reason::UnknownCard,
            latency_us: 1,
        }
    }

    #[test]
    fn sequence_numbers_persist_across_reopen_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        {
            let (mut s, _) = Store::open(&path).unwrap();
            assert_eq!(s.append_event(event).unwrap().seq, 1);
            assert_eq!(s.append_event(event).unwrap().seq, 2);
            s.delete_queued(1).unwrap();
            s.delete_queued(2).unwrap();
            assert_eq!(s.queued_count().unwrap(), 0);
        }
        let (mut s, _) = Store::open(&path).unwrap();
        assert_eq!(s.append_event(event).unwrap().seq, 3);
    }

    #[test]
    fn queued_events_come_back_in_order_and_exact() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Store::open(&dir.path().join("a.db")).unwrap();
        let stored: Vec<AccessEvent> = (0..5).map(|_| s.append_event(event).unwrap()).collect();
        s.delete_queued(2).unwrap();
        let q = s.queued_from(0, 10).unwrap();
        assert_eq!(
            q.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 3, 4, 5]
        );
        let back: AccessEvent = serde_json::from_str(&q[1].payload).unwrap();
        assert_eq!(back, stored[2]);
        assert_eq!(s.queued_from(4, 1).unwrap()[0].seq, 4);
        s.delete_queued(99).unwrap();
    }
}
