"""Image folders with faults: corrupt files, missing or single classes, mixed sizes, empty splits."""

import re
import shutil

import numpy as np
import pytest

from keras_resnet import data


def _write_pngs(folder, classes, per_class, size=(12, 10)):
    from PIL import Image

    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(np.full(size + (3,), 40 * c + i, np.uint8)).save(folder / name / f"{i}.png")


def _corrupt(folder):
    """A text file named .png, and a JPEG cut in half (both common in real photo folders)."""
    from PIL import Image

    (folder / "cat" / "notes.png").write_text("not an image")
    Image.fromarray(np.full((12, 10, 3), 90, np.uint8)).save(folder / "dog" / "half.jpg")
    jpeg = (folder / "dog" / "half.jpg").read_bytes()
    (folder / "dog" / "half.jpg").write_bytes(jpeg[:len(jpeg) // 2])
    return [str(folder / "cat" / "notes.png"), str(folder / "dog" / "half.jpg")]


@pytest.fixture(scope="module")
def corrupt_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    _write_pngs(folder, ["cat", "dog"], per_class=5)
    return folder, _corrupt(folder)


def test_corrupt_image_stops_the_load_naming_the_file(corrupt_folder):
    folder, bad = corrupt_folder
    with pytest.raises(data.DatasetError) as err:
        data.load(folder)
    message = str(err.value)
    assert message.startswith(f"{bad[0]}: not a readable image: not a format Pillow identifies")
    assert f"2 of 12 files do not: {bad[0]}, {bad[1]}" in message
    assert "bad_images='skip' (--bad-images skip)" in message


def test_bad_images_skip_leaves_them_out_with_one_warning_line(corrupt_folder, capsys):
    folder, bad = corrupt_folder
    (x, y), (x_test, y_test), info = data.load(folder, bad_images="skip", test_fraction=0.2)
    assert len(x) + len(x_test) == 10 and np.array_equal(np.bincount(np.concatenate([y, y_test])), [5, 5])
    assert np.array_equal(x[:, 0, 0, 0] // 40, y)  # the good images, with their labels
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("note:")]
    assert lines == [f"warning: {folder}: skipped 2 of 12 image files that do not decode: {bad[0]}, {bad[1]}"]


def test_skip_warning_shows_the_first_three_paths_and_the_count(tmp_path, capsys):
    _write_pngs(tmp_path, ["a", "b"], per_class=3)
    for i in range(5):
        (tmp_path / "a" / f"z{i}.jpg").write_bytes(b"\xff\xd8 broken")
    (x, _), (x_test, _), _ = data.load(tmp_path, bad_images="skip")
    assert len(x) + len(x_test) == 6
    err = capsys.readouterr().err
    assert f"skipped 5 of 11 image files that do not decode: {tmp_path}/a/z0.jpg, " in err
    assert f"{tmp_path}/a/z2.jpg, ..." in err and "z3.jpg" not in err


def test_images_of_mixed_sizes_are_resized_to_the_first_and_said_once(tmp_path, capsys):
    _write_pngs(tmp_path, ["a", "b"], per_class=4)
    _write_pngs(tmp_path / "extra", ["b"], per_class=1, size=(20, 30))
    shutil.move(tmp_path / "extra" / "b" / "0.png", tmp_path / "b" / "9.png")
    shutil.rmtree(tmp_path / "extra")
    (x, _), (x_test, _), info = data.load(tmp_path, test_fraction=0.25)
    assert x.shape[1:] == (12, 10, 3) and x_test.shape[1:] == (12, 10, 3) and len(x) + len(x_test) == 9
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "colour" not in line]
    assert err == [f"note: {tmp_path}: 1 of 9 images are not 12x10 (the first image's size), e.g. "
                   f"{tmp_path}/b/9.png is 20x30; they are resized to 12x10. Pass image_size=(height, "
                   "width) to choose the size."]
    (x, _), _, _ = data.load(tmp_path, image_size=(8, 8), test_fraction=0.25)
    assert x.shape[1:] == (8, 8, 3) and "are not" not in capsys.readouterr().err


def _loose_images(folder):
    _write_pngs(folder / "tmp", ["x"], per_class=2)
    for path in (folder / "tmp" / "x").iterdir():
        shutil.move(path, folder / path.name)
    shutil.rmtree(folder / "tmp")


def _one_class(folder):
    _write_pngs(folder, ["cat"], per_class=3)


def _empty_class(folder):
    _write_pngs(folder, ["cat", "dog"], per_class=3)
    shutil.rmtree(folder / "dog")
    (folder / "dog").mkdir()


def _all_bad_in_one_class(folder):
    _write_pngs(folder, ["cat", "dog"], per_class=3)
    for path in (folder / "dog").iterdir():
        path.write_bytes(b"garbage")


def _mismatched_splits(folder):
    _write_pngs(folder / "train", ["cat", "dog"], per_class=2)
    _write_pngs(folder / "test", ["cat", "cow"], per_class=1)


def _too_few_for_a_test_split(folder):
    _write_pngs(folder, ["cat", "dog"], per_class=1)


@pytest.mark.parametrize("make, kwargs, fragment", [
    (lambda folder: None, {}, "{folder}: no images (.png, .jpg, .jpeg, .bmp, .gif, .webp, .tif, .tiff) in its sub-folders."),
    (_loose_images, {}, "{folder}: no images (.png, .jpg, .jpeg, .bmp, .gif, .webp, .tif, .tiff) in its sub-folders (it "
                        "holds 2 directly). An image folder holds one sub-folder of images per class"),
    (_one_class, {}, "{folder}: only one class sub-folder ('cat'); classification needs two or more"),
    (_empty_class, {}, "{folder}: the class sub-folder(s) ['dog'] hold no readable images"),
    (_all_bad_in_one_class, {"bad_images": "skip"}, "{folder}: the class sub-folder(s) ['dog'] hold no "
                                                     "readable images"),
    (_mismatched_splits, {}, "{folder}/test: its class sub-folders ['cat', 'cow'] differ from those of "
                             "{folder}/train: ['cat', 'dog']"),
    (_too_few_for_a_test_split, {"test_fraction": 0.1}, "{folder}: no test images (test_fraction=0.1 of "
                                                        "2 images"),
])
def test_faulty_folder_gets_a_dataset_error_saying_what_is_wrong(tmp_path, make, kwargs, fragment):
    make(tmp_path)
    with pytest.raises(data.DatasetError, match=re.escape(fragment.format(folder=tmp_path))):
        data.load(tmp_path, **kwargs)


def test_folder_lists_files_like_keras_and_decodes_them_with_the_one_decoder(tmp_path):
    import keras

    from PIL import Image

    from keras_resnet.data import images

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / c / "nested").mkdir(parents=True)
        for i in range(4):
            h, w = rng.integers(9, 30, 2)
            path = tmp_path / c / ("nested" if i == 1 else "") / f"{i}{('.png', '.jpg')[i % 2]}"
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    splits = tmp_path.parent / f"{tmp_path.name}_splits"
    shutil.copytree(tmp_path, splits / "train")
    shutil.copytree(tmp_path, splits / "test")
    (x, y), (x_test, _), _ = data.load(splits, image_size=(16, 12))
    ds = keras.utils.image_dataset_from_directory(tmp_path, image_size=(16, 12), shuffle=False, verbose=False)
    expected = np.stack([images.resize(images.read_image(p, 3), (16, 12)) for p in ds.file_paths])
    assert np.array_equal(x, expected)
    assert np.array_equal(x_test, x)
    assert np.array_equal(y, np.concatenate([b[1] for b in ds.as_numpy_iterator()]))
