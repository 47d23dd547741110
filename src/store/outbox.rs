//! The outbox: events waiting for the broker's acknowledgement, in sequence order.
//!
//! Bounded: when an append would pass the bound, the oldest events are dropped and counted.
//! One report event (`events_dropped`) carries the count; while it is still queued, a newer
//! drop replaces it with the new total, so the cloud gets one report per overflow, not one per
//! dropped event. The count is settled when the report's PUBACK deletes it.

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
    /// Gives the event the next sequence number and queues it, in one transaction, keeping at
    /// most `max_queued` events: returns the event and how many old ones were dropped.
    pub fn append_event(
        &mut self,
        make: impl FnOnce(u64) -> AccessEvent,
        max_queued: u64,
    ) -> Result<(AccessEvent, u64), StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let event = insert_next(&tx, make).map_err(|e| e.at(&path))?;
        let queued: i64 = tx
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
            .map_err(err)?;
        let excess = (queued as u64).saturating_sub(max_queued.max(1));
        if excess > 0 {
            tx.execute(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?1)",
                [excess as i64],
            )
            .map_err(err)?;
            tx.execute(
                "UPDATE meta SET value = value + ?1 WHERE key = 'dropped_unreported'",
                [excess as i64],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok((event, excess))
    }

    /// Adds `n` to the events dropped and not yet reported.
    pub fn count_dropped(&mut self, n: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE meta SET value = value + ?1 WHERE key = 'dropped_unreported'",
                [n as i64],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Queues the report of dropped events (replacing a report still queued), built by `make`
    /// from its sequence number and the count to report.
    pub fn report_drops(
        &mut self,
        make: impl FnOnce(u64, u64) -> AccessEvent,
    ) -> Result<Option<AccessEvent>, StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let meta = |key: &str| -> Result<i64, rusqlite::Error> {
            tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        };
        let unreported = meta("dropped_unreported").map_err(err)?;
        if unreported <= 0 {
            return Ok(None);
        }
        let previous = meta("drop_report_seq").map_err(err)?;
        if previous > 0 {
            tx.execute("DELETE FROM outbox WHERE seq = ?1", [previous])
                .map_err(err)?;
        }
        let event =
            insert_next(&tx, |seq| make(seq, unreported as u64)).map_err(|e| e.at(&path))?;
        tx.execute(
            "UPDATE meta SET value = CASE key WHEN 'drop_report_seq' THEN ?1 ELSE ?2 END
             WHERE key IN ('drop_report_seq', 'drop_report_count')",
            params![event.seq as i64, unreported],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Some(event))
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
    /// If it was the drop report, the drops it reported are settled.
    pub fn delete_queued(&mut self, seq: u64) -> Result<(), StoreError> {
        self.delete_acked(&[seq])
    }

    /// Removes events the broker has acknowledged, in one transaction (one disk sync for a
    /// whole window of acknowledgements, not one each).
    pub fn delete_acked(&mut self, seqs: &[u64]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        for &seq in seqs {
            tx.execute("DELETE FROM outbox WHERE seq = ?1", [seq as i64])
                .map_err(err)?;
            tx.execute(
                "UPDATE meta SET value = value - (SELECT value FROM meta WHERE key = 'drop_report_count')
                 WHERE key = 'dropped_unreported'
                   AND (SELECT value FROM meta WHERE key = 'drop_report_seq') = ?1",
                [seq as i64],
            )
            .map_err(err)?;
            tx.execute(
                "UPDATE meta SET value = 0 WHERE key IN ('drop_report_seq', 'drop_report_count')
                   AND (SELECT value FROM meta WHERE key = 'drop_report_seq') = ?1",
                [seq as i64],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    pub fn queued_count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }
}

/// The `events_dropped` report, made from the event whose arrival overflowed the outbox (same
/// device, door, boot and time).
pub(crate) fn drop_report(last: &AccessEvent, seq: u64, count: u64) -> AccessEvent {
    AccessEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        seq,
        method: acceso_protocol::Method::Agent,
        card_uid: None,
        user_id: None,
        face_score: None,
        decision: acceso_protocol::Reason::EventsDropped.outcome(),
        reason: acceso_protocol::Reason::EventsDropped,
        latency_us: 0,
        dropped: Some(count),
        ..last.clone()
    }
}

/// A failure inside a transaction, before the path is known.
struct TxError(rusqlite::Error);

impl TxError {
    fn at(self, path: &std::path::Path) -> StoreError {
        StoreError::Sqlite {
            path: path.to_path_buf(),
            source: self.0,
        }
    }
}

impl From<rusqlite::Error> for TxError {
    fn from(e: rusqlite::Error) -> Self {
        TxError(e)
    }
}

/// Takes the next sequence number and inserts the event `make` builds with it.
fn insert_next(
    tx: &rusqlite::Transaction<'_>,
    make: impl FnOnce(u64) -> AccessEvent,
) -> Result<AccessEvent, TxError> {
    let seq: i64 = tx.query_row(
        "UPDATE meta SET value = value + 1 WHERE key = 'next_seq' RETURNING value - 1",
        [],
        |r| r.get(0),
    )?;
    let event = make(seq as u64);
    // An AccessEvent always serialises; if it ever did not, that is a bug worth a loud error.
    let payload = serde_json::to_string(&event)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    tx.execute(
        "INSERT INTO outbox (seq, event_id, payload) VALUES (?1, ?2, ?3)",
        params![seq, event.event_id, payload],
    )?;
    Ok(event)
}

/// A denied card event numbered `n` (its sequence number, its `latency_us`, and in its
/// `event_id`), for tests of what stores and moves events.
#[cfg(test)]
pub(crate) fn sample_event(n: u64) -> AccessEvent {
    use acceso_protocol::{Method, Outcome, Reason};
    AccessEvent {
        event_id: format!("0192f0c4-0000-7000-8000-{n:012x}"),
        device: "d".into(),
        door: "front".into(),
        seq: n,
        boot_id: "b".into(),
        time: "2026-12-03T10:00:00Z".parse().unwrap(),
        time_trusted: true,
        method: Method::Card,
        card_uid: None,
        user_id: None,
        face_score: None,
        decision: Outcome::Denied,
        reason: Reason::UnknownCard,
        latency_us: n,
        dropped: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sample_event as event;

    #[test]
    fn sequence_numbers_persist_across_reopen_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        {
            let (mut s, _) = Store::open(&path).unwrap();
            assert_eq!(s.append_event(event, 1000).unwrap().0.seq, 1);
            assert_eq!(s.append_event(event, 1000).unwrap().0.seq, 2);
            s.delete_queued(1).unwrap();
            s.delete_queued(2).unwrap();
            assert_eq!(s.queued_count().unwrap(), 0);
        }
        let (mut s, _) = Store::open(&path).unwrap();
        assert_eq!(s.append_event(event, 1000).unwrap().0.seq, 3);
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_and_one_report_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Store::open(&dir.path().join("a.db")).unwrap();
        for i in 1..=5u64 {
            let (_, dropped) = s.append_event(event, 5).unwrap();
            assert_eq!(dropped, 0, "append {i}");
        }
        let report = |seq, n| AccessEvent {
            dropped: Some(n),
            ..event(seq)
        };
        assert_eq!(s.report_drops(report).unwrap(), None, "nothing dropped yet");
        assert_eq!(s.append_event(event, 5).unwrap().1, 1);
        let r1 = s.report_drops(report).unwrap().unwrap();
        assert_eq!(r1.dropped, Some(1));
        // More drops while the report is still queued: it is replaced, with the total.
        assert_eq!(s.append_event(event, 5).unwrap().1, 2);
        let r2 = s.report_drops(report).unwrap().unwrap();
        assert_eq!(r2.dropped, Some(3));
        let seqs: Vec<u64> = s
            .queued_from(0, 100)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert!(!seqs.contains(&r1.seq), "{seqs:?}");
        assert_eq!(seqs.len(), 5, "{seqs:?}");
        assert_eq!(seqs.last(), Some(&r2.seq));
        // The report's PUBACK settles the count: the next overflow starts from zero.
        s.delete_queued(r2.seq).unwrap();
        assert_eq!(s.report_drops(report).unwrap(), None);
        s.append_event(event, 4).unwrap();
        assert_eq!(s.report_drops(report).unwrap().unwrap().dropped, Some(1));
    }

    #[test]
    fn queued_events_come_back_in_order_and_exact() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Store::open(&dir.path().join("a.db")).unwrap();
        let stored: Vec<AccessEvent> = (0..5)
            .map(|_| s.append_event(event, 1000).unwrap().0)
            .collect();
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
