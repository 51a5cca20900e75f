"""Reference token ids for tests/embed.rs, from the `tokenizers` library.

Run: python3 tokenize.py <model dir> > tokens.json  (see README.md here).
Truncation and padding of tokenizer.json are switched off: the test checks tokenization
alone, on texts shorter than any limit (and one word longer than 100 characters).
"""

import json
import sys

from tokenizers import Tokenizer

TEXTS = [
    "Héllo, Wörld! Ça va? naïve café résumé Ångström",
    "  The   quick\tbrown\n\nfox \r\n jumps   ",
    "北京是中国的首都。東京もとても大きい都市です",
    "I \u2764\ufe0f Rust \U0001f980 and emoji \U0001f44d\U0001f3fd! \U0001f468\u200d\U0001f469\u200d\U0001f467",
    "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis " + "x" * 101,
    "MiXeD CaSe ACRONYMS like NASA, iPhone and McDonald's",
    "Price: $1,234.56 (approx.) \u2014 50% off; e-mail: a.b@c.com #tag ~tilde^caret|pipe",
    "[CLS] special [SEP] tokens [MASK] in text, [cls] lowercase and [UNK]s",
    "zero\u200bwidth soft\u00adhyphen control\x07bell \ufeffbom tab\there nul\x00byte",
    "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u03a3\u039f\u03a6\u0399\u0391, русский текст, עברית, العربية, हिन्दी",
    "don't won't it's O'Neil's «quoted» \u201ccurly\u201d \u2018single\u2019 \u2026",
    "\ufb01 ligature \u2460 \u00bd \u212b angstrom \uff21\uff22\uff23 fullwidth 123,456",
]


def main() -> None:
    tok = Tokenizer.from_file(f"{sys.argv[1]}/tokenizer.json")
    tok.no_truncation()
    tok.no_padding()
    cases = [{"text": t, "ids": tok.encode(t).ids} for t in TEXTS]
    # One case per line.
    lines = [json.dumps(c, ensure_ascii=False) for c in cases]
    print("[\n" + ",\n".join(lines) + "\n]")


if __name__ == "__main__":
    main()
