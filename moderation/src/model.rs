//! The toxicity model: multinomial logistic regression over [`features`](crate::features)
//! (one weight per class and bucket, and a bias), trained with AdaGrad on class-weighted log
//! loss (hate is 6 % of the training posts), shipped quantised to `i8` per class.

use crate::features::{Features, BUCKETS};

/// The classes, in the order of every `[f32; 3]` here.
pub const CLASSES: [&str; 3] = ["hate", "offensive", "neither"];
/// Index of `neither` in [`CLASSES`].
pub const NEITHER: usize = 2;

const MAGIC: &[u8; 4] = b"AXTX";
const VERSION: u8 = 1;

/// Why model bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// Not a model file of this version and shape.
    #[error("not a toxicity model of version 1 with {BUCKETS} buckets and 3 classes")]
    Format,
}

/// How to train.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainConfig {
    /// Passes over the examples.
    pub epochs: usize,
    /// AdaGrad's base step.
    pub rate: f32,
    /// Exponent of the class weights (count^-exponent, normalised): 0 is unweighted.
    pub class_weight: f32,
    /// Shuffling seed.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        // Chosen by the sweep in docs/moderation.md (macro-F1 within 0.003 of the best, the
        // best hate recall among those).
        Self {
            epochs: 8,
            rate: 0.1,
            class_weight: 0.75,
            seed: 7,
        }
    }
}

/// A trained model.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// `weights[class * BUCKETS + bucket]`.
    weights: Vec<f32>,
    bias: [f32; 3],
}

impl Model {
    /// The class probabilities of a message's features.
    pub fn probabilities(&self, f: &Features) -> [f32; 3] {
        let mut z = self.bias;
        for (k, zk) in z.iter_mut().enumerate() {
            let w = &self.weights[k * BUCKETS..(k + 1) * BUCKETS];
            *zk += f.iter().map(|(b, v)| w[*b as usize] * v).sum::<f32>();
        }
        softmax(z)
    }

    /// The most likely class.
    pub fn predict(&self, f: &Features) -> usize {
        argmax(self.probabilities(f))
    }

    /// Train on `examples` (features, class index).
    pub fn train(examples: &[(Features, usize)], config: &TrainConfig) -> Model {
        let mut counts = [0usize; 3];
        for (_, y) in examples {
            counts[*y] += 1;
        }
        let mut class_w = [1f32; 3];
        for k in 0..3 {
            class_w[k] = (counts[k].max(1) as f32).powf(-config.class_weight);
        }
        let mean: f32 = (0..3).map(|k| class_w[k] * counts[k] as f32).sum::<f32>()
            / examples.len().max(1) as f32;
        for w in &mut class_w {
            *w /= mean.max(f32::MIN_POSITIVE);
        }
        let mut model = Model {
            weights: vec![0.0; 3 * BUCKETS],
            bias: [0.0; 3],
        };
        let mut grad_sq = vec![1e-6f32; 3 * BUCKETS];
        let mut bias_sq = [1e-6f32; 3];
        let mut order: Vec<usize> = (0..examples.len()).collect();
        let mut rng = config.seed | 1;
        for _ in 0..config.epochs {
            shuffle(&mut order, &mut rng);
            for &i in &order {
                let (f, y) = &examples[i];
                let p = model.probabilities(f);
                for k in 0..3 {
                    let target = if k == *y { 1.0 } else { 0.0 };
                    let g = (p[k] - target) * class_w[*y];
                    if g == 0.0 {
                        continue;
                    }
                    for (b, v) in f {
                        let j = k * BUCKETS + *b as usize;
                        let gj = g * v;
                        grad_sq[j] += gj * gj;
                        model.weights[j] -= config.rate * gj / grad_sq[j].sqrt();
                    }
                    bias_sq[k] += g * g;
                    model.bias[k] -= config.rate * g / bias_sq[k].sqrt();
                }
            }
        }
        model
    }

