//! BERT's WordPiece tokenizer, read from a Hugging Face `tokenizer.json`.
//!
//! It follows the reference `tokenizers` library step by step, with the same Unicode tables
//! where they matter (`unicode_categories`, the crate the reference uses):
//!
//! 1. The added tokens (here `[CLS]`, `[SEP]`, `[PAD]`, `[UNK]`, `[MASK]`, matched exactly
//!    and case-sensitively in the raw text, as the reference does) are split out first and
//!    become their ids. Added tokens matched after normalisation, or with `single_word`,
//!    `lstrip` or `rstrip`, are refused when loading.
//! 2. `BertNormalizer`: drop NUL, U+FFFD and control/format/private-use characters, turn
//!    whitespace into spaces (clean text); put spaces around CJK ideographs; if lowercasing,
//!    decompose (NFD) and drop non-spacing marks (strip accents), then lowercase each
//!    character.
//! 3. `BertPreTokenizer`: split on whitespace, and isolate every punctuation character (ASCII
//!    punctuation and Unicode `P*`).
//! 4. WordPiece: greedy longest match first, continuation pieces prefixed with `##`; a word
//!    longer than 100 characters, or one with an unmatched rest, becomes `[UNK]`.
//! 5. `[CLS] pieces [SEP]`, the pieces cut so the whole fits `max_tokens`.

use std::collections::HashMap;

use unicode_categories::UnicodeCategories;
use unicode_normalization::UnicodeNormalization;

/// A WordPiece tokenizer with BERT's normalisation (uncased models as `bert-base-uncased`).
#[derive(Debug, Clone)]
pub struct Tokenizer {
    vocab: HashMap<String, u32>,
    /// Exactly-matched special tokens, longest first.
    specials: Vec<(String, u32)>,
    unk: u32,
    cls: u32,
    sep: u32,
    pad: u32,
    clean_text: bool,
    chinese_chars: bool,
    strip_accents: bool,
    lowercase: bool,
    prefix: String,
    max_word_chars: usize,
}

fn field<'a>(v: &'a serde_json::Value, path: &[&str]) -> Result<&'a serde_json::Value, String> {
    let mut at = v;
    for key in path {
        at = at
            .get(key)
            .ok_or_else(|| format!("no `{}`", path.join(".")))?;
    }
    Ok(at)
}

fn flag(v: &serde_json::Value, path: &[&str]) -> Result<bool, String> {
    field(v, path)?
        .as_bool()
        .ok_or_else(|| format!("`{}` is not a boolean", path.join(".")))
}

