"""Write the book's CJK font: a subset of Noto Sans SC with exactly the characters the book uses.

    python scripts/subset_cjk_font.py            # (re)write the subset
    python scripts/subset_cjk_font.py --check    # exit 1 if a used character is missing

Readers without a CJK system font saw boxes for the Chinese terms (glossary, chapters 3, 6,
10...). Noto Sans CJK is under the SIL Open Font License 1.1, which allows subsetting and
redistribution; the subset keeps the name "Noto Sans SC" out of its family name (a Reserved
Font Name) and is called "GPT Book CJK". Two files are written, from the same glyphs:

* ``book/_vendor/fonts/gpt-book-cjk.woff2``: the site's @font-face (book/_vendor/book.css);
* ``gptlib/fonts/gpt-book-cjk.otf``: for matplotlib, which cannot read woff2
  (``gptlib.viz`` registers it as a fallback after DejaVu Sans).

The characters are those in CJK ranges found in chapters/*.md, book/*.md, book/*.yml and
gptlib/**/*.py (strings that reach figures). tests/test_fonts.py fails, naming this command,
when the book uses a character the subset lacks. The source font is Debian's
``fonts-noto-cjk`` (``apt-get install fonts-noto-cjk``), or any NotoSansCJK-Regular.ttc/.otf
given with --source. Needs fontTools and brotli (pip install -e '.[book]').
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WOFF2 = ROOT / "book" / "_vendor" / "fonts" / "gpt-book-cjk.woff2"
OTF = ROOT / "gptlib" / "fonts" / "gpt-book-cjk.otf"
FAMILY = "GPT Book CJK"
SOURCES = ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",)
SC_INDEX = 2  # in NotoSansCJK-Regular.ttc: JP, KR, SC, TC, HK
COMMAND = "python scripts/subset_cjk_font.py"
# CJK punctuation, kana, unified ideographs (and extension A), compatibility forms, full width
CJK = re.compile(
    r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef]"
)


def used_characters(root: Path = ROOT) -> set[str]:
    """Every CJK character in the book's sources."""
    files = [
        *root.glob("chapters/*.md"),
        *root.glob("book/*.md"),
        *root.glob("book/*.yml"),
        *root.glob("gptlib/**/*.py"),
    ]
    chars: set[str] = set()
    for path in files:
        chars |= set(CJK.findall(path.read_text(encoding="utf-8")))
    return chars


def font_characters(path: Path) -> set[str]:
    from fontTools.ttLib import TTFont

    return {chr(c) for c in TTFont(path).getBestCmap()}


def missing(root: Path = ROOT) -> dict[str, set[str]]:
    """Characters the book uses that each shipped subset lacks (empty sets: all good)."""
    need = used_characters(root)
    return {
        str(p.relative_to(root)): need - (font_characters(p) if p.exists() else set())
        for p in (root / WOFF2.relative_to(ROOT), root / OTF.relative_to(ROOT))
    }


def _rename(font) -> None:
    """OFL: a modified version must not use the Reserved Font Name ("Noto")."""
    names = {
        1: FAMILY,
        3: f"{FAMILY} subset",
        4: FAMILY,
        6: FAMILY.replace(" ", ""),
        16: FAMILY,
        17: "Regular",
    }
    for record in font["name"].names:
        if record.nameID in names:
            record.string = names[record.nameID]
    if "CFF " in font:
        cff = font["CFF "].cff
        cff.fontNames = [FAMILY.replace(" ", "")]
        top = cff.topDictIndex[0]
        for key in ("FullName", "FamilyName"):
            if hasattr(top, key):
                setattr(top, key, FAMILY)


def write_subset(source: str, chars: set[str]) -> None:
    from fontTools import subset
    from fontTools.ttLib import TTFont

    for flavor, out in ((None, OTF), ("woff2", WOFF2)):
        font = TTFont(source, fontNumber=SC_INDEX) if source.endswith(".ttc") else TTFont(source)
        options = subset.Options()
        options.flavor = flavor
        options.layout_features = []  # horizontal text only: no vertical or localised forms
        options.name_IDs = [0, 1, 2, 3, 4, 5, 6, 13, 14, 16, 17]  # keep the licence (13, 14)
        options.hinting = False
        options.desubroutinize = True  # smaller after woff2's brotli
        subsetter = subset.Subsetter(options)
        subsetter.populate(text="".join(sorted(chars)))
        subsetter.subset(font)
        _rename(font)
        out.parent.mkdir(parents=True, exist_ok=True)
        font.flavor = flavor
        font.save(out)
        print(
            f"wrote {out.relative_to(ROOT)}: {len(chars)} characters, {out.stat().st_size / 1024:.0f} KB"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report missing characters")
    parser.add_argument("--source", help="NotoSansCJK-Regular.ttc (or an SC .otf)")
    args = parser.parse_args(argv)
    if args.check:
        lacking = {k: v for k, v in missing().items() if v}
        for path, chars in lacking.items():
            print(f"{path} lacks {''.join(sorted(chars))}: run {COMMAND}")
        return 1 if lacking else 0
    source = args.source or next((s for s in SOURCES if Path(s).exists()), None)
    if source is None:
        sys.exit(
            "no Noto Sans CJK source font: apt-get install fonts-noto-cjk, or pass --source PATH"
        )
    write_subset(source, used_characters())
    return 0


if __name__ == "__main__":
    sys.exit(main())
