"""Classes in words: the shipped ILSVRC-2012 table, the names a store's manifest records, old stores looked up."""
import json
import os
import shutil

import pytest
from conftest import ROOT
from torchvision.models import AlexNet_Weights

from data_prep.build_imagenet import build
from data_prep.make_class_table import table_rows
from data_prep.make_demo_imagenet import make_demo_imagenet
from paper_repro.data.class_names import TABLE, class_words, ilsvrc2012_classes, short_names
from paper_repro.data.store import ILSVRC2012_FIRST_LAST, ImageNetStore, class_names

WOOF = {"n02086240": "Shih-Tzu", "n02088364": "beagle", "n02115641": "dingo"}


def test_the_table_holds_the_1000_ilsvrc2012_classes_as_torchvision_names_them():
    table = ilsvrc2012_classes()
    wnids = list(table)
    assert len(wnids) == len(set(wnids)) == 1000 and wnids == sorted(wnids)
    assert (wnids[0], wnids[-1]) == ILSVRC2012_FIRST_LAST
    # torchvision's ImageNet weights list the classes in sorted-wnid order: an independent source of the names.
    categories = AlexNet_Weights.IMAGENET1K_V1.meta["categories"]
    differ = {(w, table[w][0], c) for w, c in zip(wnids, categories) if table[w][0] != c}
    assert differ == {("n02012849", "crane", "crane bird"), ("n03710721", "maillot", "maillot tank suit")}
    assert all(table[w][0].lower() in table[w][1].lower() for w in wnids)  # the short name is one of its words
    assert table["n02105641"] == ("Old English sheepdog", "Old English sheepdog, bobtail")


def test_short_names_are_unique_and_the_stores_own_words_win():
    assert short_names(["n02012849", "n03126707", "n02088364"]) == [
        "crane (n02012849)", "crane (n03126707)", "beagle"]
    words = ["goldfish, Carassius auratus", "n09999999", None]
    assert class_words(["n01443537", "n09999999", "n02088364"], words) == [
        "goldfish, Carassius auratus", "n09999999", "beagle"]
    assert short_names(["n01443537", "n09999999", "cats"], ["my fish, a fish", "", "cats"]) == [
        "my fish", "n09999999", "cats"]
    assert short_names(["a", "b"], ["dog, hound", "dog"]) == ["dog (a)", "dog (b)"]


def test_the_table_builder_refuses_anything_but_the_1000_classes():
    table = ilsvrc2012_classes()
    names, words = {w: n for w, (n, _) in table.items()}, {w: ws for w, (_, ws) in table.items()}
    assert table_rows(names, words) == [(w, n, ws) for w, (n, ws) in table.items()]
    with pytest.raises(ValueError, match=r"^found 999 sample wnids \(n01440764 \.\. n13133613\); ILSVRC-2012 has "
                                         r"1000, n01440764 \.\. n15075141$"):
        table_rows({w: n for w, n in names.items() if w != ILSVRC2012_FIRST_LAST[1]}, words)
    with pytest.raises(ValueError, match=r"^words.txt has no words for 1 wnids: n02088364$"):
        table_rows(names, {w: ws for w, ws in words.items() if w != "n02088364"})


def test_the_shipped_table_is_package_data():
    setup = open(os.path.join(ROOT, "setup.py")).read()
    assert '"data/*.tsv"' in setup and os.path.dirname(TABLE).endswith(os.path.join("paper_repro", "data"))


@pytest.fixture(scope="module")
def woof_store(tmp_path_factory):
    """A store built from extracted class folders named by real ILSVRC-2012 wnids (no words in the source)."""
    tmp = tmp_path_factory.mktemp("woof")
    src = make_demo_imagenet(tmp / "src", 3, 2, 1, seed=5, layout="folders")
    os.unlink(os.path.join(src, "GENERATED_DEMO_DATASET.txt"))  # now plain extracted folders
    for split in ("train", "val"):
        for old, new in zip(sorted(os.listdir(os.path.join(src, split))), sorted(WOOF)):
            os.rename(os.path.join(src, split, old), os.path.join(src, split, new))
    out = str(tmp / "store")
    build(str(src), out, workers=1, progress=False)
    return out


def test_a_folder_store_records_its_classes_in_words(woof_store):
    manifest = json.load(open(os.path.join(woof_store, "manifest.json")))
    assert manifest["classes"] == sorted(WOOF)
    assert manifest["class_words"] == ["Shih-Tzu", "beagle", "dingo, warrigal, warragal, Canis dingo"]
    assert manifest["class_names"] == class_names(woof_store) == ["Shih-Tzu", "beagle", "dingo"]
    assert ImageNetStore(woof_store, "val").class_words == manifest["class_words"]


def test_a_store_built_before_the_table_is_named_from_it(woof_store, tmp_path):
    old = str(tmp_path / "old")
    shutil.copytree(woof_store, old)
    path = os.path.join(old, "manifest.json")
    manifest = json.load(open(path))
    del manifest["class_names"]
    manifest["class_words"] = manifest["classes"]  # what folder builds recorded before
    json.dump(manifest, open(path, "w"))
    assert class_names(old) == ["Shih-Tzu", "beagle", "dingo"]
    assert ImageNetStore(old, "train").class_words[2] == "dingo, warrigal, warragal, Canis dingo"
    del manifest["class_words"]  # older still: no words at all
    json.dump(manifest, open(path, "w"))
    assert class_names(old) == ["Shih-Tzu", "beagle", "dingo"]


def test_a_generated_store_and_a_folder_without_a_manifest_have_no_names(tiny_store, tmp_path):
    assert class_names(tiny_store) is None  # its ids are random; its words placeholders
    assert ImageNetStore(tiny_store, "train").class_words == json.load(
        open(os.path.join(tiny_store, "manifest.json")))["class_words"]
    assert class_names(str(tmp_path)) is None and class_names(None) is None


def test_the_build_summary_names_a_subsets_classes(woof_store, capsys):
    source = json.load(open(os.path.join(woof_store, "manifest.json")))["settings"]["source"]
    build(source, woof_store, workers=1, progress=False)  # finished: prints its summary again
    assert "  classes: Shih-Tzu, beagle, dingo\n" in capsys.readouterr().out