impl Tokenizer {
    /// Reads a `tokenizer.json` with a `WordPiece` model, a `BertNormalizer` and a
    /// `BertPreTokenizer`; refuses anything else with the reason.
    pub fn from_json(json: &[u8]) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
        let kind = |path: &[&str]| -> Result<&str, String> {
            field(&v, path)?
                .as_str()
                .ok_or_else(|| format!("`{}` is not a string", path.join(".")))
        };
        for (path, want) in [
            (&["model", "type"][..], "WordPiece"),
            (&["normalizer", "type"][..], "BertNormalizer"),
            (&["pre_tokenizer", "type"][..], "BertPreTokenizer"),
        ] {
            let found = kind(path)?;
            if found != want {
                return Err(format!(
                    "`{}` is {found:?}; only {want:?} is supported",
                    path.join(".")
                ));
            }
        }
        let entries = field(&v, &["model", "vocab"])?
            .as_object()
            .ok_or("`model.vocab` is not an object")?;
        let mut vocab = HashMap::with_capacity(entries.len());
        for (piece, id) in entries {
            let id = id
                .as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| format!("vocabulary id of {piece:?} is not a u32"))?;
            vocab.insert(piece.clone(), id);
        }
        let id_of = |token: &str| {
            vocab
                .get(token)
                .copied()
                .ok_or_else(|| format!("the vocabulary has no {token}"))
        };
        let unk_token = kind(&["model", "unk_token"])?;
        let unk = id_of(unk_token)?;
        let (cls, sep, pad) = (id_of("[CLS]")?, id_of("[SEP]")?, id_of("[PAD]")?);
        let mut specials = Vec::new();
        if let Some(added) = v.get("added_tokens").and_then(|a| a.as_array()) {
            for token in added {
                let content = field(token, &["content"])?
                    .as_str()
                    .ok_or("`added_tokens[].content` is not a string")?;
                let id = field(token, &["id"])?
                    .as_u64()
                    .and_then(|id| u32::try_from(id).ok())
                    .ok_or("`added_tokens[].id` is not a u32")?;
                let set = |key: &str| token.get(key).and_then(|n| n.as_bool());
                for key in ["single_word", "lstrip", "rstrip"] {
                    if set(key) == Some(true) {
                        return Err(format!(
                            "added token {content:?} sets `{key}`, which is not supported"
                        ));
                    }
                }
                if set("normalized") == Some(true) {
                    return Err(format!(
                        "added token {content:?} is matched after normalisation, which is not \
                         supported"
                    ));
                }
                if !content.is_empty() {
                    specials.push((content.to_owned(), id));
                }
            }
        }
        specials.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        let lowercase = flag(&v, &["normalizer", "lowercase"])?;
        let strip_accents = match field(&v, &["normalizer", "strip_accents"])? {
            serde_json::Value::Null => lowercase,
            other => other
                .as_bool()
                .ok_or("`normalizer.strip_accents` is neither null nor a boolean")?,
        };
        let max_word_chars = field(&v, &["model", "max_input_chars_per_word"])?
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or("`model.max_input_chars_per_word` is not a count")?;
        Ok(Self {
            unk,
            cls,
            sep,
            pad,
            specials,
            clean_text: flag(&v, &["normalizer", "clean_text"])?,
            chinese_chars: flag(&v, &["normalizer", "handle_chinese_chars"])?,
            strip_accents,
            lowercase,
            prefix: kind(&["model", "continuing_subword_prefix"])?.to_owned(),
            max_word_chars,
            vocab,
        })
    }

    /// The id of `[PAD]`.
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// The number of entries in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// `[CLS]`, the text's word pieces and `[SEP]`, cut to at most `max_tokens` ids in all
    /// (the pieces past `max_tokens - 2` are dropped, as the reference's truncation does).
    pub fn encode(&self, text: &str, max_tokens: usize) -> Vec<u32> {
        let mut ids = vec![self.cls];
        let mut rest = text;
        while !rest.is_empty() {
            match self.next_special(rest) {
                Some((at, len, id)) => {
                    self.encode_plain(&rest[..at], &mut ids);
                    ids.push(id);
                    rest = &rest[at + len..];
                }
                None => {
                    self.encode_plain(rest, &mut ids);
                    rest = "";
                }
            }
        }
        ids.truncate(max_tokens.saturating_sub(1).max(1));
        ids.push(self.sep);
        ids
    }

    /// The leftmost special token in `text` (the longest at that position): byte offset,
    /// length, id.
    fn next_special(&self, text: &str) -> Option<(usize, usize, u32)> {
        let mut best: Option<(usize, usize, u32)> = None;
        // Longest first, so a later match at the same offset never replaces an earlier one.
        for (special, id) in &self.specials {
            if let Some(at) = text.find(special.as_str())
                && best.is_none_or(|(b, _, _)| at < b)
            {
                best = Some((at, special.len(), *id));
            }
        }
        best
    }

    fn encode_plain(&self, text: &str, ids: &mut Vec<u32>) {
        let normalized = self.normalize(text);
        let mut piece = String::new();
        for word in normalized.split(char::is_whitespace) {
            let mut start = 0;
            for (at, c) in word.char_indices() {
                if is_bert_punctuation(c) {
                    self.word_pieces(&word[start..at], ids, &mut piece);
                    self.word_pieces(&word[at..at + c.len_utf8()], ids, &mut piece);
                    start = at + c.len_utf8();
                }
            }
            self.word_pieces(&word[start..], ids, &mut piece);
        }
    }

    /// BERT's normalisation of a text without special tokens.
    fn normalize(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            if self.clean_text {
                if c == '\0' || c == '\u{fffd}' || is_control(c) {
                    continue;
                }
                if is_whitespace(c) {
                    out.push(' ');
                    continue;
                }
            }
            if self.chinese_chars && is_chinese_char(c) {
                out.push(' ');
                out.push(c);
                out.push(' ');
            } else {
                out.push(c);
            }
        }
        if self.strip_accents {
            out = out.nfd().filter(|c| !c.is_mark_nonspacing()).collect();
        }
        if self.lowercase {
            // Character by character, as the reference does (no final-sigma rule).
            out = out.chars().flat_map(char::to_lowercase).collect();
        }
        out
    }

    /// Greedy longest-match-first WordPiece of one word; `[UNK]` for the whole word if it is
    /// too long or some rest of it matches nothing.
    fn word_pieces(&self, word: &str, ids: &mut Vec<u32>, piece: &mut String) {
        if word.is_empty() {
            return;
        }
        if word.chars().count() > self.max_word_chars {
            ids.push(self.unk);
            return;
        }
        let first = ids.len();
        let mut start = 0;
        while start < word.len() {
            let mut end = word.len();
            let mut found = None;
            while start < end {
                piece.clear();
                if start > 0 {
                    piece.push_str(&self.prefix);
                }
                piece.push_str(&word[start..end]);
                if let Some(&id) = self.vocab.get(piece.as_str()) {
                    found = Some(id);
                    break;
                }
                // Step back one character.
                end = word[..end]
                    .char_indices()
                    .next_back()
                    .map_or(start, |(at, _)| at);
            }
            match found {
                Some(id) => {
                    ids.push(id);
                    start = end;
                }
                None => {
                    ids.truncate(first);
                    ids.push(self.unk);
                    return;
                }
            }
        }
    }
}

