//! etcd's automatic compaction (`--auto-compaction-mode`,
//! `--auto-compaction-retention`), as a state machine: time and the store
//! revision come in ([`AutoCompactor::on_tick`]), compaction revisions come
//! out; the Raft thread proposes them as ordinary `Compact` entries and
//! reports how they went ([`AutoCompactor::on_compacted`]).
//!
//! Periodic, retention R (etcd's `v3compactor.Periodic`): every R/10 (at
//! most 6 minutes) record the store revision, keeping the last R/(R/10)+1
//! records, so the oldest is the revision of about R ago. The first
//! compaction waits R after start; then, every R (at most one hour) since
//! the last success, compact to the oldest record. With R = 10h, history
//! is compacted hourly down to what was current 10 hours earlier.
//!
//! Revision, retention N (etcd's `v3compactor.Revision`): every 5 minutes,
//! compact to `revision - N` unless that is not positive or was the last
//! one compacted to.
//!
//! Worked example, periodic R = 1s (records every 100 ms): a put at t=0.05
//! makes revision 2. The first check at t=1.0 finds a full second passed
//! and compacts to the oldest record (revision 1, recorded at t=0). Later
//! checks compact every second to the revision recorded a second before.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How often the revision compactor looks (etcd's `revInterval`).
pub const REVISION_CHECK_INTERVAL: Duration = Duration::from_secs(300);
/// The periodic compactor records revisions every period / this.
const RETRY_DIVISOR: u32 = 10;
/// The periodic compactor's longest interval between compactions.
const PERIOD_STEP_MAX: Duration = Duration::from_secs(3600);

/// What `--auto-compaction-mode` and `--auto-compaction-retention` ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep about this much time of history.
    Periodic(Duration),
    /// Keep this many revisions of history.
    Revision(i64),
}

#[derive(Debug)]
enum State {
    Periodic {
        period: Duration,
        /// Recorded revisions, oldest first (at most `retentions`).
        revs: VecDeque<i64>,
        retentions: usize,
        last_success: Instant,
        /// Time that must pass since `last_success`: the whole period
        /// before the first compaction, then the compact interval.
        base_interval: Duration,
    },
    Revision {
        retention: i64,
        /// Last revision compacted to.
        prev: i64,
    },
}

/// The automatic compactor (see the module docs).
#[derive(Debug)]
pub struct AutoCompactor {
    state: State,
    /// When the next check is due.
    next_check: Instant,
    /// A compaction proposed and not yet reported.
    in_flight: Option<i64>,
}

impl AutoCompactor {
    /// Starts at `now` with the store at `revision`.
    ///
    /// # Panics
    /// A periodic retention under 10 ns or a revision retention under 1
    /// (the configuration refuses both as "off").
    #[must_use]
    pub fn new(mode: AutoCompaction, now: Instant, revision: i64) -> AutoCompactor {
        let (state, next_check) = match mode {
            AutoCompaction::Periodic(period) => {
                let retry = Self::retry_interval(period);
                assert!(!retry.is_zero(), "periodic retention too short");
                let retentions = usize::try_from(period.as_nanos() / retry.as_nanos())
                    .unwrap_or(usize::MAX)
                    .saturating_add(1);
                let mut revs = VecDeque::with_capacity(retentions.min(64));
                revs.push_back(revision);
                (
                    State::Periodic {
                        period,
                        revs,
                        retentions,
                        last_success: now,
                        base_interval: period,
                    },
                    now + retry,
                )
            }
            AutoCompaction::Revision(retention) => {
                assert!(retention > 0, "revision retention must be positive");
                (
                    State::Revision { retention, prev: 0 },
                    now + REVISION_CHECK_INTERVAL,
                )
            }
        };
        AutoCompactor {
            state,
            next_check,
            in_flight: None,
        }
    }

    fn retry_interval(period: Duration) -> Duration {
        period.min(PERIOD_STEP_MAX) / RETRY_DIVISOR
    }

    /// Time passes; `revision` is the store's current revision. Returns the
    /// revision to compact to, if a compaction is due now.
    pub fn on_tick(&mut self, now: Instant, revision: i64) -> Option<i64> {
        if now < self.next_check || self.in_flight.is_some() {
            return None;
        }
        let compact = match &mut self.state {
            State::Periodic {
                period,
                revs,
                retentions,
                last_success,
                base_interval,
            } => {
                self.next_check = now + Self::retry_interval(*period);
                let due = now.duration_since(*last_success) >= *base_interval;
                if due {
                    // After the first wait of a whole period, compact every
                    // period (at most hourly).
                    *base_interval = (*period).min(PERIOD_STEP_MAX);
                }
                let oldest = revs.front().copied();
                revs.push_back(revision);
                if revs.len() > *retentions {
                    revs.pop_front();
                }
                if due {
                    oldest
                } else {
                    None
                }
            }
            State::Revision { retention, prev } => {
                self.next_check = now + REVISION_CHECK_INTERVAL;
                let rev = revision - *retention;
                (rev > 0 && rev != *prev).then_some(rev)
            }
        };
        self.in_flight = compact;
        compact
    }

