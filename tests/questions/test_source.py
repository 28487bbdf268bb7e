"""Reading the prepared folder: values keyed by name, popularity from the train split."""
import numpy as np
import pyarrow as pa

from uqa_ray.questions.source import _name_keys, add_popularity, load_catalog, load_sequences


def test_name_keys_merge_equal_names_and_drop_empty():
    names = pa.array(["花语", "", "小米", None, "小米"])
    pos = np.array([-1, 0, 1, 2, 3, 4, -1])  # ids 0..6; ids 0 and 6 have no row
    keys, text = _name_keys(names, pos)
    assert [text[k] for k in keys] == ["", "花语", "", "小米", "", "小米", ""]
    assert keys[0] == keys[2] == keys[4] == keys[6] == 0 and keys[3] == keys[5] != 0


def test_catalog_and_popularity(prepared):
    cat = load_catalog(prepared)
    brand = cat.attrs["brand"]
    assert brand.key_of_item[3] == brand.key_of_item[10]  # brands 2 and 7 are both named 小米
    train = load_sequences(prepared, "train", cat)
    add_popularity(cat, train, pool=3)
    clicks = np.bincount(np.concatenate([train.clicks(r) for r in range(len(train))]), minlength=13)
    assert (cat.item_clicks == clicks).all()
    cate = cat.attrs["cate"]
    per = {cate.text[k]: clicks[cate.key_of_item == k].sum() for k in range(1, len(cate.text))}
    assert [cate.text[k] for k in cate.popular] == sorted(per, key=lambda n: -per[n])[:3]
