//! Models on candle-core: their architectures, parameters as flat vectors, and the forward pass.
//!
//! A model's parameters travel as one flat `f32` vector (the concatenation of every tensor in
//! [`Architecture::parameter_shapes`] order, each row-major): that is what aggregators,
//! compressors and model hashes work on.

use candle_core::{D, Device, Tensor, Var};

use crate::error::{Error, Result};
use crate::rng::Rng;

/// The shape of a model: which layers, of what sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Architecture {
    /// Multinomial logistic regression: one linear layer, softmax.
    Logistic {
        /// Input features.
        inputs: usize,
        /// Output classes.
        classes: usize,
    },
    /// A multilayer perceptron with one ReLU hidden layer.
    Mlp {
        /// Input features.
        inputs: usize,
        /// Hidden units.
        hidden: usize,
        /// Output classes.
        classes: usize,
    },
    /// A small convolutional network for square single-channel images of `side x side`
    /// pixels (`side` even): 3x3 convolution (padding 1) to `channels` maps, ReLU, 2x2 max
    /// pooling, then a linear layer.
    Cnn {
        /// Image side in pixels (the input has `side * side` features).
        side: usize,
        /// Convolution output channels.
        channels: usize,
        /// Output classes.
        classes: usize,
    },
}

impl Architecture {
    /// The parameter tensors' shapes, in flat-vector order. Linear weights are
    /// `[inputs, outputs]`; convolution kernels `[channels, 1, 3, 3]`.
    pub fn parameter_shapes(&self) -> Vec<Vec<usize>> {
        match *self {
            Self::Logistic { inputs, classes } => vec![vec![inputs, classes], vec![classes]],
            Self::Mlp {
                inputs,
                hidden,
                classes,
            } => vec![
                vec![inputs, hidden],
                vec![hidden],
                vec![hidden, classes],
                vec![classes],
            ],
            Self::Cnn {
                side,
                channels,
                classes,
            } => {
                let pooled = (side / 2) * (side / 2) * channels;
                vec![
                    vec![channels, 1, 3, 3],
                    vec![channels],
                    vec![pooled, classes],
                    vec![classes],
                ]
            }
        }
    }

    /// Total number of parameters.
    pub fn num_parameters(&self) -> usize {
        self.parameter_shapes()
            .iter()
            .map(|s| s.iter().product::<usize>())
            .sum()
    }

    /// Input features per example.
    pub fn inputs(&self) -> usize {
        match *self {
            Self::Logistic { inputs, .. } | Self::Mlp { inputs, .. } => inputs,
            Self::Cnn { side, .. } => side * side,
        }
    }

    /// Output classes.
    pub fn classes(&self) -> usize {
        match *self {
            Self::Logistic { classes, .. }
            | Self::Mlp { classes, .. }
            | Self::Cnn { classes, .. } => classes,
        }
    }

    fn validate(&self) -> Result<()> {
        let ok = match *self {
            Self::Logistic { inputs, classes } => inputs > 0 && classes >= 2,
            Self::Mlp {
                inputs,
                hidden,
                classes,
            } => inputs > 0 && hidden > 0 && classes >= 2,
            Self::Cnn {
                side,
                channels,
                classes,
            } => side >= 2 && side % 2 == 0 && channels > 0 && classes >= 2,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::invalid("architecture", format!("{self:?}")))
        }
    }

    /// Fan-in of a parameter tensor of this shape (for initialization), `None` for biases.
    fn fan_in(shape: &[usize]) -> Option<usize> {
        match shape {
            [_] => None,
            [inputs, _] => Some(*inputs),
            [_, c, kh, kw] => Some(c * kh * kw),
            _ => None,
        }
    }
}

/// A model: an architecture and its parameters as candle variables on the CPU.
#[derive(Debug)]
pub struct Model {
    arch: Architecture,
    vars: Vec<Var>,
    device: Device,
}

