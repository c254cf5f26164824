//! Meteor's random ids: the Alea generator a client seeds from a method's `randomSeed`, so that
//! the server derives the same `_id`s the client simulated, and unpredictable ids for sessions and
//! tokens. It must not hold any state shared between callers.

use rand::Rng as _;

/// The alphabet of `Random.id()`.
pub const UNMISTAKABLE_CHARS: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz";
const BASE64_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";

/// A fresh 17-character id from the operating system's generator.
pub fn random_id() -> String {
    random_from(UNMISTAKABLE_CHARS, 17)
}

/// A fresh 43-character secret (login tokens).
pub fn random_secret() -> String {
    random_from(BASE64_CHARS, 43)
}

fn random_from(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

/// Alea, seeded the way Meteor's `DDP.randomStream` seeds it.
#[derive(Clone, Debug)]
pub struct Alea {
    s0: f64,
    s1: f64,
    s2: f64,
    c: f64,
}

struct Mash {
    n: f64,
}

impl Mash {
    fn new() -> Self {
        Self {
            n: 0xefc8_249d_u32 as f64,
        }
    }

    fn mash(&mut self, data: &str) -> f64 {
        // JavaScript iterates UTF-16 code units.
        for unit in data.encode_utf16() {
            self.n += f64::from(unit);
            let mut h = 0.025_196_032_824_169_38 * self.n;
            self.n = to_u32(h);
            h -= self.n;
            h *= self.n;
            self.n = to_u32(h);
            h -= self.n;
            self.n += h * 4_294_967_296.0;
        }
        to_u32(self.n) * 2.328_306_436_538_696_3e-10
    }
}

/// JavaScript's `x >>> 0`.
fn to_u32(x: f64) -> f64 {
    f64::from((x as i64 as u64 & 0xffff_ffff) as u32)
}

impl Alea {
    /// Seeds from the given strings, as `new AleaRandomGenerator({seeds})`.
    pub fn new(seeds: &[&str]) -> Self {
        let mut mash = Mash::new();
        let mut s0 = mash.mash(" ");
        let mut s1 = mash.mash(" ");
        let mut s2 = mash.mash(" ");
        for seed in seeds {
            s0 -= mash.mash(seed);
            if s0 < 0.0 {
                s0 += 1.0;
            }
            s1 -= mash.mash(seed);
            if s1 < 0.0 {
                s1 += 1.0;
            }
            s2 -= mash.mash(seed);
            if s2 < 0.0 {
                s2 += 1.0;
            }
        }
        Self { s0, s1, s2, c: 1.0 }
    }

    /// The stream a method's `randomSeed` gives for one purpose (`"/collection/tasks"`).
    pub fn stream(random_seed: &str, name: &str) -> Self {
        Self::new(&[random_seed, name])
    }

    /// A number in [0, 1).
    pub fn fraction(&mut self) -> f64 {
        let t = 2_091_639.0 * self.s0 + self.c * 2.328_306_436_538_696_3e-10;
        self.s0 = self.s1;
        self.s1 = self.s2;
        self.c = t.trunc();
        // `t | 0` in JavaScript: t is below 2^31 here.
        self.s2 = t - self.c;
        self.s2
    }

    fn choice(&mut self, alphabet: &[u8]) -> char {
        let index = (self.fraction() * alphabet.len() as f64).floor() as usize;
        alphabet[index.min(alphabet.len() - 1)] as char
    }

    /// `Random.id()`: 17 characters.
    pub fn id(&mut self) -> String {
        (0..17).map(|_| self.choice(UNMISTAKABLE_CHARS)).collect()
    }

    /// `Random.hexString(n)`.
    pub fn hex_string(&mut self, len: usize) -> String {
        (0..len).map(|_| self.choice(b"0123456789abcdef")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_have_meteor_shape() {
        let id = random_id();
        assert_eq!(id.len(), 17);
        assert!(id.bytes().all(|b| UNMISTAKABLE_CHARS.contains(&b)));
        assert_eq!(random_secret().len(), 43);
    }

    #[test]
    fn alea_is_deterministic_per_seed() {
        let a = Alea::stream("s", "/collection/tasks").id();
        let b = Alea::stream("s", "/collection/tasks").id();
        let c = Alea::stream("t", "/collection/tasks").id();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 17);
    }
}
