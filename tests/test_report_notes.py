"""The report's notes on rows a reader must not take at face value: oracle prompts, random SAM."""

from segbench.comparison import markdown_table
from segbench.reporttext import banners, headline


def _row(model, score, val=0.8, **flags):
    return {"model": model, "score": score, "val_score": val, "n_images": 12, **flags}


ROWS = [
    _row("sam_box", 0.97, val=0.99, oracle_prompts=True, random_init=False),
    _row("unet", 0.93, val=0.9),
    _row("sam_auto", 0.50, val=0.4, random_init=True),
    _row("otsu", 0.76, val=0.7),
]


def test_the_headline_names_the_best_model_that_sees_the_image_alone():
    text = headline(ROWS)
    assert text.startswith(
        "Reference: unet, the best validation Dice (all images) (0.900) among models that see "
        "the image alone, chosen before the test set was opened. Its test Dice (all images): "
        "0.930 over 12 images."
    )
    assert "margin of +0.170" in text
    assert "sam_box reaches 0.970: an upper bound for a perfect user" in text


def test_each_flag_gets_its_note_in_the_table_and_one_banner():
    table = markdown_table(ROWS).splitlines()
    line = {row.split(" | ")[0].lstrip("| "): row for row in table[2:]}
    assert line["sam_box"].endswith("| oracle prompts |")
    assert line["sam_auto"].endswith("| random-init SAM |")
    assert line["unet"].endswith("|  |")
    assert line["sam_box"].startswith("| sam_box | 0.970 |")
    texts = banners(ROWS)
    assert [t.split(".")[0] for t in texts] == ["Oracle prompts", "Random-initialised SAM"]
    assert banners([_row("unet", 0.9)]) == []


def test_a_small_test_set_gets_its_banner():
    small = [{**r, "n_images": 9} for r in ROWS]
    texts = banners(small)
    assert texts[-1].startswith("Small test set. Only 9 test images")
    assert not any(t.startswith("Small test set") for t in banners(ROWS))
