//! A simulated radio: an in-memory [`Air`] that simulated devices advertise into and scan.
//!
//! Received signal strength follows a log-distance path-loss model with losses for how each
//! phone is carried, for walls in the way and for the environment, plus Gaussian noise; packets
//! below the receiver's sensitivity are lost. [`PathLossModel::default`] is fitted to the
//! smartphone measurements in `shared/data/ble/rss-smartphone` (two people, hand, pocket and
//! backpack, 0.2-5 m); the test `radio_model` in this crate compares the two.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use varsel_protocol::advertisement::Advertisement;

use super::Radio;
use crate::Error;
use crate::clock::Clock;
use crate::sighting::Sighting;

/// Closest distance the model uses, in metres: phones cannot be closer than their cases allow.
const MIN_DISTANCE_M: f64 = 0.1;

/// How a phone is carried, which decides how much of the signal the body absorbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Carry {
    /// In the hand, in front of the body.
    Hand,
    /// In a trouser pocket.
    Pocket,
    /// In a backpack or bag.
    Bag,
}

/// A point on the floor, in metres.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Position {
    /// East, metres.
    pub x: f64,
    /// North, metres.
    pub y: f64,
}

impl Position {
    /// The point at (`x`, `y`).
    pub const fn new(x: f64, y: f64) -> Self {
        Self { x, y }
    }

    /// Distance to `other`, metres.
    pub fn distance(self, other: Self) -> f64 {
        (self.x - other.x).hypot(self.y - other.y)
    }
}

/// A wall between two points that weakens signals crossing it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Wall {
    /// One end.
    pub from: Position,
    /// The other end.
    pub to: Position,
    /// Loss for a signal crossing it, dB.
    pub loss_db: f64,
}

impl Wall {
    /// Whether the straight line from `a` to `b` crosses this wall.
    fn blocks(&self, a: Position, b: Position) -> bool {
        let side = |p: Position, q: Position, r: Position| {
            (q.x - p.x) * (r.y - p.y) - (q.y - p.y) * (r.x - p.x)
        };
        let d1 = side(self.from, self.to, a);
        let d2 = side(self.from, self.to, b);
        let d3 = side(a, b, self.from);
        let d4 = side(a, b, self.to);
        d1 * d2 < 0.0 && d3 * d4 < 0.0
    }
}

/// The log-distance path-loss model with body, wall and environment losses and noise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PathLossModel {
    /// Mean RSSI at 1 m between two phones held in the hand, dBm.
    pub rssi_at_1m_dbm: f64,
    /// Path-loss exponent: the mean falls by `10 n` dB per tenfold distance.
    pub exponent: f64,
    /// Standard deviation of the per-packet noise (fading), dB.
    pub noise_sd_db: f64,
    /// Weakest packet a phone receives, dBm.
    pub sensitivity_dbm: f64,
    /// Loss through the body for a phone in a pocket, dB.
    pub pocket_loss_db: f64,
    /// Loss for a phone in a bag, dB.
    pub bag_loss_db: f64,
    /// Extra loss everywhere in this environment (0 indoors in one room), dB.
    pub environment_loss_db: f64,
}

impl Default for PathLossModel {
    /// Fitted to `shared/data/ble/rss-smartphone`: pooled over the six carrying combinations,
    /// the median RSSI falls about 15 dB from 0.5 m to 5 m and the combinations' medians lie
    /// about 25 dB apart at each distance, as in the measurements.
    fn default() -> Self {
        Self {
            rssi_at_1m_dbm: -71.0,
            exponent: 1.8,
            noise_sd_db: 7.0,
            sensitivity_dbm: -110.0,
            pocket_loss_db: 14.0,
            bag_loss_db: 10.0,
            environment_loss_db: 0.0,
        }
    }
}

impl PathLossModel {
    /// Loss for a phone carried as `carry`, dB.
    pub fn carry_loss_db(&self, carry: Carry) -> f64 {
        match carry {
            Carry::Hand => 0.0,
            Carry::Pocket => self.pocket_loss_db,
            Carry::Bag => self.bag_loss_db,
        }
    }

