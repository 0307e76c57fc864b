"""Builds an emoji atlas {atlas.png,atlas.json,LICENSES.md} from unpacked npm emoji packages.

Usage (scripts/make-emoji-atlas runs it):
  make_atlas.py OUT_DIR STYLE=PACKAGE_DIR ...   build the atlas of exactly the styles of one set
                                                (google,twitter: static/emoji; fluent: held out)
  make_atlas.py --members STYLE < LISTING       print the tarball members STYLE's atlas needs,
                                                given the tarball's `tar -t` listing
where PACKAGE_DIR is an unpacked npm tarball's `package/` folder.

The bundled atlas's glyphs are copied pixel for pixel: the emoji-datasource packages' 64 px PNGs
are already the cell size, so nothing is resampled and the alpha is kept exactly. A source that
is not 64x64 (the fluent WebPs are 256x256, the openmoji SVGs are rendered at 256x256) is scaled
to fit the cell keeping its aspect, with Lanczos on premultiplied alpha (Pillow's resize does that
for RGBA, so transparent texels lend no colour to the edge), centred; atlas.json records it
(`source_size`).

The bundled atlas has three styles. OpenMoji (CC BY-SA 4.0) ships only SVGs on npm (every
version, 12.3.0 to 17.0.0); they are rendered with resvg (the pinned `resvg-py` wheel, system
fonts off, so the pixels depend only on the pinned versions) at 256x256 and scaled to the cell like
the fluent WebPs. Its flat, black-outlined drawings are far from Noto's and Twemoji's shaded ones,
which is the point: a third training art, so the model learns the class rather than two drawings
of it (the emoji-world issue's hidden check scores art the model never saw). The other npm
candidates were no better for the bundled atlas: @lobehub/fluent-emoji-3d is a third-party repack
of Microsoft's Fluent Emoji 3D (MIT) as lossy 256 px WebP with no licence file of its own (its
package.json says MIT), emoji-datasource-emojione is under JoyPixels' own licence, and
emoji-datasource-facebook's images have no clear licence. So Fluent Emoji 3D is the held-out
style: an atlas of its own, made on demand into an ignored folder (never committed) to measure
how the model carries over to art it never saw.
"""

import hashlib
import io
import json
import sys
from pathlib import Path

from PIL import Image, features

try:
    import resvg_py
except ImportError:  # only the openmoji style needs it; main() says so when it is missing
    resvg_py = None

CELL = 64
COLUMNS = 8

