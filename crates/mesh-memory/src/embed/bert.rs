//! A BERT encoder's forward pass on candle-core (inference only), as Hugging Face's
//! `BertModel` computes it with absolute positions and one token type: embeddings and
//! LayerNorm, then per layer self-attention (padding masked out), residual and LayerNorm, a
//! GELU (erf) feed-forward, residual and LayerNorm.

use std::collections::HashMap;

use candle_core::{D, DType, Device, Tensor};

/// The settings of `config.json` the forward pass needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Config {
    pub(crate) hidden: usize,
    pub(crate) layers: usize,
    pub(crate) heads: usize,
    pub(crate) intermediate: usize,
    pub(crate) max_positions: usize,
    pub(crate) vocab: usize,
    pub(crate) eps: f64,
}

impl Config {
    /// Reads a BERT `config.json` (absolute positions, GELU); refuses anything else.
    pub(crate) fn from_json(json: &[u8]) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
        let count = |key: &str| {
            v.get(key)
                .and_then(serde_json::Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("`{key}` is not a positive count"))
        };
        let text = |key: &str| v.get(key).and_then(serde_json::Value::as_str);
        if text("model_type") != Some("bert") {
            return Err("`model_type` is not \"bert\"".into());
        }
        if text("hidden_act") != Some("gelu") {
            return Err("`hidden_act` is not \"gelu\"".into());
        }
        if let Some(kind) = text("position_embedding_type")
            && kind != "absolute"
        {
            return Err(format!("position embeddings {kind:?} are not supported"));
        }
        let eps = v
            .get("layer_norm_eps")
            .and_then(serde_json::Value::as_f64)
            .filter(|e| e.is_finite() && *e > 0.0)
            .ok_or("`layer_norm_eps` is not a positive number")?;
        let config = Self {
            hidden: count("hidden_size")?,
            layers: count("num_hidden_layers")?,
            heads: count("num_attention_heads")?,
            intermediate: count("intermediate_size")?,
            max_positions: count("max_position_embeddings")?,
            vocab: count("vocab_size")?,
            eps,
        };
        if !config.hidden.is_multiple_of(config.heads) {
            return Err("`hidden_size` is not a multiple of `num_attention_heads`".into());
        }
        Ok(config)
    }
}

/// A linear layer with its weight stored transposed (`in x out`) for a plain matmul.
#[derive(Debug)]
struct Linear {
    weight_t: Tensor,
    bias: Tensor,
}

impl Linear {
    /// `x` is `rows x in`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight_t)?.broadcast_add(&self.bias)
    }
}

#[derive(Debug)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Normalises the last dimension.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        centred
            .broadcast_div(&(var + self.eps)?.sqrt()?)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

