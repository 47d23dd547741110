//! The face matcher: every enrolled embedding of our model, normalised, in one flat array, and
//! a 1:N search that gives the closest user and the closest *other* user.
//!
//! Built from the users (after every applied change) and swapped in whole, like the card
//! index. Pure: no IO, no clock.

use std::sync::Arc;

use acceso_protocol::User;

use super::{normalised, EMBEDDING_LEN, MODEL_ID};

/// The users' face embeddings, ready to search.
#[derive(Debug, Default)]
pub struct FaceIndex {
    /// `EMBEDDING_LEN` floats per embedding, each embedding unit length.
    vectors: Vec<f32>,
    /// For each embedding, its user's position in `users`.
    owners: Vec<u32>,
    users: Vec<Arc<User>>,
    /// Embeddings left out: another model's, the wrong length, or a zero vector.
    skipped: usize,
}

/// The closest user to a probe, and how close the next-closest user came.
#[derive(Debug, Clone)]
pub struct Match {
    pub user: Arc<User>,
    /// Cosine similarity of the probe and the user's closest embedding.
    pub score: f32,
    /// The best score of any other user; `None` when only one user has faces.
    pub runner_up: Option<f32>,
}

impl Match {
    /// A match is a credential only when it is close enough and clearly closer than anyone
    /// else: a face halfway between two users opens the door for neither.
    pub fn accepted(&self, threshold: f32, margin: f32) -> bool {
        self.score >= threshold && self.runner_up.is_none_or(|r| self.score - r >= margin)
    }
}

impl FaceIndex {
    pub fn build<'a>(users: impl IntoIterator<Item = &'a Arc<User>>) -> FaceIndex {
        let mut index = FaceIndex::default();
        for user in users {
            let mut any = false;
            for face in &user.faces {
                let usable = face.model == MODEL_ID && face.vector.len() == EMBEDDING_LEN;
                match usable.then(|| normalised(&face.vector)).flatten() {
                    Some(v) => {
                        index.vectors.extend_from_slice(&v);
                        index.owners.push(index.users.len() as u32);
                        any = true;
                    }
                    None => index.skipped += 1,
                }
            }
            if any {
                index.users.push(Arc::clone(user));
            }
        }
        index
    }

    /// Embeddings in the index.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// Embeddings that could not be used (another model's, wrong length, zero).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The closest user to `probe` (unit length, `EMBEDDING_LEN` long); `None` for an empty
    /// index or a probe of the wrong length.
    pub fn best(&self, probe: &[f32]) -> Option<Match> {
        if probe.len() != EMBEDDING_LEN {
            return None;
        }
        // (score, owner) of the best embedding, and the best score of any other owner.
        let mut best: Option<(f32, u32)> = None;
        let mut second: Option<f32> = None;
        for (v, &owner) in self.vectors.chunks_exact(EMBEDDING_LEN).zip(&self.owners) {
            let s = dot(probe, v);
            match best {
                None => best = Some((s, owner)),
                Some((b, bo)) if s > b => {
                    if bo != owner {
                        second = Some(second.map_or(b, |x| x.max(b)));
                    }
                    best = Some((s, owner));
                }
                Some((_, bo)) if bo != owner && second.is_none_or(|x| s > x) => second = Some(s),
                _ => {}
            }
        }
        let (score, owner) = best?;
        Some(Match {
            user: Arc::clone(&self.users[owner as usize]),
            score,
            runner_up: second,
        })
    }
}

