"""bench.erase_robust's measures see what they claim: a pale bump off the lip, a deviation, and nothing else."""

import numpy as np
from PIL import Image

from bench.erase_robust import compare, perturb


def _scene() -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros((60, 80, 3), np.float32)
    ref[:, :] = (150, 50, 30)  # a red saucer
    ref[10:20, 10:30] = (240, 235, 225)  # a white lip
    region = np.zeros((60, 80), bool)
    region[5:50, 5:70] = True
    return ref, region


def test_identical_result_scores_zero():
    ref, region = _scene()
    img = Image.fromarray(ref.astype(np.uint8))
    mask = Image.fromarray(region.astype(np.uint8) * 255)
    assert compare(img, mask, ref, region, (80, 60)) == {"haze": 0, "dev": 0}


def test_pale_bump_past_the_lip_is_haze_and_deviation():
    ref, region = _scene()
    bumped = ref.copy()
    bumped[30:36, 40:46] = (230, 228, 220)  # 36 px of white over the saucer, away from the lip
    bumped[40:44, 10:14] = (120, 30, 20)  # a dark smear: deviation, not haze
    mask = Image.fromarray(region.astype(np.uint8) * 255)
    got = compare(Image.fromarray(bumped.astype(np.uint8)), mask, ref, region, (80, 60))
    assert got["haze"] == 36
    assert got["dev"] > 36  # both marks (the blur spreads each a little)


def test_a_scaled_result_is_compared_at_the_photo_size():
    ref, region = _scene()
    big = Image.fromarray(ref.astype(np.uint8)).resize((160, 120), Image.LANCZOS)
    mask = Image.fromarray(region.astype(np.uint8) * 255).resize((160, 120), Image.NEAREST)
    assert compare(big, mask, ref, region, (80, 60))["haze"] == 0


def test_perturbations_keep_sizes_and_change_what_they_name():
    photo = Image.fromarray((np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8))
    lasso = np.zeros((40, 60), np.uint8)
    lasso[10:30, 20:40] = 255
    lasso_img = Image.fromarray(lasso)
    p, s, k = perturb("jpg85", photo, lasso_img)
    assert p.size == photo.size and k == 1.0 and np.array_equal(np.asarray(s), lasso)
    assert not np.array_equal(np.asarray(p), np.asarray(photo))
    _, grown, _ = perturb("dil2", photo, lasso_img)
    assert (np.asarray(grown) > 0).sum() == 24 * 24
    p, s, k = perturb("s1.5", photo, lasso_img)
    assert p.size == (90, 60) and s.size == (90, 60) and k == 1.5


def test_an_unknown_or_unusable_variant_is_refused_before_any_erase_runs():
    """A typo (``bogus``), a missing amount (``jpg``) or a zero scale (``s0``) end in a usage error naming it,
    not a traceback half-way through the runs."""
    import pytest

    from bench.erase_robust import _known, main

    for name in ("bogus", "jpg", "s0", "rt0", "jpg101", "s-1"):
        assert not _known(name), name
        with pytest.raises(SystemExit) as exc:
            main(["--variants", f"jpg85,{name}"])
        assert exc.value.code == 2
    for name in ("orig", "jpg85", "jpg100", "rt2", "rt1.5", "dil2", "ero4", "blur0.6", "blur1", "s0.7", "s2"):
        assert _known(name), name
