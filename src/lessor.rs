//! When leases expire: runtime state of the leader, not replicated.
//!
//! Grants and revokes are applied from the log; this keeps each live
//! lease's deadline. Keep-alives (on any core) push a deadline out; the
//! Raft thread, on every tick, takes at most [`LEASE_REVOKES_PER_TICK_MAX`]
//! expired leases and proposes their revocation (etcd's rate of 1,000/s at
//! the default 100 ms tick), so every member deletes the same keys at the
//! same revision. After a restart every deadline is the full TTL from the
//! moment the lease was loaded (etcd's rule without checkpoints).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Expired leases proposed for revocation per Raft tick.
pub const LEASE_REVOKES_PER_TICK_MAX: usize = 100;
/// A revoke proposal that did not apply within this is proposed again.
const REVOKE_RETRY: Duration = Duration::from_secs(3);

#[derive(Debug)]
struct Deadline {
    ttl: Duration,
    expires: Instant,
    /// When a revoke was last proposed.
    revoking: Option<Instant>,
}

/// Lease deadlines.
#[derive(Debug, Default)]
pub struct Lessor {
    leases: Mutex<HashMap<i64, Deadline>>,
}

impl Lessor {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Deadline>> {
        self.leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A lease was granted (or loaded): it expires `ttl_s` from `now`.
    pub fn on_granted(&self, id: i64, ttl_s: i64, now: Instant) {
        let ttl = Duration::from_secs(u64::try_from(ttl_s).unwrap_or(0));
        self.lock().insert(
            id,
            Deadline {
                ttl,
                expires: now
                    .checked_add(ttl)
                    .unwrap_or(now + Duration::from_secs(1 << 40)),
                revoking: None,
            },
        );
    }

    /// The member became leader: every lease gets its full TTL plus
    /// `extend` (etcd's `Promote` adds the election timeout) from `now`.
    pub fn promote(
        &self,
        leases: impl IntoIterator<Item = (i64, i64)>,
        extend: Duration,
        now: Instant,
    ) {
        let mut map = self.lock();
        map.clear();
        for (id, ttl_s) in leases {
            let ttl = Duration::from_secs(u64::try_from(ttl_s).unwrap_or(0));
            let expires = now
                .checked_add(ttl + extend)
                .unwrap_or(now + Duration::from_secs(1 << 40));
            map.insert(
                id,
                Deadline {
                    ttl,
                    expires,
                    revoking: None,
                },
            );
        }
    }

    /// Deadline order key for listing (earliest expiry first, as etcd's
    /// `Leases`); unknown leases sort last.
    pub fn expiry_of(&self, id: i64) -> Option<Instant> {
        self.lock().get(&id).map(|d| d.expires)
    }

    /// A lease was revoked.
    pub fn on_revoked(&self, id: i64) {
        self.lock().remove(&id);
    }

    /// Keep-alive: pushes the deadline to a full TTL from `now`. False for
    /// an unknown (or already expiring) lease.
    pub fn renew(&self, id: i64, now: Instant) -> bool {
        let mut leases = self.lock();
        match leases.get_mut(&id) {
            Some(d) if d.revoking.is_none() && d.expires > now => {
                d.expires = now.checked_add(d.ttl).unwrap_or(d.expires);
                true
            }
            _ => false,
        }
    }

    /// Time left before the lease expires (`None`: unknown lease).
    pub fn remaining(&self, id: i64, now: Instant) -> Option<Duration> {
        self.lock()
            .get(&id)
            .map(|d| d.expires.saturating_duration_since(now))
    }

    /// Up to `max` expired leases not already being revoked (or whose
    /// revoke is overdue), earliest deadline first (as etcd's expiry heap);
    /// marks them as being revoked.
    pub fn take_expired(&self, now: Instant, max: usize) -> Vec<i64> {
        let mut leases = self.lock();
        let mut due: Vec<(Instant, i64)> = leases
            .iter()
            .filter(|(_, d)| {
                d.expires <= now
                    && d.revoking
                        .is_none_or(|at| now.duration_since(at) >= REVOKE_RETRY)
            })
            .map(|(id, d)| (d.expires, *id))
            .collect();
        due.sort_unstable();
        due.truncate(max);
        for (_, id) in &due {
            if let Some(d) = leases.get_mut(id) {
                d.revoking = Some(now);
            }
        }
        due.into_iter().map(|(_, id)| id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_renewal_and_rate_limit() {
        let l = Lessor::default();
        let t0 = Instant::now();
        for id in 0..250 {
            l.on_granted(id, 2, t0);
        }
        assert!(l.take_expired(t0 + Duration::from_secs(1), 100).is_empty());
        assert!(l.renew(7, t0 + Duration::from_secs(1)));
        let at = t0 + Duration::from_millis(2500);
        let first = l.take_expired(at, 100);
        assert_eq!(first.len(), 100);
        assert!(!first.contains(&7), "renewed lease is not expired");
        assert!(!l.renew(first[0], at), "an expired lease cannot be renewed");
        assert_eq!(l.take_expired(at, 1000).len(), 149);
        assert!(
            l.take_expired(at, 1000).is_empty(),
            "revokes are proposed once"
        );
        // A revoke that never applied is retried (and lease 7, renewed
        // once, has expired by then too).
        assert_eq!(l.take_expired(at + REVOKE_RETRY, 1000).len(), 250);
        l.on_revoked(3);
        // Earliest deadline first.
        let l2 = Lessor::default();
        l2.on_granted(1, 5, t0);
        l2.on_granted(2, 3, t0);
        l2.on_granted(3, 4, t0);
        assert_eq!(l2.take_expired(t0 + Duration::from_secs(9), 2), [2, 3]);
        assert_eq!(l2.take_expired(t0 + Duration::from_secs(9), 2), [1]);
        assert_eq!(l.remaining(3, at), None);
        assert_eq!(
            l.remaining(7, t0 + Duration::from_secs(2)),
            Some(Duration::from_secs(1))
        );
    }
}