    /// The compaction to `revision` proposed by [`AutoCompactor::on_tick`]
    /// applied (`ok`: it compacted, or an earlier compaction already had)
    /// or failed.
    pub fn on_compacted(&mut self, now: Instant, revision: i64, ok: bool) {
        assert_eq!(
            self.in_flight,
            Some(revision),
            "not the compaction in flight"
        );
        self.in_flight = None;
        if !ok {
            return;
        }
        match &mut self.state {
            State::Periodic { last_success, .. } => *last_success = now,
            State::Revision { prev, .. } => *prev = revision,
        }
    }

    /// What etcd logs with it: ("periodic" or "revision", retention text).
    #[must_use]
    pub fn describe(&self) -> (&'static str, String) {
        match &self.state {
            State::Periodic { period, .. } => ("periodic", format!("{period:?}")),
            State::Revision { retention, .. } => ("revision", retention.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Drives a compactor every `step` for `until`, with the revision
    /// growing by one per step and every compaction succeeding; returns
    /// (time since start, revision compacted to).
    fn drive(mode: AutoCompaction, step: Duration, until: Duration) -> Vec<(Duration, i64)> {
        let t0 = Instant::now();
        let mut c = AutoCompactor::new(mode, t0, 1);
        let mut out = Vec::new();
        let mut t = t0;
        let mut revision = 1;
        while t - t0 <= until {
            if let Some(r) = c.on_tick(t, revision) {
                out.push((t - t0, r));
                c.on_compacted(t, r, true);
            }
            t += step;
            revision += 1;
        }
        out
    }

    #[test]
    fn periodic_waits_a_period_then_compacts_every_period_to_a_period_ago() {
        // 1 s retention, ticks every 10 ms, revision +1 per tick (100/s).
        let got = drive(AutoCompaction::Periodic(secs(1.0)), secs(0.01), secs(3.55));
        let times: Vec<u64> = got.iter().map(|(t, _)| t.as_millis() as u64).collect();
        assert_eq!(times, vec![1000, 2000, 3000]);
        // Each compacts to the revision recorded a period (100 ticks) or a
        // record interval (10 ticks) more before.
        for (t, r) in &got {
            let now_rev = 1 + (t.as_millis() / 10) as i64;
            assert!(
                (90..=110).contains(&(now_rev - r)),
                "at {t:?}: {r} vs {now_rev}"
            );
        }
    }

    #[test]
    fn periodic_retention_above_an_hour_compacts_hourly_keeping_the_window() {
        let got = drive(
            AutoCompaction::Periodic(secs(10.0 * 3600.0)),
            secs(60.0),
            secs(13.0 * 3600.0),
        );
        let hours: Vec<u64> = got.iter().map(|(t, _)| t.as_secs() / 60).collect();
        assert_eq!(hours, vec![600, 660, 720, 780]);
        // Revision +1 per minute: each keeps about 10 hours (600 revisions).
        for (t, r) in &got {
            let now_rev = 1 + (t.as_secs() / 60) as i64;
            assert!(
                (600..=606).contains(&(now_rev - r)),
                "at {t:?}: {r} vs {now_rev}"
            );
        }
    }

    #[test]
    fn a_failed_periodic_compaction_is_retried_at_the_next_record() {
        let t0 = Instant::now();
        let mut c = AutoCompactor::new(AutoCompaction::Periodic(secs(1.0)), t0, 5);
        assert_eq!(c.on_tick(t0 + secs(0.5), 6), None);
        let mut t = t0 + secs(0.5);
        let mut first = None;
        while first.is_none() {
            t += secs(0.1);
            first = c.on_tick(t, 7);
        }
        assert_eq!(first, Some(5));
        // Nothing else while it is in flight.
        assert_eq!(c.on_tick(t + secs(5.0), 8), None);
        c.on_compacted(t, 5, false);
        assert_eq!(
            c.on_tick(t + secs(0.05), 8),
            None,
            "waits for the next record"
        );
        assert!(c.on_tick(t + secs(0.1), 8).is_some());
    }

    #[test]
    fn revision_mode_compacts_every_five_minutes_to_revision_minus_retention() {
        let t0 = Instant::now();
        let mut c = AutoCompactor::new(AutoCompaction::Revision(1000), t0, 1);
        assert_eq!(c.on_tick(t0 + secs(299.0), 5000), None);
        assert_eq!(c.on_tick(t0 + secs(300.0), 5000), Some(4000));
        c.on_compacted(t0 + secs(300.0), 4000, true);
        // Same target: skipped; not positive: skipped.
        assert_eq!(c.on_tick(t0 + secs(600.0), 5000), None);
        assert_eq!(c.on_tick(t0 + secs(900.0), 6500), Some(5500));
        c.on_compacted(t0 + secs(900.0), 5500, true);
        let mut fresh = AutoCompactor::new(AutoCompaction::Revision(1000), t0, 1);
        assert_eq!(fresh.on_tick(t0 + secs(300.0), 1000), None);
        // A failure is retried with the same target.
        assert_eq!(fresh.on_tick(t0 + secs(600.0), 1200), Some(200));
        fresh.on_compacted(t0 + secs(600.0), 200, false);
        assert_eq!(fresh.on_tick(t0 + secs(900.0), 1200), Some(200));
    }
}
