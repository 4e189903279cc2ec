//! Retry delays for the long-running reconnect loops (sinks, Modbus lines and TCP devices,
//! Modbus quarantine, serial sensors, the site MQTT client, the store writer): exponential from
//! an initial delay, doubling up to a cap, back to the start after a success.
//!
//! The sequence comes from backon's `ExponentialBuilder`. Its retry wrappers run one operation a
//! few times; our loops run for the life of the process, so this type adds what they need: no
//! attempt limit, `reset` after a success, and the upcoming delay readable before it is taken.
//! backon multiplies in `f32`, so every delay is rounded to whole milliseconds: configured delays
//! are milliseconds, and a cap of 700 ms stays 700 ms, not 699.99998 ms.

use std::fmt;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

type Delays = <ExponentialBuilder as BackoffBuilder>::Backoff;

/// Exponential backoff between `initial` and `max` (the first delay is `initial` even above
/// `max`), optionally with jitter.
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: bool,
    delays: Delays,
    upcoming: Duration,
}

impl Backoff {
    /// `initial`, then doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff::build(initial, max, false)
    }

    /// The same delay every time.
    pub fn constant(delay: Duration) -> Backoff {
        Backoff::new(delay, delay)
    }

    /// Each delay drawn uniformly between half the step and the step, so gateways that lost the
    /// same upstream at once do not all come back at once.
    pub fn with_jitter(self) -> Backoff {
        Backoff::build(self.initial, self.max, true)
    }

    /// The delay to wait now; the one after it is longer, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.upcoming;
        self.upcoming = pull(&mut self.delays, self.max);
        delay
    }

    /// The delay [`Backoff::next_delay`] returns next, without taking it.
    pub fn peek_delay(&self) -> Duration {
        self.upcoming
    }

    /// Back to the initial delay (after a success).
    pub fn reset(&mut self) {
        *self = Backoff::build(self.initial, self.max, self.jitter);
    }

    fn build(initial: Duration, max: Duration, jitter: bool) -> Backoff {
        let builder = ExponentialBuilder::new()
            .with_factor(2.0)
            .without_max_times();
        let builder = if jitter {
            // backon adds up to one step on top of the step: half steps with its jitter give
            // [step/2, step].
            builder
                .with_min_delay(initial / 2)
                .with_max_delay(max / 2)
                .with_jitter()
        } else {
            builder.with_min_delay(initial).with_max_delay(max)
        };
        let mut delays = builder.build();
        let upcoming = pull(&mut delays, max);
        Backoff {
            initial,
            max,
            jitter,
            delays,
            upcoming,
        }
    }
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backoff")
            .field("initial", &self.initial)
            .field("max", &self.max)
            .field("jitter", &self.jitter)
            .field("upcoming", &self.upcoming)
            .finish()
    }
}

fn pull(delays: &mut Delays, max: Duration) -> Duration {
    // Without an attempt limit the sequence does not end; `max` is only a fallback.
    delays.next().map_or(max, whole_millis)
}

fn whole_millis(d: Duration) -> Duration {
    let ms = (d.as_nanos() + 500_000) / 1_000_000;
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(ms(100), ms(1000));
        let steps: Vec<Duration> = (0..7).map(|_| b.next_delay()).collect();
        let want: Vec<Duration> = [100, 200, 400, 800, 1000, 1000, 1000]
            .into_iter()
            .map(ms)
            .collect();
        assert_eq!(steps, want);
        b.reset();
        assert_eq!(b.next_delay(), ms(100));
        assert_eq!(b.next_delay(), ms(200));
    }

    #[test]
    fn delays_stay_whole_milliseconds() {
        let mut b = Backoff::new(ms(700), ms(30_000));
        let steps: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        let want: Vec<Duration> = [700, 1400, 2800, 5600, 11_200, 22_400, 30_000, 30_000]
            .into_iter()
            .map(ms)
            .collect();
        assert_eq!(steps, want);
    }

    #[test]
    fn peek_does_not_take_the_delay() {
        let mut b = Backoff::new(ms(50), ms(400));
        assert_eq!(b.peek_delay(), ms(50));
        assert_eq!(b.peek_delay(), ms(50));
        assert_eq!(b.next_delay(), ms(50));
        assert_eq!(b.peek_delay(), ms(100));
        let mut j = Backoff::new(ms(50), ms(400)).with_jitter();
        for _ in 0..6 {
            let peeked = j.peek_delay();
            assert_eq!(j.next_delay(), peeked);
        }
    }

    #[test]
    fn constant_and_initial_above_the_cap() {
        let mut c = Backoff::constant(ms(250));
        assert!((0..5).all(|_| c.next_delay() == ms(250)));
        let mut b = Backoff::new(ms(500), ms(300));
        assert_eq!(b.next_delay(), ms(500));
        assert_eq!(b.next_delay(), ms(300));
        let mut z = Backoff::new(Duration::ZERO, ms(300));
        assert_eq!(z.next_delay(), Duration::ZERO);
        assert_eq!(z.next_delay(), Duration::ZERO);
    }

    #[test]
    fn jitter_stays_between_half_the_step_and_the_step() {
        let mut b = Backoff::new(ms(100), ms(1000)).with_jitter();
        for round in 0..50 {
            for i in 0..8 {
                let step = (100u64 << i).min(1000);
                let d = b.next_delay();
                assert!(
                    d >= ms(step / 2) && d <= ms(step),
                    "round {round} step {i}: {d:?}"
                );
            }
            b.reset();
        }
    }

    #[test]
    fn jitter_spreads() {
        let mut b = Backoff::new(ms(1000), ms(1000)).with_jitter();
        let draws: std::collections::BTreeSet<Duration> = (0..50).map(|_| b.next_delay()).collect();
        assert!(draws.len() > 10, "{draws:?}");
    }
}
