"""What a store records about its build (checked when a build resumes or repeats) and its closing summary."""
import os

from data_prep.cifar_sources import CIFAR_SIZE
from data_prep.cifar_sources import FORMATS as CIFAR_FORMATS
from data_prep.ilsvrc_sources import DEMO_MARK
from data_prep.image_recipe import JPEG_QUALITY, JPEG_SUBSAMPLING, SIZE
from data_prep.raw_shards import format_line


def summary_text(manifest, skipped, out):
    """The end-of-build summary: images per split, classes, skipped files with reasons, what is left out."""
    fmt = manifest["settings"].get("source_format")
    lines = [f"store {out}: {len(manifest['classes'])} classes" + (f" ({fmt} source)" if fmt else "")]
    lines.append(format_line(manifest["settings"], out))
    if 0 < len(manifest.get("class_names") or ()) <= 20:  # a subset's classes in words; 1000 would drown the rest
        lines.append(f"  classes: {', '.join(manifest['class_names'])}")
    for split, s in manifest["splits"].items():
        lines.append(f"  {split}: {s['count']} images in {s['shards']} shards")
    lines.append(f"  skipped: {len(skipped)} files (list in {os.path.join(out, 'skipped.json')})")
    for s in skipped[:50]:
        lines.append(f"    {s['file']}: {s['reason']}")
    if len(skipped) > 50:
        lines.append(f"    ... and {len(skipped) - 50} more")
    lines += [f"  {note}" for note in manifest.get("notes", [])]
    return "\n".join(lines)


def build_settings(source, source_format, year):
    """What the store records about how it was built (a resumed or repeated build must match it)."""
    if source_format in CIFAR_FORMATS:  # native size, lossless
        return {"source": source, "source_format": source_format, "encoding": "png", "size": CIFAR_SIZE}
    settings = {"source": source, "source_format": source_format, "jpeg_quality": JPEG_QUALITY,
                "jpeg_subsampling": JPEG_SUBSAMPLING, "size": SIZE}
    if source_format != "tiny-imagenet":  # the ILSVRC year; Tiny ImageNet has none
        settings["year"] = int(year)
    if os.path.isfile(os.path.join(source, DEMO_MARK)):
        settings["demo"] = True  # read by the report: a generated set is never called ImageNet
    return settings