#[derive(Debug)]
struct Layer {
    /// Query, key and value in one matmul (`hidden x 3 hidden`); the query's part is
    /// pre-multiplied by `1 / sqrt(head size)`, the attention scores' scale.
    qkv: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// The encoder's weights on the CPU.
#[derive(Debug)]
pub(crate) struct Bert {
    config: Config,
    words: Tensor,
    positions: Tensor,
    token_type: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
}

/// Takes one tensor out of the map and checks its shape.
fn take(
    tensors: &mut HashMap<String, Tensor>,
    name: &str,
    shape: &[usize],
) -> Result<Tensor, String> {
    let t = tensors
        .remove(name)
        .ok_or_else(|| format!("no tensor {name}"))?;
    if t.dims() != shape {
        return Err(format!(
            "tensor {name} has shape {:?}, expected {shape:?}",
            t.dims()
        ));
    }
    t.to_dtype(DType::F32).map_err(|e| format!("{name}: {e}"))
}

fn linear(
    tensors: &mut HashMap<String, Tensor>,
    prefix: &str,
    inputs: usize,
    outputs: usize,
) -> Result<Linear, String> {
    let weight = take(tensors, &format!("{prefix}.weight"), &[outputs, inputs])?;
    Ok(Linear {
        weight_t: weight
            .t()
            .and_then(|t| t.contiguous())
            .map_err(|e| format!("{prefix}: {e}"))?,
        bias: take(tensors, &format!("{prefix}.bias"), &[outputs])?,
    })
}

/// Query, key and value side by side, the query scaled (see [`Layer::qkv`]).
fn qkv(
    tensors: &mut HashMap<String, Tensor>,
    prefix: &str,
    config: &Config,
) -> Result<Linear, String> {
    let h = config.hidden;
    let scale = 1.0 / ((h / config.heads) as f64).sqrt();
    let q = linear(tensors, &format!("{prefix}.query"), h, h)?;
    let k = linear(tensors, &format!("{prefix}.key"), h, h)?;
    let v = linear(tensors, &format!("{prefix}.value"), h, h)?;
    let fuse = || -> candle_core::Result<Linear> {
        Ok(Linear {
            weight_t: Tensor::cat(&[(q.weight_t * scale)?, k.weight_t, v.weight_t], 1)?,
            bias: Tensor::cat(&[(q.bias * scale)?, k.bias, v.bias], 0)?,
        })
    };
    fuse().map_err(|e| format!("{prefix}: {e}"))
}

fn layer_norm(
    tensors: &mut HashMap<String, Tensor>,
    prefix: &str,
    config: &Config,
) -> Result<LayerNorm, String> {
    Ok(LayerNorm {
        weight: take(tensors, &format!("{prefix}.weight"), &[config.hidden])?,
        bias: take(tensors, &format!("{prefix}.bias"), &[config.hidden])?,
        eps: config.eps,
    })
}

impl Bert {
    /// Builds the encoder from a safetensors file's bytes (names as Hugging Face's
    /// `BertModel` saves them, with or without a `bert.` prefix).
    pub(crate) fn from_safetensors(config: Config, bytes: &[u8]) -> Result<Self, String> {
        let loaded = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
            .map_err(|e| format!("not a safetensors file: {e}"))?;
        let mut tensors: HashMap<String, Tensor> = loaded
            .into_iter()
            .map(|(name, t)| (name.strip_prefix("bert.").unwrap_or(&name).to_owned(), t))
            .collect();
        let h = config.hidden;
        let t = &mut tensors;
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let p = format!("encoder.layer.{i}");
            layers.push(Layer {
                qkv: qkv(t, &format!("{p}.attention.self"), &config)?,
                attention_out: linear(t, &format!("{p}.attention.output.dense"), h, h)?,
                attention_norm: layer_norm(t, &format!("{p}.attention.output.LayerNorm"), &config)?,
                intermediate: linear(
                    t,
                    &format!("{p}.intermediate.dense"),
                    h,
                    config.intermediate,
                )?,
                output: linear(t, &format!("{p}.output.dense"), config.intermediate, h)?,
                output_norm: layer_norm(t, &format!("{p}.output.LayerNorm"), &config)?,
            });
        }
        let token_types = take(t, "embeddings.token_type_embeddings.weight", &[2, h])
            .or_else(|_| take(t, "embeddings.token_type_embeddings.weight", &[1, h]))?;
        Ok(Self {
            words: take(t, "embeddings.word_embeddings.weight", &[config.vocab, h])?,
            positions: take(
                t,
                "embeddings.position_embeddings.weight",
                &[config.max_positions, h],
            )?,
            token_type: token_types
                .narrow(0, 0, 1)
                .map_err(|e| format!("token type embeddings: {e}"))?,
            embeddings_norm: layer_norm(t, "embeddings.LayerNorm", &config)?,
            layers,
            config,
        })
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// Mean-pooled, L2-normalised sentence vectors of a padded batch: `ids` and `mask` are
    /// `batch x len` row-major (mask 1 for a token, 0 for padding; every row has a token).
    /// Returns `batch x hidden`.
    pub(crate) fn embed(
        &self,
        ids: &[u32],
        mask: &[f32],
        batch: usize,
        len: usize,
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let h = self.config.hidden;
        let heads = self.config.heads;
        let head = h / heads;
        let dev = Device::Cpu;
        let mask_has_padding = mask.contains(&0.0);
        let ids = Tensor::from_slice(ids, batch * len, &dev)?;
        let mask = Tensor::from_slice(mask, (batch, len), &dev)?;

        // Embeddings: word + position + token type 0, then LayerNorm. Rows are (batch, pos).
        let x = self
            .words
            .index_select(&ids, 0)?
            .reshape((batch, len, h))?
            .broadcast_add(&self.positions.narrow(0, 0, len)?)?
            .broadcast_add(&self.token_type)?;
        let mut x = self
            .embeddings_norm
            .forward(&x)?
            .reshape((batch * len, h))?;

        // Padding gets a large negative score before the softmax (Hugging Face adds the
        // dtype's minimum); exp() then makes its weight exactly zero. Without padding, no mask.
        let bias = if mask_has_padding {
            Some(((mask.clone() - 1.0)? * f64::from(f32::MAX))?.reshape((batch, 1, 1, len))?)
        } else {
            None
        };
        for layer in &self.layers {
            // (batch, len, 3, heads, head) -> (3, batch, heads, len, head).
            let qkv = layer
                .qkv
                .forward(&x)?
                .reshape((batch, len, 3, heads, head))?
                .permute((2, 0, 3, 1, 4))?
                .contiguous()?;
            let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
            let mut scores = q.matmul(&k.t()?)?;
            if let Some(bias) = &bias {
                scores = scores.broadcast_add(bias)?;
            }
            let scores = scores
                .broadcast_sub(&scores.max_keepdim(D::Minus1)?)?
                .exp()?;
            let weights = scores.broadcast_div(&scores.sum_keepdim(D::Minus1)?)?;
            let context = weights
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((batch * len, h))?;
            let attended = layer
                .attention_norm
                .forward(&(layer.attention_out.forward(&context)? + &x)?)?;
            let inner = layer.intermediate.forward(&attended)?.gelu_erf()?;
            x = layer
                .output_norm
                .forward(&(layer.output.forward(&inner)? + &attended)?)?;
        }

        // Mean over the tokens (not the padding), then unit length.
        let x = x.reshape((batch, len, h))?;
        let mask = mask.unsqueeze(2)?;
        let summed = x.broadcast_mul(&mask)?.sum(1)?;
        let mean = summed.broadcast_div(&mask.sum(1)?)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
        mean.broadcast_div(&norm)?.to_vec2::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            hidden: 8,
            layers: 2,
            heads: 2,
            intermediate: 16,
            max_positions: 16,
            vocab: 12,
            eps: 1e-12,
        }
    }

