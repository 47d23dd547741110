//! Users and their cards, and the versioned application of updates.

use acceso_protocol::{Update, UpdateOp, User};
use rusqlite::{params, ErrorCode, OptionalExtension};

use super::{Store, StoreError};

/// Where an update's version stands against the applied one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// At or below the applied version: a duplicate, a retained or replayed message. Ignore.
    Stale { applied: u64 },
    /// Exactly the next version: apply.
    Next,
    /// Beyond the next: at least one change was missed (perhaps a revocation).
    Gap { applied: u64 },
}

/// The versioning rule, alone, so it can be tested and reasoned about without a database.
pub fn classify(applied: u64, version: u64) -> Disposition {
    if version <= applied {
        Disposition::Stale { applied }
    } else if version == applied + 1 {
        Disposition::Next
    } else {
        Disposition::Gap { applied }
    }
}

/// At most this many updates are held past a gap.
pub const MAX_STASH: usize = 1000;

/// What applying one update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Applied in one transaction; the applied version is now the update's.
    Applied,
    /// At or below the applied version; ignored.
    Stale { applied: u64 },
    /// Beyond the next version; not applied.
    Gap { applied: u64 },
    /// Well-formed but inconsistent with the stored users; nothing of it was applied.
    Rejected(String),
}

/// The applied version, inside a transaction that may change it.
fn applied_in(tx: &rusqlite::Transaction) -> rusqlite::Result<u64> {
    tx.query_row(
        "SELECT value FROM meta WHERE key = 'applied_version'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|v| v as u64)
}

impl Store {
    pub fn applied_version(&self) -> Result<u64, StoreError> {
        Ok(self.meta("applied_version")? as u64)
    }

    /// Applies `update` if it is the next version, all of it or nothing.
    pub fn apply_update(&mut self, update: &Update) -> Result<ApplyOutcome, StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let applied = applied_in(&tx).map_err(err)?;
        match classify(applied, update.version) {
            Disposition::Next => {}
            Disposition::Stale { applied } => return Ok(ApplyOutcome::Stale { applied }),
            Disposition::Gap { applied } => return Ok(ApplyOutcome::Gap { applied }),
        }
        match &update.op {
            UpdateOp::UpsertUser(user) => {
                let body = serde_json::to_string(user)
                    .map_err(|e| StoreError::Corrupt(format!("cannot encode user: {e}")))?;
                tx.execute(
                    "INSERT INTO users (id, version, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT(id) DO UPDATE SET version = excluded.version, body = excluded.body",
                    params![user.id, update.version as i64, body],
                )
                .map_err(err)?;
                tx.execute("DELETE FROM cards WHERE user_id = ?1", [&user.id])
                    .map_err(err)?;
                for card in &user.cards {
                    let inserted = tx.execute(
                        "INSERT INTO cards (uid, user_id) VALUES (?1, ?2)",
                        params![card.as_bytes(), user.id],
                    );
                    match inserted {
                        Ok(_) => {}
                        Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                            let holder: Option<String> = tx
                                .query_row(
                                    "SELECT user_id FROM cards WHERE uid = ?1",
                                    [card.as_bytes()],
                                    |r| r.get(0),
                                )
                                .optional()
                                .map_err(err)?;
                            // Dropping `tx` rolls back everything this update did.
                            return Ok(ApplyOutcome::Rejected(format!(
                                "card {card} is already held by user {}",
                                holder.unwrap_or_else(|| "?".into())
                            )));
                        }
                        Err(e) => return Err(err(e)),
                    }
                }
            }
            UpdateOp::DeleteUser { user_id } => {
                // Deleting a user this door never had still advances the version.
                tx.execute("DELETE FROM users WHERE id = ?1", [user_id])
                    .map_err(err)?;
            }
        }
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'applied_version'",
            [update.version as i64],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(ApplyOutcome::Applied)
    }

    /// Keeps an update that came past a gap until a sync fills the gap. At most [`MAX_STASH`]
    /// are kept (the lowest, which apply first); past that, the sync brings the rest anyway.
    /// Returns whether it was kept.
    pub fn stash(&mut self, update: &Update) -> Result<bool, StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let (count, max): (i64, Option<i64>) = tx
            .query_row("SELECT count(*), max(version) FROM stash", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(err)?;
        let v = update.version as i64;
        if count as usize >= MAX_STASH {
            match max {
                Some(max) if v < max => {
                    tx.execute("DELETE FROM stash WHERE version = ?1", [max])
                        .map_err(err)?;
                }
                _ => return Ok(false),
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO stash (version, body) VALUES (?1, ?2)",
            params![v, update.body()],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(true)
    }

    /// The stashed update with exactly this version, if any.
    pub fn stashed(&self, version: u64) -> Result<Option<Update>, StoreError> {
        let body: Option<String> = self
            .conn
            .query_row(
                "SELECT body FROM stash WHERE version = ?1",
                [version as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        body.map(|b| {
            Update::parse(b.as_bytes())
                .map_err(|e| StoreError::Corrupt(format!("stashed update {version}: {e}")))
        })
        .transpose()
    }

    /// The lowest and highest stashed versions.
    pub fn stash_span(&self) -> Result<Option<(u64, u64)>, StoreError> {
        let (min, max): (Option<i64>, Option<i64>) = self
            .conn
            .query_row("SELECT min(version), max(version) FROM stash", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(|e| self.err(e))?;
        Ok(min.zip(max).map(|(a, b)| (a as u64, b as u64)))
    }

    /// Forgets stashed updates at or below `version` (applied, or covered by a snapshot).
    pub fn drop_stash_through(&mut self, version: u64) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM stash WHERE version <= ?1", [version as i64])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Replaces every user with a snapshot's, at its version, in one transaction; stashed
    /// updates it covers are forgotten. A card held twice refuses the whole snapshot. A
    /// snapshot at or below the applied version is stale and changes nothing: updates applied
    /// while its pages were arriving are newer than it (the applied version never goes back).
    pub fn replace_users(
        &mut self,
        version: u64,
        users: &[User],
    ) -> Result<ApplyOutcome, StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let applied = applied_in(&tx).map_err(err)?;
        if version <= applied {
            return Ok(ApplyOutcome::Stale { applied });
        }
        tx.execute_batch("DELETE FROM cards; DELETE FROM users;")
            .map_err(err)?;
        {
            let mut put_user = tx
                .prepare("INSERT INTO users (id, version, body) VALUES (?1, ?2, ?3)")
                .map_err(err)?;
            let mut put_card = tx
                .prepare("INSERT INTO cards (uid, user_id) VALUES (?1, ?2)")
                .map_err(err)?;
            for user in users {
                let body = serde_json::to_string(user)
                    .map_err(|e| StoreError::Corrupt(format!("cannot encode user: {e}")))?;
                match put_user.execute(params![user.id, version as i64, body]) {
                    Ok(_) => {}
                    Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                        return Ok(ApplyOutcome::Rejected(format!(
                            "user {} appears twice",
                            user.id
                        )));
                    }
                    Err(e) => return Err(err(e)),
                }
                for card in &user.cards {
                    match put_card.execute(params![card.as_bytes(), user.id]) {
                        Ok(_) => {}
                        Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                            return Ok(ApplyOutcome::Rejected(format!(
                                "card {card} is claimed by two users"
                            )));
                        }
                        Err(e) => return Err(err(e)),
                    }
                }
            }
        }
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'applied_version'",
            [version as i64],
        )
        .map_err(err)?;
        tx.execute("DELETE FROM stash WHERE version <= ?1", [version as i64])
            .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(ApplyOutcome::Applied)
    }

    /// Counts a message refused for its signature; returns the new total.
    pub fn count_rejected_signature(&mut self) -> Result<u64, StoreError> {
        self.conn
            .execute(
                "UPDATE meta SET value = value + 1 WHERE key = 'rejected_signatures'",
                [],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.meta("rejected_signatures")? as u64)
    }

    /// How many messages were refused for their signature, ever.
    pub fn rejected_signatures(&self) -> Result<u64, StoreError> {
        Ok(self.meta("rejected_signatures")? as u64)
    }

    /// Every stored user, for building the in-memory index.
    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, body FROM users ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| self.err(e))?;
        let mut users = Vec::new();
        for row in rows {
            let (id, body) = row.map_err(|e| self.err(e))?;
            let user: User = serde_json::from_str(&body)
                .map_err(|e| StoreError::Corrupt(format!("user {id}: {e}")))?;
            users.push(user);
        }
        Ok(users)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use acceso_protocol::CardUid;

    fn upsert(version: u64, id: &str, cards: &[&str]) -> Update {
        Update {
            version,
            op: UpdateOp::UpsertUser(User {
                id: id.into(),
                name: id.into(),
                enabled: true,
                cards: cards.iter().map(|c| c.parse().unwrap()).collect(),
                faces: vec![],
                valid_from: None,
                valid_until: None,
                doors: None,
                schedule: vec![],
                two_factor: false,
            }),
        }
    }

    fn delete(version: u64, id: &str) -> Update {
        Update {
            version,
            op: UpdateOp::DeleteUser { user_id: id.into() },
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(&dir.path().join("a.db")).unwrap();
        (dir, s)
    }

    fn cards_of(s: &Store) -> Vec<(String, Vec<CardUid>)> {
        s.users()
            .unwrap()
            .into_iter()
            .map(|u| (u.id, u.cards))
            .collect()
    }

    #[test]
    fn classify_follows_the_versioning_rule() {
        assert_eq!(classify(0, 1), Disposition::Next);
        assert_eq!(classify(4, 5), Disposition::Next);
        assert_eq!(classify(4, 4), Disposition::Stale { applied: 4 });
        assert_eq!(classify(4, 1), Disposition::Stale { applied: 4 });
        assert_eq!(classify(4, 7), Disposition::Gap { applied: 4 });
    }

    #[test]
    fn next_versions_apply_and_stale_ones_are_ignored() {
        let (_d, mut s) = store();
        assert_eq!(
            s.apply_update(&upsert(1, "ana", &["DEADBEEF"])).unwrap(),
            ApplyOutcome::Applied
        );
        assert_eq!(
            s.apply_update(&upsert(2, "bo", &["01020304"])).unwrap(),
            ApplyOutcome::Applied
        );
        // A replay of version 1 with different content must not undo version 2's state.
        assert_eq!(
            s.apply_update(&upsert(1, "ana", &["0A0B0C0D"])).unwrap(),
            ApplyOutcome::Stale { applied: 2 }
        );
        assert_eq!(s.applied_version().unwrap(), 2);
        assert_eq!(cards_of(&s)[0].1[0].to_string(), "DEADBEEF");
    }

    #[test]
    fn gap_is_not_applied() {
        let (_d, mut s) = store();
        s.apply_update(&upsert(1, "ana", &["DEADBEEF"])).unwrap();
        assert_eq!(
            s.apply_update(&upsert(3, "bo", &["01020304"])).unwrap(),
            ApplyOutcome::Gap { applied: 1 }
        );
        assert_eq!(s.users().unwrap().len(), 1);
        assert_eq!(s.applied_version().unwrap(), 1);
    }

    #[test]
    fn upsert_replaces_cards_and_delete_removes_them() {
        let (_d, mut s) = store();
        s.apply_update(&upsert(1, "ana", &["DEADBEEF", "01020304"]))
            .unwrap();
        s.apply_update(&upsert(2, "ana", &["01020304"])).unwrap();
        assert_eq!(
            cards_of(&s),
            vec![("ana".into(), vec!["01020304".parse().unwrap()])]
        );
        // The dropped card is free for someone else now.
        assert_eq!(
            s.apply_update(&upsert(3, "bo", &["DEADBEEF"])).unwrap(),
            ApplyOutcome::Applied
        );
        s.apply_update(&delete(4, "ana")).unwrap();
        assert_eq!(cards_of(&s).len(), 1);
        let cards: i64 = s
            .conn
            .query_row("SELECT count(*) FROM cards", [], |r| r.get(0))
            .unwrap();
        assert_eq!(cards, 1);
        // Deleting an unknown user is a no-op that still advances the version.
        assert_eq!(
            s.apply_update(&delete(5, "nobody")).unwrap(),
            ApplyOutcome::Applied
        );
        assert_eq!(s.applied_version().unwrap(), 5);
    }

    #[test]
    fn card_held_by_another_user_rejects_the_whole_update() {
        let (_d, mut s) = store();
        s.apply_update(&upsert(1, "ana", &["DEADBEEF"])).unwrap();
        let out = s
            .apply_update(&upsert(2, "bo", &["01020304", "DEADBEEF"]))
            .unwrap();
        let ApplyOutcome::Rejected(why) = out else {
            panic!("{out:?}")
        };
        assert!(why.contains("DEADBEEF") && why.contains("ana"), "{why}");
        // Nothing of it: no user bo, not even his first card, and the version did not move.
        assert_eq!(
            cards_of(&s),
            vec![("ana".into(), vec!["DEADBEEF".parse().unwrap()])]
        );
        assert_eq!(s.applied_version().unwrap(), 1);
    }

    #[test]
    fn users_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        {
            let (mut s, _) = Store::open(&path).unwrap();
            s.apply_update(&upsert(1, "ana", &["DEADBEEF"])).unwrap();
        }
        let (s, moved) = Store::open(&path).unwrap();
        assert!(moved.is_none());
        assert_eq!(s.applied_version().unwrap(), 1);
        assert_eq!(s.users().unwrap()[0].id, "ana");
    }
}