    /// Mean RSSI between phones `distance` metres apart, carried as given, with `extra_loss`
    /// dB of walls in between, in dBm.
    pub fn mean_rssi(&self, distance: f64, tx: Carry, rx: Carry, extra_loss: f64) -> f64 {
        let distance = distance.max(MIN_DISTANCE_M);
        self.rssi_at_1m_dbm
            - 10.0 * self.exponent * distance.log10()
            - self.carry_loss_db(tx)
            - self.carry_loss_db(rx)
            - self.environment_loss_db
            - extra_loss
    }

    /// One packet's RSSI around `mean`, or `None` when it is too weak to be received.
    pub fn sample(&self, mean: f64, rng: &mut impl Rng) -> Option<i16> {
        let rssi = mean + self.noise_sd_db * standard_normal(rng);
        (rssi >= self.sensitivity_dbm).then(|| rssi.round().clamp(-127.0, 20.0) as i16)
    }
}

/// A standard normal variate by the Box-Muller transform.
fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.r#gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// One simulated phone on the air.
#[derive(Clone, Debug)]
struct Node {
    position: Position,
    carry: Carry,
    advertisement: Option<Advertisement>,
}

#[derive(Debug)]
struct AirState {
    model: PathLossModel,
    walls: Vec<Wall>,
    nodes: Vec<Node>,
    rng: StdRng,
}

/// The shared medium simulated radios advertise into and scan. Clones share the same air.
#[derive(Clone, Debug)]
pub struct Air(Arc<Mutex<AirState>>);

/// Identifies a radio on an [`Air`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeId(usize);

impl Air {
    /// An empty air with `model`, its noise drawn from a generator seeded with `seed`.
    pub fn new(model: PathLossModel, seed: u64) -> Self {
        Self(Arc::new(Mutex::new(AirState {
            model,
            walls: Vec::new(),
            nodes: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
        })))
    }

    fn state(&self) -> MutexGuard<'_, AirState> {
        // A panic elsewhere cannot leave the air half-updated: every change is one assignment.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a wall.
    pub fn add_wall(&self, wall: Wall) {
        self.state().walls.push(wall);
    }

    /// Adds a phone at `position`, carried as `carry`, and returns its radio.
    pub fn join(&self, position: Position, carry: Carry, clock: Arc<dyn Clock>) -> SimRadio {
        let mut state = self.state();
        state.nodes.push(Node {
            position,
            carry,
            advertisement: None,
        });
        SimRadio {
            air: self.clone(),
            id: NodeId(state.nodes.len() - 1),
            clock,
        }
    }

    /// Moves a phone.
    pub fn set_position(&self, id: NodeId, position: Position) {
        if let Some(node) = self.state().nodes.get_mut(id.0) {
            node.position = position;
        }
    }

    /// Where a phone is.
    pub fn position(&self, id: NodeId) -> Option<Position> {
        self.state().nodes.get(id.0).map(|node| node.position)
    }

    /// What `listener` hears in a scan of `window` starting at `now`: from every other
    /// advertising phone, one packet per second of the window, each with its own noise,
    /// dropped when below sensitivity.
    fn hear(&self, listener: NodeId, now: u64, window: Duration) -> Vec<Sighting> {
        let mut state = self.state();
        let Some(me) = state.nodes.get(listener.0).cloned() else {
            return Vec::new();
        };
        let packets = window.as_secs().max(1);
        let mut heard = Vec::new();
        for index in 0..state.nodes.len() {
            let other = state.nodes[index].clone();
            let Some(advertisement) = other.advertisement.filter(|_| index != listener.0) else {
                continue;
            };
            let walls: f64 = state
                .walls
                .iter()
                .filter(|wall| wall.blocks(other.position, me.position))
                .map(|wall| wall.loss_db)
                .sum();
            let model = state.model;
            let distance = other.position.distance(me.position);
            let mean = model.mean_rssi(distance, other.carry, me.carry, walls);
            for second in 0..packets {
                if let Some(rssi) = model.sample(mean, &mut state.rng) {
                    heard.push(Sighting {
                        rpi: advertisement.rpi,
                        aem: advertisement.aem,
                        rssi,
                        time: now + second,
                    });
                }
            }
        }
        heard
    }
}

