"""Reference sentence embeddings for tests/embed.rs: all-MiniLM-L6-v2 in NumPy (float64).

An independent implementation of the same computation as `mesh_memory::MiniLm`: token ids
from the `tokenizers` library (truncated to 256 with [CLS] and [SEP]), weights read with
`safetensors`, the BERT forward pass (embeddings + LayerNorm; 6 layers of 12-head
self-attention, residual + LayerNorm, erf-GELU feed-forward, residual + LayerNorm), mean
pooling and L2 normalisation; each text alone, without padding.

Run: python3 forward.py <model dir> > embeddings.json  (see README.md here).
"""

import json
import math
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

TEXTS = [
    "A man is playing a guitar on the stage.",
    "Décembre à Zürich: the café serves crêpes and naïve jokes.",
    "Memory lets an agent recall what it learnt, ranked by cosine similarity.",
    # Over 256 tokens: the model reads only the first 254 word pieces.
    " ".join(["The decentralized mesh keeps every agent's memory in sync."] * 30),
]

erf = np.vectorize(math.erf)


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def embed(ids, p, cfg):
    eps = cfg["layer_norm_eps"]
    heads = cfg["num_attention_heads"]
    n = len(ids)
    x = p["embeddings.word_embeddings.weight"][ids]
    x = x + p["embeddings.position_embeddings.weight"][:n]
    x = x + p["embeddings.token_type_embeddings.weight"][0]
    x = layer_norm(x, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], eps)
    d = x.shape[1] // heads
    for i in range(cfg["num_hidden_layers"]):
        pre = f"encoder.layer.{i}."

        def lin(name, v):
            return v @ p[pre + name + ".weight"].T + p[pre + name + ".bias"]

        q = lin("attention.self.query", x).reshape(n, heads, d).transpose(1, 0, 2)
        k = lin("attention.self.key", x).reshape(n, heads, d).transpose(1, 0, 2)
        v = lin("attention.self.value", x).reshape(n, heads, d).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(n, heads * d)
        a = layer_norm(
            lin("attention.output.dense", ctx) + x,
            p[pre + "attention.output.LayerNorm.weight"],
            p[pre + "attention.output.LayerNorm.bias"],
            eps,
        )
        h = lin("intermediate.dense", a)
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
        x = layer_norm(
            lin("output.dense", h) + a,
            p[pre + "output.LayerNorm.weight"],
            p[pre + "output.LayerNorm.bias"],
            eps,
        )
    mean = x.mean(0)
    return mean / np.linalg.norm(mean)


def main() -> None:
    model = sys.argv[1]
    cfg = json.load(open(f"{model}/config.json"))
    p = {k: v.astype(np.float64) for k, v in load_file(f"{model}/model.safetensors").items()}
    tok = Tokenizer.from_file(f"{model}/tokenizer.json")
    tok.no_padding()
    tok.enable_truncation(max_length=256)
    out = []
    for text in TEXTS:
        ids = tok.encode(text).ids
        out.append({"text": text, "tokens": len(ids), "vector": [round(float(x), 7) for x in embed(ids, p, cfg)]})
    # One text per line.
    print("[\n" + ",\n".join(json.dumps(e, ensure_ascii=False) for e in out) + "\n]")


if __name__ == "__main__":
    main()
