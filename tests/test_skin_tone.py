import math

import pytest
import torch
from helpers import CLOTHES, PALETTE_A, PALETTE_B, toned_emoji_set, toned_figure

from translate import metrics, skin_tone
from translate.evaluate import ImageSet, _Scorer


def test_tone_of_reads_a_single_modifier():
    assert skin_tone.tone_of("1f44d-1f3fb") == 0 and skin_tone.tone_of("1f44d-1f3ff") == 4
    assert skin_tone.tone_of("1f44d") is None
    assert skin_tone.tone_of("1f9d1-1f3fb-200d-1f91d-200d-1f9d1-1f3fb") == 0  # one tone, twice
    assert skin_tone.tone_of("1f9d1-1f3fb-200d-1f91d-200d-1f9d1-1f3ff") is None  # two tones
    assert skin_tone.has_tone("1f9d1-1f3fb-200d-1f91d-200d-1f9d1-1f3ff")
    assert not skin_tone.has_tone("1f44d")


def test_palette_finds_each_sets_skin_colours_among_shared_clothes_and_outlines():
    for palette in (PALETTE_A, PALETTE_B):
        images, names = toned_emoji_set(palette)
        found = skin_tone.palette(images, names)
        assert found is not None
        assert (found - torch.tensor(palette, dtype=torch.float32)).abs().max() <= 1
    images, names = toned_emoji_set(PALETTE_A)
    keep = [i for i, n in enumerate(names) if not n.endswith("1f3ff")]  # no darkest tone
    assert skin_tone.palette(images[keep], [names[i] for i in keep]) is None
    assert skin_tone.palette(images, ["1f466"] * len(names)) is None  # no modifiers


def test_true_counterparts_keep_every_tone():
    sources, names = toned_emoji_set(PALETTE_A)
    truths, _ = toned_emoji_set(PALETTE_B, shift=1)  # drawn a pixel lower, as another set would
    pa, pb = skin_tone.palette(sources, names), skin_tone.palette(truths, names)
    scores = skin_tone.tone_scores(truths, sources, names, pa, pb)
    assert len(scores.index) == 20 and scores.kept.all()
    assert scores.delta_e.abs().max() < 1 and scores.lightness.abs().max() < 1
    assert scores.tone.tolist() == [t for _ in range(4) for t in range(5)]


def test_a_light_face_turned_brown_is_darker_though_the_whole_figure_is_lighter():
    """The case the figure's mean lightness gets wrong: the light faces drawn in the fourth
    tone's brown, the outlines dropped (white), as a translation to an outline-free set may."""
    sources, names = toned_emoji_set(PALETTE_A)
    truths, _ = toned_emoji_set(PALETTE_B)
    pa, pb = skin_tone.palette(sources, names), skin_tone.palette(truths, names)
    light = torch.tensor([skin_tone.tone_of(n) == 0 for n in names])
    faces = [PALETTE_B[3] if light[i] else PALETTE_B[i % 5] for i in range(len(names))]
    darkened = torch.stack(
        [toned_figure(face, CLOTHES[i // 5], outline=False) for i, face in enumerate(faces)]
    )
    scores = skin_tone.tone_scores(darkened, sources, names, pa, pb)
    assert not scores.kept[light].any() and scores.kept[~light].all()
    assert (scores.lightness[light] < -20).all()  # Twemoji-like 90 L* -> 57 L*
    figure = metrics.color_shift(darkened[light], truths[light])["lightness"]
    assert (figure > 0).all()  # the old measure: "lighter", from the white outline alone


def test_a_translation_without_skin_coloured_pixels_is_not_kept():
    sources, names = toned_emoji_set(PALETTE_A)
    pa = skin_tone.palette(sources, names)
    grey = torch.zeros_like(sources)  # mid-grey everywhere: no skin-like pixel
    scores = skin_tone.tone_scores(grey, sources, names, pa, pa)
    assert len(scores.index) == 20 and not scores.kept.any()
    assert all(math.isnan(v) for v in scores.delta_e.tolist())
    none = skin_tone.tone_scores(sources, sources, ["1f466"] * len(names), pa, pa)
    assert len(none.index) == 0 and len(none.kept) == 0


def test_the_evaluation_scores_tones_only_where_both_sets_name_them():
    sources, names = toned_emoji_set(PALETTE_A)
    truths, _ = toned_emoji_set(PALETTE_B)

    def scorer(src_names, tgt_names=names):
        return _Scorer(
            0,
            ImageSet(src_names, sources),
            ImageSet(tgt_names, truths),
            lambda pixels: pixels.flatten(1)[:, :8],
            None,
            None,
            "a2b",
        )

    scores = scorer(names)._tone_scores(truths)
    assert scores["tone_kept"] == 1.0 and scores["tone_delta_e"] == pytest.approx(0, abs=1)
    untoned = ["1f466"] * len(names)
    assert scorer(untoned)._tone_scores(truths) == {}  # sources without tones
    assert scorer(names, untoned)._tone_scores(truths) == {}  # targets without tones


def test_the_report_explains_the_tone_columns_only_where_they_are():
    from translate.evaluate import Row
    from translate.report import TONE_NOTE, tone_note

    plain = Row("run", "a2b", scores={"kid": 0.1})
    toned = Row("run", "b2a", scores={"kid": 0.1, "tone_kept": 0.5})
    assert tone_note([plain]) == [] and tone_note([plain, toned]) == [TONE_NOTE]
    assert "\n" not in TONE_NOTE and "tone kept" in TONE_NOTE
