"""Builds static/emoji/{atlas.png,atlas.json,LICENSES.md} from extracted emoji-datasource packages.

Usage (scripts/make-emoji-atlas runs it): make_atlas.py OUT_DIR STYLE=PACKAGE_DIR ...
where PACKAGE_DIR is an unpacked npm tarball's `package/` folder.

Each glyph is copied pixel for pixel: the packages' 64 px PNGs are already the cell size, so
nothing is resampled and the alpha is kept exactly. A source that is not 64x64 would be resized
with Lanczos, and the script says so on stderr and in atlas.json (`source_size`).

A third style was planned, OpenMoji (CC BY-SA 4.0), but its npm package (every version,
12.3.0 to 17.0.0) ships only SVGs, which would need an SVG rasteriser. The other npm candidates
were no better: @lobehub/fluent-emoji-3d is a third-party repack of Microsoft's Fluent Emoji as
lossy WebP (no PNG, no licence file), emoji-datasource-emojione is under JoyPixels' own licence,
and emoji-datasource-facebook's images have no clear licence. So the atlas has two styles.
"""

import hashlib
import io
import json
import sys
from pathlib import Path

from PIL import Image

CELL = 64
COLUMNS = 8

# Per style: the package it must come from (checked against the unpacked package.json), and the
# facts LICENSES.md and atlas.json need. The package code and emoji.json are MIT (Cal Henderson);
# only the images are shipped, and those are under the art's licence.
STYLES = {
    "google": {
        "package": "emoji-datasource-google",
        "art": "Noto Emoji",
        "license": "Apache-2.0",
        "license_url": "https://www.apache.org/licenses/LICENSE-2.0",
        "project_url": "https://github.com/googlefonts/noto-emoji",
        "attribution": "Noto Emoji by Google. Licensed under the Apache License, Version 2.0: "
        "https://www.apache.org/licenses/LICENSE-2.0",
    },
    "twitter": {
        "package": "emoji-datasource-twitter",
        "art": "Twemoji",
        "license": "CC-BY-4.0",
        "license_url": "https://creativecommons.org/licenses/by/4.0/",
        "project_url": "https://github.com/jdecked/twemoji",
        "attribution": "Copyright 2020 Twitter, Inc and other contributors. Graphics licensed under "
        "CC-BY 4.0: https://creativecommons.org/licenses/by/4.0/",
    },
}
STYLE_ORDER = ["google", "twitter"]

# segclip's class names (Pascal VOC's, without background), in this order, and the code points
# of the emoji that picture each, in this order.
CLASSES = [
    ("aeroplane", ["2708", "1F6E9"]),
    ("bicycle", ["1F6B2"]),
    ("bird", ["1F426", "1F424", "1F99C"]),
    ("boat", ["26F5", "1F6A4", "26F4"]),
    ("bottle", ["1F37E", "1F37C"]),
    ("bus", ["1F68C", "1F68D"]),
    ("car", ["1F697", "1F699", "1F695"]),
    ("cat", ["1F408", "1F431"]),
    ("chair", ["1FA91"]),
    ("cow", ["1F404", "1F42E"]),
    ("dog", ["1F415", "1F436", "1F429"]),
    ("horse", ["1F40E", "1F434"]),
    ("motorbike", ["1F3CD", "1F6F5"]),
    ("person", ["1F9CD", "1F6B6"]),
    ("potted plant", ["1FAB4"]),
    ("sheep", ["1F411"]),
    ("sofa", ["1F6CB"]),
    ("train", ["1F682", "1F684", "1F686"]),
    ("tv monitor", ["1F4FA", "1F5A5"]),
]

# (style, code point) -> why it may be missing from that style. A missing code point not listed
# here is an error. None is needed with the pinned packages.
EXCEPTIONS = {}


def fail(msg):
    sys.exit(f"make_atlas.py: {msg}")


def find_image(pkg_dir, style, spec, emoji, cls, cp):
    """The one emoji.json entry whose `unified` or `non_qualified` is cp (e.g. 2708 is unified
    2708-FE0F), and its image path; None if the style lacks it (and that is an exception)."""
    hits = [
        e
        for e in emoji
        if (e.get("unified") or "").upper() == cp or (e.get("non_qualified") or "").upper() == cp
    ]
    if len(hits) > 1:
        fail(f"{spec}: class {cls!r}: code point {cp} matches {len(hits)} emoji.json entries")
    # has_img_<style> is false where the style has no art of its own; such an image, if present,
    # would be another vendor's fallback under another licence.
    if not hits or not hits[0].get(f"has_img_{style}"):
        why = EXCEPTIONS.get((style, cp))
        if why is None:
            reason = "not in emoji.json" if not hits else f"has_img_{style} is false"
            fail(f"{spec}: class {cls!r}: code point {cp} has no image ({reason})")
        print(f"make_atlas.py: {spec}: class {cls!r}: skipping {cp}: {why}", file=sys.stderr)
        return None
    name = hits[0]["image"]
    path = pkg_dir / "img" / style / "64" / name
    if not path.is_file():
        fail(f"{spec}: class {cls!r}: code point {cp}: emoji.json names {name}, not in the package")
    return path


def load_glyph(path, spec):
    with Image.open(path) as im:
        im.load()
        # convert("RGBA") maps palette or grey images (with tRNS) to the same RGBA values, so
        # the alpha is unchanged; an RGBA source is copied as is.
        rgba = im if im.mode == "RGBA" else im.convert("RGBA")
    if rgba.size != (CELL, CELL):
        print(
            f"make_atlas.py: {spec}: {path.name} is {rgba.size[0]}x{rgba.size[1]}, "
            f"resized to {CELL}x{CELL} with Lanczos",
            file=sys.stderr,
        )
        return rgba.resize((CELL, CELL), Image.Resampling.LANCZOS), list(rgba.size)
    return rgba, None