# Per style: the package it must come from (checked against the unpacked package.json), how the
# package lays out its images, and the facts LICENSES.md and atlas.json need. `datasource`: the
# emoji-datasource layout, emoji.json naming img/<style>/64/<file>.png (the package code and
# emoji.json are MIT, Cal Henderson; only the images are shipped, and those are under the art's
# licence). `assets`: one assets/<code points, lower case, -joined>.webp per emoji. `svg`: one
# color/svg/<code points, upper case, -joined>.svg per emoji, rendered (see SVG_RENDER).
STYLES = {
    "google": {
        "package": "emoji-datasource-google",
        "layout": "datasource",
        "art": "Noto Emoji",
        "license": "Apache-2.0",
        "license_url": "https://www.apache.org/licenses/LICENSE-2.0",
        "project_url": "https://github.com/googlefonts/noto-emoji",
        "attribution": "Noto Emoji by Google. Licensed under the Apache License, Version 2.0: "
        "https://www.apache.org/licenses/LICENSE-2.0",
    },
    "twitter": {
        "package": "emoji-datasource-twitter",
        "layout": "datasource",
        "art": "Twemoji",
        "license": "CC-BY-4.0",
        "license_url": "https://creativecommons.org/licenses/by/4.0/",
        "project_url": "https://github.com/jdecked/twemoji",
        "attribution": "Copyright 2020 Twitter, Inc and other contributors. Graphics licensed under "
        "CC-BY 4.0: https://creativecommons.org/licenses/by/4.0/",
    },
    "openmoji": {
        "package": "openmoji",
        "layout": "svg",
        "art": "OpenMoji",
        "license": "CC-BY-SA-4.0",
        "license_url": "https://creativecommons.org/licenses/by-sa/4.0/",
        "project_url": "https://openmoji.org/",
        "attribution": "All emojis designed by OpenMoji (https://openmoji.org/), the open-source "
        "emoji and icon project. License: CC BY-SA 4.0, "
        "https://creativecommons.org/licenses/by-sa/4.0/",
        "note": "ShareAlike: this style's cells of atlas.png are adapted material (rendered and "
        "resampled), so they are shared under CC BY-SA 4.0 as well.",
    },
    # LobeHub's npm repack of Microsoft's art; the tarball holds no LICENSE file, its package.json
    # and README say MIT (Copyright (c) 2023 LobeHub), the art's own repository is MIT.
    "fluent": {
        "package": "@lobehub/fluent-emoji-3d",
        "layout": "assets",
        "art": "Fluent Emoji 3D",
        "license": "MIT",
        "license_url": "https://github.com/microsoft/fluentui-emoji/blob/main/LICENSE",
        "project_url": "https://github.com/microsoft/fluentui-emoji",
        "attribution": "Fluent Emoji by Microsoft, Copyright (c) Microsoft Corporation, MIT License: "
        "https://github.com/microsoft/fluentui-emoji/blob/main/LICENSE; repackaged as WebP by "
        "LobeHub (@lobehub/fluent-emoji-3d), Copyright (c) 2023 LobeHub, MIT License",
    },
}
# The style sets an atlas may hold, in cell order: the bundled atlas (the training styles, whose
# bytes are committed) and the held-out one (kept apart so no training run can draw from it).
ATLASES = [["google", "twitter", "openmoji"], ["fluent"]]
# Side in pixels an SVG is rendered at before it is scaled to the cell (as the fluent WebPs are
# 256 px): rendering large and resampling with Lanczos gives the same kind of edge as theirs.
SVG_RENDER = 256
# Where each layout keeps its images in the tarball, and their extension.
FOLDERS = {"assets": ("assets/", ".webp"), "svg": ("color/svg/", ".svg")}

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
# here is an error. None is needed with the pinned packages (fluent has all 38 code points too).
EXCEPTIONS = {}


def fail(msg):
    sys.exit(f"make_atlas.py: {msg}")


def skip(spec, style, cls, cp, reason):
    """None, for a code point the style lacks, when EXCEPTIONS allows it; an error otherwise."""
    why = EXCEPTIONS.get((style, cp))
    if why is None:
        fail(f"{spec}: class {cls!r}: code point {cp} has no image ({reason})")
    print(f"make_atlas.py: {spec}: class {cls!r}: skipping {cp}: {why}", file=sys.stderr)
    return None


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
        return skip(spec, style, cls, cp, "not in emoji.json" if not hits else f"has_img_{style} is false")
    name = hits[0]["image"]
    path = pkg_dir / "img" / style / "64" / name
    if not path.is_file():
        fail(f"{spec}: class {cls!r}: code point {cp}: emoji.json names {name}, not in the package")
    return path


def asset_name(names, spec, style, cls, cp):
    """The one image file name (of `names`) for cp in an `assets` or `svg` style, or None (see
    skip). The names may carry FE0F where the emoji is fully qualified (2708 is 2708-fe0f.webp),
    so it is ignored in matching; the other code points must all agree (1f408 is not
    1f408-200d-2b1b, the black cat)."""
    ext = FOLDERS[STYLES[style]["layout"]][1]
    hits = [
        n
        for n in names
        if n.endswith(ext) and "-".join(p for p in n[: -len(ext)].split("-") if p.upper() != "FE0F").upper() == cp
    ]
    if len(hits) > 1:
        fail(f"{spec}: class {cls!r}: code point {cp} matches {len(hits)} files: {hits}")
    return hits[0] if hits else skip(spec, style, cls, cp, f"no such file under {FOLDERS[STYLES[style]['layout']][0]}")


