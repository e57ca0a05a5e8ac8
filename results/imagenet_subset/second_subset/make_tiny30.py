"""Issue 16's second subset: 30 Tiny ImageNet classes (every third wnid of wnids.txt) in the extracted ILSVRC layout
(DIR/train/<wnid>/*.JPEG, DIR/val/<wnid>/*.JPEG), as symlinks to ../shared/tiny-imagenet-100.

python make_tiny30.py SRC OUT   # prints: 30 9000 1500
"""
import os
import sys

src, out = sys.argv[1], sys.argv[2]
wnids = [line.strip() for line in open(os.path.join(src, "wnids.txt")) if line.strip()]
pick = wnids[::3][:30]
n_tr = n_va = 0
for w in pick:
    d = os.path.join(out, "train", w)
    os.makedirs(d)
    for f in sorted(os.listdir(os.path.join(src, "train", w, "images"))):
        os.symlink(os.path.join(src, "train", w, "images", f), os.path.join(d, f))
        n_tr += 1
    os.makedirs(os.path.join(out, "val", w))
for line in open(os.path.join(src, "val", "val_annotations.txt")):
    f, w = line.split("\t")[:2]
    if w in pick:
        os.symlink(os.path.join(src, "val", "images", f), os.path.join(out, "val", w, f))
        n_va += 1
print(len(pick), n_tr, n_va)
