//! Drops records seen before, by `(gatewayId, seq)`. A gateway's records do not arrive in one
//! `seq` order (the alarm lane runs ahead of telemetry, each channel, stream and partition
//! is ordered on its own), so a high-water mark alone would drop good records. Per gateway
//! we keep a floor (every `seq` at or below it was seen) and the `seq`s seen above it; the
//! floor rises over the seen ones as the gaps fill. A gap that never fills (the edge evicted
//! a record before sending it) is given up once `WINDOW` `seq`s wait above it. Only the floor
//! is kept across a restart: what lay above it may come again once (at-least-once).

use std::collections::{BTreeSet, HashMap};

/// Most `seq`s held above a gateway's floor.
const WINDOW: usize = 8_192;

#[derive(Debug, Default)]
pub struct Dedup {
    gateways: HashMap<String, Seen>,
    max_gateways: usize,
}

#[derive(Debug, Default)]
struct Seen {
    floor: u64,
    above: BTreeSet<u64>,
}

/// What [`Dedup::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    New,
    Duplicate,
    /// One gateway too many to track: relayed without dedup.
    Untracked,
}

impl Dedup {
    pub fn new(max_gateways: usize) -> Dedup {
        Dedup {
            gateways: HashMap::new(),
            max_gateways,
        }
    }

    /// A gateway's floor as kept in the store.
    pub fn restore(&mut self, gateway: String, floor: u64) {
        self.gateways.insert(
            gateway,
            Seen {
                floor,
                above: BTreeSet::new(),
            },
        );
    }

    pub fn admit(&mut self, gateway: &str, seq: u64) -> Verdict {
        if !self.gateways.contains_key(gateway) {
            if self.gateways.len() >= self.max_gateways {
                return Verdict::Untracked;
            }
            self.gateways.insert(gateway.to_string(), Seen::default());
        }
        let seen = self.gateways.get_mut(gateway).expect("inserted above");
        if seq <= seen.floor || !seen.above.insert(seq) {
            return Verdict::Duplicate;
        }
        seen.settle();
        Verdict::New
    }

    /// A gateway's floor: every `seq` at or below it was seen.
    pub fn floor(&self, gateway: &str) -> Option<u64> {
        self.gateways.get(gateway).map(|s| s.floor)
    }

    #[cfg(test)]
    fn floors(&self) -> impl Iterator<Item = (&str, u64)> {
        self.gateways.iter().map(|(g, s)| (g.as_str(), s.floor))
    }
}

impl Seen {
    fn settle(&mut self) {
        while self.above.len() > WINDOW {
            let lowest = self.above.pop_first().expect("not empty");
            self.floor = lowest;
        }
        while self.above.first() == Some(&(self.floor + 1)) {
            self.floor += 1;
            self.above.pop_first();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_dropped_out_of_order_ones_are_not() {
        let mut d = Dedup::new(10);
        for seq in [1, 2, 5, 3, 4] {
            assert_eq!(d.admit("a", seq), Verdict::New, "{seq}");
        }
        assert_eq!(d.floors().collect::<Vec<_>>(), vec![("a", 5)]);
        for seq in [1, 4, 5] {
            assert_eq!(d.admit("a", seq), Verdict::Duplicate);
        }
        // The alarm lane ran ahead: 9 first, then 6..8 still come in.
        assert_eq!(d.admit("a", 9), Verdict::New);
        assert_eq!(d.admit("a", 9), Verdict::Duplicate);
        for seq in [6, 7, 8] {
            assert_eq!(d.admit("a", seq), Verdict::New);
        }
        assert_eq!(d.admit("b", 1), Verdict::New);
    }

    #[test]
    fn a_gap_that_never_fills_is_given_up_and_gateways_are_bounded() {
        let mut d = Dedup::new(1);
        for seq in 2..=(WINDOW as u64 + 2) {
            assert_eq!(d.admit("a", seq), Verdict::New);
        }
        assert_eq!(d.floors().next(), Some(("a", WINDOW as u64 + 2)));
        assert_eq!(d.admit("a", 1), Verdict::Duplicate);
        assert_eq!(d.admit("b", 1), Verdict::Untracked);
        let mut r = Dedup::new(4);
        r.restore("a".into(), 10);
        assert_eq!(r.admit("a", 10), Verdict::Duplicate);
        assert_eq!(r.admit("a", 11), Verdict::New);
    }
}