def members(style, listing):
    """The tarball members an `assets` or `svg` style's atlas reads, from its `tar -t` listing:
    the package.json and one image per code point, so the rest of the package is never unpacked."""
    layout = STYLES.get(style, {}).get("layout")
    if layout not in FOLDERS:
        fail(f"--members is for the styles with an assets/ or color/svg/ layout, not {style!r}")
    spec = STYLES[style]["package"]
    prefix = "package/" + FOLDERS[layout][0]
    names = [m[len(prefix) :] for m in listing if m.startswith(prefix) and "/" not in m[len(prefix) :]]
    out = ["package/package.json"]
    for cls, cps in CLASSES:
        out += [prefix + n for cp in cps if (n := asset_name(names, spec, style, cls, cp))]
    return out


def render_svg(path, spec):
    """An SVG rendered by resvg at SVG_RENDER x SVG_RENDER, as RGBA. System fonts are skipped:
    emoji art draws no text, and fonts found on the machine would make the pixels depend on it."""
    try:
        png = resvg_py.svg_to_bytes(svg_path=str(path), width=SVG_RENDER, height=SVG_RENDER, skip_system_fonts=True)
    except ValueError as e:
        fail(f"{spec}: {path.name}: resvg could not render it: {e}")
    with Image.open(io.BytesIO(bytes(png))) as im:
        im.load()
        return im.convert("RGBA")