/// A simulated phone's radio on an [`Air`].
#[derive(Clone)]
pub struct SimRadio {
    air: Air,
    id: NodeId,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SimRadio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimRadio")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SimRadio {
    /// This radio's identity on the air.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Moves this phone.
    pub fn set_position(&self, position: Position) {
        self.air.set_position(self.id, position);
    }

    /// Stops advertising.
    pub fn stop_advertising(&self) {
        if let Some(node) = self.air.state().nodes.get_mut(self.id.0) {
            node.advertisement = None;
        }
    }
}

impl Radio for SimRadio {
    async fn advertise(&mut self, advertisement: &Advertisement) -> Result<(), Error> {
        if let Some(node) = self.air.state().nodes.get_mut(self.id.0) {
            node.advertisement = Some(*advertisement);
        }
        Ok(())
    }

    /// Hears the air at the clock's current time, without waiting: simulated time is the
    /// clock's.
    async fn scan(&mut self, window: Duration) -> Result<Vec<Sighting>, Error> {
        Ok(self.air.hear(self.id, self.clock.now(), window))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use varsel_protocol::keys::{AssociatedEncryptedMetadata, RollingProximityIdentifier};

    fn advertisement(byte: u8) -> Advertisement {
        Advertisement {
            rpi: RollingProximityIdentifier::from_bytes([byte; 16]),
            aem: AssociatedEncryptedMetadata::from_bytes([byte; 4]),
        }
    }

    fn median(mut values: Vec<i16>) -> i16 {
        values.sort_unstable();
        values[values.len() / 2]
    }

    #[tokio::test]
    async fn closer_is_louder_and_walls_weaken() {
        let air = Air::new(PathLossModel::default(), 3);
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_000));
        let mut listener = air.join(Position::new(0.0, 0.0), Carry::Hand, clock.clone());
        let mut near = air.join(Position::new(1.0, 0.0), Carry::Hand, clock.clone());
        let mut far = air.join(Position::new(0.0, 8.0), Carry::Hand, clock.clone());
        near.advertise(&advertisement(1)).await.unwrap();
        far.advertise(&advertisement(2)).await.unwrap();

        let mut by_source = [Vec::new(), Vec::new()];
        for _ in 0..200 {
            for sighting in listener.scan(Duration::from_secs(4)).await.unwrap() {
                let source = usize::from(sighting.rpi.as_bytes()[0] - 1);
                by_source[source].push(sighting.rssi);
            }
        }
        let [near_rssi, far_rssi] = by_source;
        assert!(median(near_rssi.clone()) > median(far_rssi) + 10);

        air.add_wall(Wall {
            from: Position::new(0.5, -5.0),
            to: Position::new(0.5, 5.0),
            loss_db: 20.0,
        });
        let mut walled = Vec::new();
        for _ in 0..200 {
            let heard = listener.scan(Duration::from_secs(4)).await.unwrap();
            walled.extend(
                heard
                    .iter()
                    .filter(|s| s.rpi.as_bytes()[0] == 1)
                    .map(|s| s.rssi),
            );
        }
        assert!(median(walled) < median(near_rssi) - 15);
    }

    #[tokio::test]
    async fn a_radio_does_not_hear_itself_or_the_silent() {
        let air = Air::new(PathLossModel::default(), 4);
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(5_000));
        let mut me = air.join(Position::new(0.0, 0.0), Carry::Hand, clock.clone());
        let mut other = air.join(Position::new(0.5, 0.0), Carry::Hand, clock.clone());
        me.advertise(&advertisement(7)).await.unwrap();
        assert!(me.scan(Duration::from_secs(4)).await.unwrap().is_empty());
        other.advertise(&advertisement(8)).await.unwrap();
        let heard = me.scan(Duration::from_secs(4)).await.unwrap();
        assert!(!heard.is_empty() && heard.len() <= 4);
        assert!(heard.iter().all(|s| (5_000..5_004).contains(&s.time)));
        other.stop_advertising();
        assert!(me.scan(Duration::from_secs(4)).await.unwrap().is_empty());
    }
}