def main(argv):
    if len(argv) < 2:
        fail("usage: make_atlas.py OUT_DIR STYLE=PACKAGE_DIR ...")
    out = Path(argv[0])
    dirs = {}
    for arg in argv[1:]:
        style, _, d = arg.partition("=")
        if style not in STYLES:
            fail(f"unknown style {style!r} (known: {', '.join(STYLES)})")
        dirs[style] = Path(d)
    if sorted(dirs) != sorted(STYLE_ORDER):
        fail(f"need exactly the styles {STYLE_ORDER}, got {sorted(dirs)}")

    styles, glyphs, images = [], [], []
    for style in STYLE_ORDER:
        meta, pkg_dir = STYLES[style], dirs[style]
        pkg = json.loads((pkg_dir / "package.json").read_text(encoding="utf-8"))
        if pkg["name"] != meta["package"]:
            fail(f"style {style}: expected package {meta['package']}, found {pkg['name']}")
        spec = f"{pkg['name']}@{pkg['version']}"
        emoji = json.loads((pkg_dir / "emoji.json").read_text(encoding="utf-8"))
        styles.append(
            {
                "name": style,
                "package": spec,
                "art": meta["art"],
                "license": meta["license"],
                "path": f"img/{style}/64/",
            }
        )
        for cls, cps in CLASSES:
            found = 0
            for cp in cps:
                path = find_image(pkg_dir, style, spec, emoji, cls, cp)
                if path is None:
                    continue
                img, source_size = load_glyph(path, spec)
                if img.getchannel("A").getbbox() is None:
                    fail(f"{spec}: class {cls!r}: code point {cp}: {path.name} is fully transparent")
                glyph = {
                    "style": style,
                    "class": cls,
                    "codepoint": cp,
                    "file": path.name,
                    "cell": len(glyphs),
                }
                if source_size is not None:
                    glyph["source_size"] = source_size
                glyphs.append(glyph)
                images.append(img)
                found += 1
            if found == 0:
                fail(f"{spec}: class {cls!r} has no glyph (every class needs one in every style)")

    rows = (len(images) + COLUMNS - 1) // COLUMNS
    # Unused cells at the end stay fully transparent.
    atlas = Image.new("RGBA", (COLUMNS * CELL, rows * CELL), (0, 0, 0, 0))
    for k, img in enumerate(images):
        # paste without a mask copies all four channels, so each cell's alpha is the source's.
        atlas.paste(img, ((k % COLUMNS) * CELL, (k // COLUMNS) * CELL))
    buf = io.BytesIO()
    # No pnginfo and a fresh image, so no text or time chunks: the bytes depend only on the
    # pixels and the pinned Pillow (and its zlib).
    atlas.save(buf, format="PNG", optimize=True)
    png = buf.getvalue()
    (out / "atlas.png").write_bytes(png)

    head = {
        "format": "segclip-emoji-atlas",
        "version": 1,
        "cell": CELL,
        "columns": COLUMNS,
        "png_sha256": hashlib.sha256(png).hexdigest(),
    }

    def line(obj):
        return json.dumps(obj, ensure_ascii=False)

    # Written by hand so that each style and each glyph is one line (diffs stay readable).
    text = "{\n"
    text += "".join(f"  {json.dumps(k)}: {line(v)},\n" for k, v in head.items())
    text += '  "styles": [\n' + ",\n".join(f"    {line(s)}" for s in styles) + "\n  ],\n"
    text += '  "glyphs": [\n' + ",\n".join(f"    {line(g)}" for g in glyphs) + "\n  ]\n}\n"
    assert json.loads(text)["glyphs"] == glyphs
    (out / "atlas.json").write_text(text, encoding="utf-8")

    (out / "LICENSES.md").write_text(licenses_md(styles, glyphs), encoding="utf-8")
    counts = ", ".join(f"{s['name']} {sum(g['style'] == s['name'] for g in glyphs)}" for s in styles)
    print(
        f"make_atlas.py: wrote {out / 'atlas.png'} ({atlas.size[0]}x{atlas.size[1]}, "
        f"{len(png)} bytes, {len(glyphs)} glyphs: {counts})"
    )


def licenses_md(styles, glyphs):
    parts = [
        "# Emoji atlas: licences\n",
        "`atlas.png` holds emoji glyphs from the npm packages below, one 64x64 cell each, copied "
        "pixel for pixel (no glyph is redrawn, recoloured or resampled; they are only arranged "
        "into one sprite sheet). `atlas.json` says which style, class, code point and source "
        "file is in each cell. Each glyph stays under the licence of its art:\n",
    ]
    for s in styles:
        meta = STYLES[s["name"]]
        n = sum(g["style"] == s["name"] for g in glyphs)
        parts.append(
            f"## {s['name']}: {meta['art']}\n\n"
            f"- Package: `{s['package']}` (images under `{s['path']}`), {n} glyphs\n"
            f"- Art: {meta['art']}, {meta['project_url']}\n"
            f"- Licence: {meta['license']} (SPDX), {meta['license_url']}\n"
            f"- Attribution: {meta['attribution']}\n"
        )
    parts.append(
        "The packages' own code and metadata (emoji-datasource, MIT, Copyright (c) 2013 Cal "
        "Henderson) are used only to find the image files and are not shipped.\n\n"
        "## Regenerating\n\n"
        "```\nscripts/make-emoji-atlas\n```\n\n"
        "It fetches the pinned package versions with `npm pack`, checks their sha512, and "
        "rewrites `atlas.png`, `atlas.json` and this file byte for byte the same.\n"
    )
    return "\n".join(parts)


if __name__ == "__main__":
    main(sys.argv[1:])
