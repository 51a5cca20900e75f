"""Reference token ids for tests/embed.rs, from the `tokenizers` library.

Run: python3 tokenize.py <model dir> > tokens.json  (see README.md here).
Truncation and padding of tokenizer.json are switched off: the test checks tokenization
alone, on texts shorter than any limit (and one word longer than 100 characters). After the
hand-picked texts come 300 random ones (seeded) drawn from the same kinds of characters.
"""

import json
import random
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


# Character pools for the random texts.
POOLS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    " \t\n\r\u00a0\u2003\u3000\u200b\u0085",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~¡¿«»“”‘’—–…·•€£¥©®™°±×÷§¶",
    "éèêëàâäôöûüçñÉÈÀÇÑåÅøØæÆßœŒłŁ",
    "北京中国人大学日本語東京漢字한국어ひらがなカタカナ",
    "Ελληνικάрусскийעבריתالعربيةहिन्दीไทย",
    "\U0001f600\U0001f980\U0001f44d\U0001f3fd\u2764\ufe0f\u200d\U0001f1eb\U0001f1f7\u2728",
    "\u0301\u0308\u0327\u00ad\ufeff\x07\x00\ufffd",
    "\ufb01\ufb02\u2460\u00bd\u212b\u339e\uff21\uff22\uff23\uff11\uff12\uff13",
]
WORDS = ["the", "[CLS]", "[SEP]", "[MASK]", "running", "unbelievable", "[unk]", "co-operate", "e-mail"]


def random_texts(n):
    rng = random.Random(7)
    out = []
    for _ in range(n):
        s = "".join(rng.choice(rng.choice(POOLS)) for _ in range(rng.randint(1, 40)))
        if rng.random() < 0.3:
            s = " ".join(rng.choice(WORDS) for _ in range(5)) + s
        out.append(s)
    return out


def main() -> None:
    tok = Tokenizer.from_file(f"{sys.argv[1]}/tokenizer.json")
    tok.no_truncation()
    tok.no_padding()
    cases = [{"text": t, "ids": tok.encode(t).ids} for t in TEXTS + random_texts(300)]
    # One case per line.
    lines = [json.dumps(c, ensure_ascii=False) for c in cases]
    print("[\n" + ",\n".join(lines) + "\n]")


if __name__ == "__main__":
    main()