/// Dot product in eight independent lanes, so the compiler vectorises it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use acceso_protocol::FaceEmbedding;

    fn axis(i: usize, w: f32) -> Vec<f32> {
        let mut v = vec![0.0; EMBEDDING_LEN];
        v[i] = 1.0;
        v[(i + 1) % EMBEDDING_LEN] = w;
        v
    }

    fn user(id: &str, faces: Vec<(&str, Vec<f32>)>) -> Arc<User> {
        Arc::new(User {
            id: id.into(),
            name: id.into(),
            enabled: true,
            cards: vec![],
            faces: faces
                .into_iter()
                .map(|(model, vector)| FaceEmbedding {
                    model: model.into(),
                    vector,
                })
                .collect(),
            valid_from: None,
            valid_until: None,
            doors: None,
            schedule: vec![],
            two_factor: false,
        })
    }

    #[test]
    fn the_closest_user_wins_and_the_runner_up_is_another_user() {
        let users = [
            user(
                "ana",
                vec![(MODEL_ID, axis(0, 0.0)), (MODEL_ID, axis(0, 0.5))],
            ),
            user("ben", vec![(MODEL_ID, axis(1, 0.0))]),
        ];
        let index = FaceIndex::build(&users);
        assert_eq!(index.len(), 3);
        // Closest to ana's first embedding; ana's second must not count as the runner-up.
        let m = index.best(&normalised(&axis(0, 0.1)).unwrap()).unwrap();
        assert_eq!(m.user.id, "ana");
        assert!(m.score > 0.99, "{m:?}");
        let r = m.runner_up.unwrap();
        assert!(r < 0.2, "runner-up {r} is ana's own second embedding");
        assert!(m.accepted(0.5, 0.1));
    }

    #[test]
    fn the_runner_up_is_found_whichever_order_the_embeddings_come_in() {
        // ben's embedding comes first and is beaten by ana's later: ben becomes the runner-up.
        let users = [
            user("ben", vec![(MODEL_ID, axis(0, 1.0))]),
            user("ana", vec![(MODEL_ID, axis(0, 0.0))]),
        ];
        let m = FaceIndex::build(&users)
            .best(&normalised(&axis(0, 0.0)).unwrap())
            .unwrap();
        assert_eq!(m.user.id, "ana");
        let r = m.runner_up.unwrap();
        assert!((r - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-4, "{r}");
    }

    #[test]
    fn a_face_between_two_users_opens_for_neither() {
        let users = [
            user("ana", vec![(MODEL_ID, axis(0, 0.0))]),
            user("ben", vec![(MODEL_ID, axis(1, 0.0))]),
        ];
        let index = FaceIndex::build(&users);
        let mut probe = vec![0.0; EMBEDDING_LEN];
        probe[0] = 1.0;
        probe[1] = 0.95;
        let m = index.best(&normalised(&probe).unwrap()).unwrap();
        assert!(m.score > 0.6);
        assert!(!m.accepted(0.3, 0.05), "{m:?}");
        assert!(!m.accepted(0.99, 0.0), "below threshold");
    }

    #[test]
    fn other_models_wrong_lengths_and_zero_vectors_are_left_out() {
        let users = [
            user("old", vec![("arcface-r100", axis(0, 0.0))]),
            user("short", vec![(MODEL_ID, vec![1.0; 64])]),
            user("zero", vec![(MODEL_ID, vec![0.0; EMBEDDING_LEN])]),
            user("ok", vec![(MODEL_ID, axis(2, 0.0))]),
        ];
        let index = FaceIndex::build(&users);
        assert_eq!((index.len(), index.skipped()), (1, 3));
        let m = index.best(&axis(0, 0.0)).unwrap();
        assert_eq!(m.user.id, "ok", "only the usable embedding can match");
        assert!(m.score.abs() < 1e-6);
        assert!(m.runner_up.is_none());
    }

    #[test]
    fn an_empty_index_or_a_wrong_probe_matches_nobody() {
        assert!(FaceIndex::default().best(&axis(0, 0.0)).is_none());
        let users = [user("ana", vec![(MODEL_ID, axis(0, 0.0))])];
        assert!(FaceIndex::build(&users).best(&[1.0; 3]).is_none());
    }

    #[test]
    fn dot_agrees_with_the_plain_sum() {
        let a: Vec<f32> = (0..EMBEDDING_LEN).map(|i| (i as f32).sin()).collect();
        let b: Vec<f32> = (0..EMBEDDING_LEN).map(|i| (i as f32 * 0.3).cos()).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-4);
    }
}