impl Model {
    /// A freshly initialized model: weights uniform in `±sqrt(6 / fan_in)` (He et al., for
    /// ReLU layers; also a sound scale for the logistic layer), biases zero; deterministic
    /// given `rng`.
    pub fn new(arch: Architecture, rng: &mut Rng) -> Result<Self> {
        arch.validate()?;
        let mut flat = Vec::with_capacity(arch.num_parameters());
        for shape in arch.parameter_shapes() {
            let n: usize = shape.iter().product();
            match Architecture::fan_in(&shape) {
                Some(fan_in) => {
                    let bound = (6.0 / fan_in as f64).sqrt();
                    flat.extend((0..n).map(|_| rng.uniform(-bound, bound) as f32));
                }
                None => flat.extend(std::iter::repeat_n(0.0, n)),
            }
        }
        Self::from_parameters(arch, &flat)
    }

    /// A model with the given flat parameters (see the module docs for the layout).
    pub fn from_parameters(arch: Architecture, parameters: &[f32]) -> Result<Self> {
        arch.validate()?;
        check_parameters(&arch, parameters)?;
        let device = Device::Cpu;
        let mut vars = Vec::new();
        let mut offset = 0;
        for shape in arch.parameter_shapes() {
            let n: usize = shape.iter().product();
            let t = Tensor::from_slice(&parameters[offset..offset + n], shape, &device)?;
            vars.push(Var::from_tensor(&t)?);
            offset += n;
        }
        Ok(Self { arch, vars, device })
    }

    /// The architecture.
    pub fn architecture(&self) -> Architecture {
        self.arch
    }

    /// The parameters as one flat vector.
    pub fn parameters(&self) -> Result<Vec<f32>> {
        let mut flat = Vec::with_capacity(self.arch.num_parameters());
        for v in &self.vars {
            flat.extend(v.as_tensor().flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(flat)
    }

    /// Replaces the parameters (same layout; wrong lengths and non-finite values are refused).
    pub fn set_parameters(&mut self, parameters: &[f32]) -> Result<()> {
        check_parameters(&self.arch, parameters)?;
        let mut offset = 0;
        for v in &self.vars {
            let n = v.elem_count();
            let t = Tensor::from_slice(&parameters[offset..offset + n], v.shape(), &self.device)?;
            v.set(&t)?;
            offset += n;
        }
        Ok(())
    }

    pub(crate) fn vars(&self) -> &[Var] {
        &self.vars
    }

    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    /// Logits `[batch, classes]` for inputs `[batch, inputs]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let v = |i: usize| self.vars[i].as_tensor();
        let logits = match self.arch {
            Architecture::Logistic { .. } => x.matmul(v(0))?.broadcast_add(v(1))?,
            Architecture::Mlp { .. } => {
                let h = x.matmul(v(0))?.broadcast_add(v(1))?.relu()?;
                h.matmul(v(2))?.broadcast_add(v(3))?
            }
            Architecture::Cnn { side, channels, .. } => {
                let batch = x.dim(0)?;
                let img = x.reshape((batch, 1, side, side))?;
                let bias = v(1).reshape((1, channels, 1, 1))?;
                let h = img.conv2d(v(0), 1, 1, 1, 1)?.broadcast_add(&bias)?.relu()?;
                let h = h.max_pool2d(2)?.flatten_from(1)?;
                h.matmul(v(2))?.broadcast_add(v(3))?
            }
        };
        Ok(logits)
    }
}

/// Mean cross-entropy of `logits` `[batch, classes]` against `labels` `[batch]` (`u32`).
pub(crate) fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?;
    let shifted = logits.broadcast_sub(&max)?;
    let log_z = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let log_p = shifted.broadcast_sub(&log_z)?;
    let picked = log_p.gather(&labels.unsqueeze(1)?, 1)?;
    Ok(picked.mean_all()?.neg()?)
}