/// Whitespace as BERT counts it (tab, newline and carriage return are, though controls).
fn is_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

/// Control as BERT counts it: Unicode `Cc`, `Cf` and `Co`, except tab, newline, return.
fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && c.is_other()
}

/// ASCII punctuation (which includes symbols such as `$`, `+`, `^`) and Unicode `P*`.
fn is_bert_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || c.is_punctuation()
}

/// The CJK Unified Ideographs blocks BERT splits into single characters.
fn is_chinese_char(c: char) -> bool {
    matches!(
        u32::from(c),
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny tokenizer.json in the reference's format.
    fn tiny_json() -> serde_json::Value {
        let vocab = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "hello", "!",
            "cafe", "北", "京", ",", "a", "##b",
        ];
        let vocab: serde_json::Map<String, serde_json::Value> = vocab
            .iter()
            .enumerate()
            .map(|(i, s)| (s.to_string(), serde_json::json!(i)))
            .collect();
        let json = serde_json::json!({
            "added_tokens": [
                {"id": 2, "content": "[CLS]", "normalized": false},
                {"id": 4, "content": "[MASK]", "normalized": false},
            ],
            "normalizer": {"type": "BertNormalizer", "clean_text": true,
                "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "model": {"type": "WordPiece", "unk_token": "[UNK]",
                "continuing_subword_prefix": "##", "max_input_chars_per_word": 9,
                "vocab": vocab},
        });
        json
    }

    fn tiny() -> Tokenizer {
        Tokenizer::from_json(tiny_json().to_string().as_bytes()).unwrap()
    }

    #[test]
    fn word_pieces_punctuation_accents_cjk_specials() {
        let t = tiny();
        assert_eq!(t.encode("unaffable", 64), [2, 5, 6, 7, 3]);
        assert_eq!(
            t.encode("  HELLO!\t\u{0}Café,北京 ", 64),
            [2, 8, 9, 10, 13, 11, 12, 3]
        );
        // Too long for max_input_chars_per_word (9), unmatched rest, special in the text.
        assert_eq!(t.encode("abbbbbbbbb ab ax", 64), [2, 1, 14, 15, 1, 3]);
        assert_eq!(t.encode("a[MASK]a [mask]", 64)[..4], [2, 14, 4, 14]);
        assert_eq!(t.encode("", 64), [2, 3]);
        // Truncation keeps [CLS] and [SEP] inside the limit.
        assert_eq!(t.encode("a a a a a", 4), [2, 14, 14, 3]);
    }

    #[test]
    fn refuses_other_tokenizers() {
        let err = Tokenizer::from_json(br#"{"model": {"type": "BPE"}}"#).unwrap_err();
        assert!(err.contains("BPE"), "{err}");
        assert!(Tokenizer::from_json(b"not json").is_err());
        for flag in ["lstrip", "rstrip", "single_word", "normalized"] {
            let mut json = tiny_json();
            json["added_tokens"][1][flag] = serde_json::json!(true);
            let err = Tokenizer::from_json(json.to_string().as_bytes()).unwrap_err();
            assert!(err.contains("[MASK]"), "{err}");
        }
        let mut json = tiny_json();
        json["normalizer"]["lowercase"] = serde_json::json!("yes");
        assert!(Tokenizer::from_json(json.to_string().as_bytes()).is_err());
    }
}