def load_glyph(path, spec):
    if path.suffix == ".svg":
        rgba = render_svg(path, spec)
    else:
        with Image.open(path) as im:
            im.load()
            # convert("RGBA") maps palette or grey images (with tRNS) to the same RGBA values,
            # so the alpha is unchanged; an RGBA source is copied as is.
            rgba = im if im.mode == "RGBA" else im.convert("RGBA")
    if rgba.size != (CELL, CELL):
        # Fit the longer side to the cell and keep the aspect (a stretched glyph would be another
        # drawing). Pillow resizes RGBA through premultiplied RGBa and converts back, so the cell
        # holds straight alpha like the copied ones (atlas.rs premultiplies on load).
        w, h = rgba.size
        size = (max(1, round(w * CELL / max(w, h))), max(1, round(h * CELL / max(w, h))))
        cell = Image.new("RGBA", (CELL, CELL), (0, 0, 0, 0))
        cell.paste(rgba.resize(size, Image.Resampling.LANCZOS), ((CELL - size[0]) // 2, (CELL - size[1]) // 2))
        return cell, [w, h]
    return rgba, None


def main(argv):
    if len(argv) == 2 and argv[0] == "--members":
        print("\n".join(members(argv[1], sys.stdin.read().splitlines())))
        return
    if len(argv) < 2:
        fail("usage: make_atlas.py OUT_DIR STYLE=PACKAGE_DIR ... | make_atlas.py --members STYLE < LISTING")
    out = Path(argv[0])
    dirs = {}
    for arg in argv[1:]:
        style, _, d = arg.partition("=")
        if style not in STYLES:
            fail(f"unknown style {style!r} (known: {', '.join(STYLES)})")
        dirs[style] = Path(d)
    order = next((a for a in ATLASES if sorted(a) == sorted(dirs)), None)
    if order is None:
        fail(f"need exactly the styles of one atlas ({' or '.join(','.join(a) for a in ATLASES)}), got {sorted(dirs)}")
    if any(STYLES[s]["layout"] == "assets" for s in order) and not features.check("webp"):
        fail("this Pillow cannot read WebP (features.check('webp') is False)")
    if any(STYLES[s]["layout"] == "svg" for s in order) and resvg_py is None:
        fail("the openmoji style needs the resvg_py module (scripts/emoji/requirements.txt)")

    styles, glyphs, images = [], [], []
    for style in order:
        meta, pkg_dir = STYLES[style], dirs[style]
        pkg = json.loads((pkg_dir / "package.json").read_text(encoding="utf-8"))
        if pkg["name"] != meta["package"]:
            fail(f"style {style}: expected package {meta['package']}, found {pkg['name']}")
        spec = f"{pkg['name']}@{pkg['version']}"
        if meta["layout"] == "datasource":
            emoji = json.loads((pkg_dir / "emoji.json").read_text(encoding="utf-8"))
            img_path = f"img/{style}/64/"
        else:
            img_path = FOLDERS[meta["layout"]][0]
            assets = sorted(p.name for p in (pkg_dir / img_path).iterdir())
        styles.append(
            {
                "name": style,
                "package": spec,
                "art": meta["art"],
                "license": meta["license"],
                "path": img_path,
            }
        )
        for cls, cps in CLASSES:
            found = 0
            for cp in cps:
                if meta["layout"] == "datasource":
                    path = find_image(pkg_dir, style, spec, emoji, cls, cp)
                else:
                    name = asset_name(assets, spec, style, cls, cp)
                    path = name and pkg_dir / img_path / name
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

    (out / "LICENSES.md").write_text(licenses_md(styles, glyphs, order), encoding="utf-8")
    counts = ", ".join(f"{s['name']} {sum(g['style'] == s['name'] for g in glyphs)}" for s in styles)
    resized = sum("source_size" in g for g in glyphs)
    if resized:
        sizes = sorted({"x".join(map(str, g["source_size"])) for g in glyphs if "source_size" in g})
        print(
            f"make_atlas.py: {resized} glyphs resized from {', '.join(sizes)} to fit {CELL}x{CELL} (Lanczos)",
            file=sys.stderr,
        )
    print(
        f"make_atlas.py: wrote {out / 'atlas.png'} ({atlas.size[0]}x{atlas.size[1]}, "
        f"{len(png)} bytes, {len(glyphs)} glyphs: {counts})"
    )


def licenses_md(styles, glyphs, order):
    held_out = order != ATLASES[0]
    parts = [
        "# Emoji atlas: licences\n",
        "`atlas.png` holds emoji glyphs from the npm packages below, one 64x64 cell each. No glyph "
        "is redrawn or recoloured: each style's section says how its images reached the cell, and "
        "they are only arranged into one sprite sheet. `atlas.json` says which style, class, code "
        "point and source file is in each cell. Each glyph stays under the licence of its art:\n",
    ]
    how = {
        "datasource": "copied pixel for pixel (the package's 64 px PNGs)",
        "assets": "scaled down to fit the cell with Lanczos, keeping the aspect",
        "svg": f"rendered from the package's SVGs with resvg at {SVG_RENDER}x{SVG_RENDER}, then "
        "scaled down to fit the cell with Lanczos",
    }
    for s in styles:
        meta = STYLES[s["name"]]
        n = sum(g["style"] == s["name"] for g in glyphs)
        parts.append(
            f"## {s['name']}: {meta['art']}\n\n"
            f"- Package: `{s['package']}` (images under `{s['path']}`), {n} glyphs, "
            f"{how[meta['layout']]}\n"
            f"- Art: {meta['art']}, {meta['project_url']}\n"
            f"- Licence: {meta['license']} (SPDX), {meta['license_url']}\n"
            f"- Attribution: {meta['attribution']}\n"
            + (f"- {meta['note']}\n" if "note" in meta else "")
        )
    if any(STYLES[s]["layout"] == "datasource" for s in order):
        parts.append(
            "The packages' own code and metadata (emoji-datasource, MIT, Copyright (c) 2013 Cal "
            "Henderson) are used only to find the image files and are not shipped.\n"
        )
    if held_out:
        parts[-1] += (
            "\nThis is the held-out style's atlas (for `--atlas`): made on demand into an ignored "
            "folder, never committed, and never drawn from by training.\n"
        )
    parts.append(
        "## Regenerating\n\n"
        f"```\nscripts/make-emoji-atlas{' --held-out DIR' if held_out else ''}\n```\n\n"
        "It fetches the pinned package versions with `npm pack`, checks their sha512, and "
        "rewrites `atlas.png`, `atlas.json` and this file byte for byte the same.\n"
    )
    return "\n".join(parts)


if __name__ == "__main__":
    main(sys.argv[1:])