fn check_parameters(arch: &Architecture, parameters: &[f32]) -> Result<()> {
    let want = arch.num_parameters();
    if parameters.len() != want {
        return Err(Error::invalid(
            "parameters",
            format!("{} values for {arch:?}, which has {want}", parameters.len()),
        ));
    }
    if let Some(i) = parameters.iter().position(|x| !x.is_finite()) {
        return Err(Error::invalid(
            "parameters",
            format!("non-finite value at index {i}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARCHS: [Architecture; 3] = [
        Architecture::Logistic {
            inputs: 64,
            classes: 10,
        },
        Architecture::Mlp {
            inputs: 64,
            hidden: 32,
            classes: 10,
        },
        Architecture::Cnn {
            side: 8,
            channels: 4,
            classes: 10,
        },
    ];

    #[test]
    fn parameter_counts() {
        let counts: Vec<usize> = ARCHS.iter().map(Architecture::num_parameters).collect();
        assert_eq!(
            counts,
            [650, 64 * 32 + 32 + 32 * 10 + 10, 36 + 4 + 64 * 10 + 10]
        );
    }

    #[test]
    fn flat_parameters_round_trip_and_shapes_hold() {
        for arch in ARCHS {
            let mut model = Model::new(arch, &mut Rng::new(1)).unwrap();
            let p = model.parameters().unwrap();
            assert_eq!(p.len(), arch.num_parameters());
            assert_eq!(
                Model::new(arch, &mut Rng::new(1))
                    .unwrap()
                    .parameters()
                    .unwrap(),
                p
            );
            let q: Vec<f32> = (0..p.len()).map(|i| i as f32 * 1e-3).collect();
            model.set_parameters(&q).unwrap();
            assert_eq!(model.parameters().unwrap(), q);
            assert_eq!(
                Model::from_parameters(arch, &q)
                    .unwrap()
                    .parameters()
                    .unwrap(),
                q
            );
            let x = Tensor::zeros((5, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
            assert_eq!(model.forward(&x).unwrap().dims(), [5, 10]);
            assert!(model.set_parameters(&q[1..]).is_err());
            let mut bad = q.clone();
            bad[3] = f32::INFINITY;
            assert!(model.set_parameters(&bad).is_err());
        }
        let odd = Architecture::Cnn {
            side: 7,
            channels: 4,
            classes: 10,
        };
        assert!(Model::new(odd, &mut Rng::new(1)).is_err());
    }

    #[test]
    fn the_cnn_layout_is_what_the_docs_say() {
        // A CNN whose one kernel copies the centre pixel, with the linear layer reading the
        // pooled map's first cell into class 1: the logit of class 1 is the max of the top-left
        // 2x2 block.
        let arch = Architecture::Cnn {
            side: 4,
            channels: 1,
            classes: 2,
        };
        let mut p = vec![0.0f32; arch.num_parameters()];
        p[4] = 1.0; // kernel centre
        let linear = 9 + 1; // after the kernel and its bias
        p[linear + 1] = 1.0; // weight [pooled cell 0, class 1]
        let model = Model::from_parameters(arch, &p).unwrap();
        let mut x = vec![0.0f32; 16];
        x[5] = 0.7; // row 1, column 1: inside the top-left block
        x[10] = 0.9; // row 2, column 2: another block
        let x = Tensor::from_vec(x, (1, 16), &Device::Cpu).unwrap();
        let logits = model.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(logits, [[0.0, 0.7]]);
    }

    #[test]
    fn cross_entropy_matches_a_hand_computation() {
        let logits =
            Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 0.0, 0.0, 0.0], (2, 3), &Device::Cpu).unwrap();
        let labels = Tensor::from_vec(vec![2u32, 0], 2, &Device::Cpu).unwrap();
        let got = cross_entropy(&logits, &labels)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let lse = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        let want = ((lse - 3.0) + 3f64.ln()) / 2.0;
        assert!((f64::from(got) - want).abs() < 1e-6, "{got} {want}");
    }
}