    /// The model as it ships: weights quantised to `i8` with one scale per class.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 3 * (8 + BUCKETS));
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&(BUCKETS as u32).to_le_bytes());
        out.push(3);
        for k in 0..3 {
            let w = &self.weights[k * BUCKETS..(k + 1) * BUCKETS];
            let max = w.iter().fold(0f32, |m, x| m.max(x.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            out.extend_from_slice(&scale.to_le_bytes());
            out.extend_from_slice(&self.bias[k].to_le_bytes());
            out.extend(
                w.iter()
                    .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8 as u8),
            );
        }
        out
    }

    /// A model from [`Model::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Model, ModelError> {
        let head = 4 + 1 + 4 + 1;
        if bytes.len() != head + 3 * (8 + BUCKETS)
            || &bytes[..4] != MAGIC
            || bytes[4] != VERSION
            || bytes[5..9] != (BUCKETS as u32).to_le_bytes()
            || bytes[9] != 3
        {
            return Err(ModelError::Format);
        }
        let mut weights = Vec::with_capacity(3 * BUCKETS);
        let mut bias = [0f32; 3];
        let mut at = head;
        for b in &mut bias {
            let f32_at =
                |i: usize| f32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
            let scale = f32_at(at);
            *b = f32_at(at + 4);
            at += 8;
            weights.extend(
                bytes[at..at + BUCKETS]
                    .iter()
                    .map(|q| f32::from(*q as i8) * scale),
            );
            at += BUCKETS;
        }
        if weights.iter().chain(&bias).any(|x| !x.is_finite()) {
            return Err(ModelError::Format);
        }
        Ok(Model { weights, bias })
    }

    /// This model as it is after shipping (quantised and read back).
    pub fn shipped(&self) -> Model {
        Model::from_bytes(&self.to_bytes()).unwrap_or_else(|_| self.clone())
    }
}

fn softmax(z: [f32; 3]) -> [f32; 3] {
    let max = z.iter().fold(f32::MIN, |m, x| m.max(*x));
    let e = z.map(|x| (x - max).exp());
    let sum: f32 = e.iter().sum();
    e.map(|x| x / sum)
}

/// Index of the largest value (the first of equals).
pub fn argmax(p: [f32; 3]) -> usize {
    let mut best = 0;
    for k in 1..3 {
        if p[k] > p[best] {
            best = k;
        }
    }
    best
}

/// Fisher-Yates with xorshift64 (deterministic for a seed; no dependency).
pub(crate) fn shuffle(v: &mut [usize], state: &mut u64) {
    for i in (1..v.len()).rev() {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let j = (*state % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::features;

    fn toy() -> Vec<(Features, usize)> {
        let mut ex = Vec::new();
        for i in 0..30 {
            ex.push((features(&format!("you are a zorblat number {i}")), 0));
            ex.push((features(&format!("such a grumfy thing {i}")), 1));
            ex.push((features(&format!("lovely weather today {i}")), 2));
        }
        ex
    }

    #[test]
    fn a_trained_model_separates_its_classes_and_survives_shipping() {
        let model = Model::train(&toy(), &TrainConfig::default());
        let shipped = model.shipped();
        for (text, class) in [("zorblat", 0), ("grumfy grumfy", 1), ("lovely weather", 2)] {
            assert_eq!(shipped.predict(&features(text)), class, "{text}");
        }
        let p = shipped.probabilities(&features("zorblat"));
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert_eq!(Model::from_bytes(&model.to_bytes()), Ok(shipped));
    }

    #[test]
    fn bytes_of_another_shape_are_refused() {
        let bytes = Model::train(&toy(), &TrainConfig::default()).to_bytes();
        assert_eq!(Model::from_bytes(&bytes[..100]), Err(ModelError::Format));
        let mut other = bytes.clone();
        other[0] = b'X';
        assert_eq!(Model::from_bytes(&other), Err(ModelError::Format));
        assert_eq!(Model::from_bytes(&[]), Err(ModelError::Format));
    }

    #[test]
    fn training_is_deterministic_for_a_seed() {
        let a = Model::train(&toy(), &TrainConfig::default());
        let b = Model::train(&toy(), &TrainConfig::default());
        assert_eq!(a.to_bytes(), b.to_bytes());
    }
}