    /// A tensor of fixed pseudo-random values in [-0.4, 0.4] (xorshift32).
    fn tensor(seed: &mut u32, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 17;
                *seed ^= *seed << 5;
                (*seed as f32 / u32::MAX as f32 - 0.5) * 0.8
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// A tiny BERT with fixed pseudo-random weights, as safetensors bytes.
    fn tiny_weights(c: &Config, skip: Option<&str>) -> Vec<u8> {
        let mut seed = 0x2545_f491_u32;
        let seed = &mut seed;
        let mut tensor = |shape: &[usize]| tensor(seed, shape);
        let (h, i) = (c.hidden, c.intermediate);
        let mut map = HashMap::new();
        map.insert(
            "embeddings.word_embeddings.weight".to_string(),
            tensor(&[c.vocab, h]),
        );
        map.insert(
            "embeddings.position_embeddings.weight".to_string(),
            tensor(&[c.max_positions, h]),
        );
        map.insert(
            "embeddings.token_type_embeddings.weight".to_string(),
            tensor(&[2, h]),
        );
        let norm =
            |map: &mut HashMap<String, Tensor>, p: &str, t: &mut dyn FnMut(&[usize]) -> Tensor| {
                map.insert(format!("{p}.weight"), (t(&[h]) + 1.0).unwrap());
                map.insert(format!("{p}.bias"), t(&[h]));
            };
        norm(&mut map, "embeddings.LayerNorm", &mut tensor);
        for l in 0..c.layers {
            let p = format!("encoder.layer.{l}");
            for (name, out, inp) in [
                ("attention.self.query", h, h),
                ("attention.self.key", h, h),
                ("attention.self.value", h, h),
                ("attention.output.dense", h, h),
                ("intermediate.dense", i, h),
                ("output.dense", h, i),
            ] {
                map.insert(format!("{p}.{name}.weight"), tensor(&[out, inp]));
                map.insert(format!("{p}.{name}.bias"), tensor(&[out]));
            }
            norm(
                &mut map,
                &format!("{p}.attention.output.LayerNorm"),
                &mut tensor,
            );
            norm(&mut map, &format!("{p}.output.LayerNorm"), &mut tensor);
        }
        if let Some(name) = skip {
            map.remove(name);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.safetensors");
        candle_core::safetensors::save(&map, &path).unwrap();
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn padding_is_masked_out_and_vectors_have_unit_norm() {
        let bert = Bert::from_safetensors(config(), &tiny_weights(&config(), None)).unwrap();
        let alone = bert.embed(&[1, 5, 7, 2], &[1.0; 4], 1, 4).unwrap();
        let batch = bert
            .embed(
                &[1, 5, 7, 2, 0, 0, 1, 3, 4, 9, 8, 2],
                &[1., 1., 1., 1., 0., 0., 1., 1., 1., 1., 1., 1.],
                2,
                6,
            )
            .unwrap();
        assert_eq!(batch.len(), 2);
        for (a, b) in alone[0].iter().zip(&batch[0]) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        for v in &batch {
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5);
        }
        assert_ne!(batch[0], batch[1]);
    }

    #[test]
    fn missing_or_misshapen_tensors_are_refused() {
        let c = config();
        let err = Bert::from_safetensors(
            c.clone(),
            &tiny_weights(&c, Some("encoder.layer.1.output.dense.bias")),
        )
        .unwrap_err();
        assert!(err.contains("encoder.layer.1.output.dense.bias"), "{err}");
        let wider = Config {
            hidden: 16,
            ..c.clone()
        };
        let err = Bert::from_safetensors(wider, &tiny_weights(&c, None)).unwrap_err();
        assert!(err.contains("shape"), "{err}");
        assert!(Bert::from_safetensors(c, b"garbage").is_err());
    }

    #[test]
    fn config_is_checked() {
        let good = br#"{"model_type": "bert", "hidden_act": "gelu", "hidden_size": 384,
            "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536,
            "max_position_embeddings": 512, "vocab_size": 30522, "layer_norm_eps": 1e-12,
            "position_embedding_type": "absolute"}"#;
        let c = Config::from_json(good).unwrap();
        assert_eq!((c.hidden, c.layers, c.heads, c.eps), (384, 6, 12, 1e-12));
        let text = std::str::from_utf8(good).unwrap();
        for (from, to) in [
            ("\"gelu\"", "\"relu\""),
            ("\"absolute\"", "\"relative_key\""),
            ("\"num_attention_heads\": 12", "\"num_attention_heads\": 7"),
            ("\"layer_norm_eps\": 1e-12", "\"layer_norm_eps\": -1"),
            ("\"hidden_size\": 384", "\"hidden_size\": 0"),
        ] {
            let bad = text.replace(from, to);
            assert!(Config::from_json(bad.as_bytes()).is_err(), "{to}");
        }
    }
}
