"""Caption edits on real files: plan, dry run, apply, undo; the caption report; token counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from _tools_helpers import assert_clean_error, make_caption_dataset, run_cli, tree_digest, write_captioned
from easytrain.errors import UserError
from easytrain.tools.caption_edits import TagEdits, apply, plan_edits, undo
from easytrain.tools.caption_report import caption_report, format_report
from easytrain.tools.token_count import TOKENIZER_DIR, count_tokens


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_caption_dataset(tmp_path / "images")


def first_line(path: Path) -> str:
    return path.read_bytes().decode("utf-8-sig").splitlines()[0]


def test_plan_reads_only_and_lists_before_after(dataset):
    before = tree_digest(dataset)
    plan = plan_edits(dataset, TagEdits(add_trigger="mytrig"))
    assert tree_digest(dataset) == before
    assert plan.captions == 6
    assert len(plan.changes) == 6
    change = next(c for c in plan.changes if c.path.name == "s2.txt")
    assert (change.before, change.after) == ("scenery, 1girl, sky", "mytrig, scenery, 1girl, sky")


def test_apply_writes_only_the_first_line_and_keeps_bom_line_ending_and_rest(dataset):
    alice = dataset / "10_alice"
    apply(plan_edits(dataset, TagEdits(underscores=True, keep_tokens=0)))
    assert (alice / "a3.txt").read_bytes() == b"1girl, long hair, yellow hair, o_o\nsecond line stays\n"
    assert (alice / "a4.txt").read_bytes() == b"\xef\xbb\xbfalice, 1girl, x_x, 0_0\r\n"  # kaomoji only: untouched
    assert first_line(alice / "a1.txt") == "alice, 1girl, long hair, smile, ^_^, smile"


def test_each_edit_on_files(dataset):
    alice = dataset / "10_alice"
    apply(plan_edits(dataset, TagEdits(remove=("smile",))))
    assert first_line(alice / "a1.txt") == "alice, 1girl, long_hair, ^_^"
    apply(plan_edits(dataset, TagEdits(replace=(("blue_eyes", "blue eyes"),))))
    assert first_line(alice / "a2.txt") == "alice, 1girl, blonde hair, >_<, blue eyes"
    apply(plan_edits(dataset, TagEdits(merge=((("blonde hair", "yellow hair"), "blonde hair"),))))
    assert first_line(alice / "a3.txt") == "1girl, long_hair, blonde hair, o_o"
    apply(plan_edits(dataset, TagEdits(dedupe=True)))
    assert first_line(dataset / "3_style" / "s1.txt") == "1girl, outdoors, sky, long_hair"


def test_combined_edits_in_one_pass_and_add_trigger_twice_changes_nothing(dataset):
    edits = TagEdits(add_trigger="alice", remove=("1girl",), underscores=True, dedupe=True, keep_tokens=1)
    assert apply(plan_edits(dataset, edits)) is not None
    assert first_line(dataset / "10_alice" / "a1.txt") == "alice, long hair, smile, ^_^"
    assert first_line(dataset / "10_alice" / "a3.txt") == "alice, long hair, yellow hair, o_o"
    assert first_line(dataset / "3_style" / "s2.txt") == "alice, scenery, sky"
    after = tree_digest(dataset, skip_tools_dir=True)
    again = plan_edits(dataset, TagEdits(add_trigger="alice"))
    assert again.changes == ()
    assert apply(again) is None
    assert tree_digest(dataset, skip_tools_dir=True) == after


def test_undo_restores_byte_identical_files_and_walks_back(dataset):
    original = tree_digest(dataset)
    apply(plan_edits(dataset, TagEdits(add_trigger="mytrig")))
    middle = tree_digest(dataset, skip_tools_dir=True)
    apply(plan_edits(dataset, TagEdits(underscores=True, keep_tokens=0)))
    result = undo(dataset)
    assert tree_digest(dataset, skip_tools_dir=True) == middle
    assert len(result.restored) > 0
    undo(dataset)
    assert tree_digest(dataset, skip_tools_dir=True) == original
    with pytest.raises(UserError, match="nothing to undo"):
        undo(dataset)


def test_apply_refuses_when_a_file_changed_after_the_preview(dataset):
    plan = plan_edits(dataset, TagEdits(add_trigger="mytrig"))
    (dataset / "3_style" / "s1.txt").write_text("edited meanwhile", encoding="utf-8")
    before = tree_digest(dataset)
    with pytest.raises(UserError, match="s1.txt: changed on disk since the preview"):
        apply(plan)
    assert tree_digest(dataset) == before


def test_non_utf8_caption_is_reported_by_path_and_left_untouched(dataset):
    bad = dataset / "3_style" / "s3.txt"
    write_captioned(dataset / "3_style", "s3", "café, 1girl".encode("latin-1"))
    plan = plan_edits(dataset, TagEdits(add_trigger="mytrig"))
    assert any(str(bad) in message and "not UTF-8" in message for message in plan.skipped)
    apply(plan)
    assert bad.read_bytes() == "café, 1girl".encode("latin-1")
    report = caption_report(dataset)
    assert any(str(bad) in message for message in report.not_utf8)


def test_one_n_name_folder_works_as_dir(dataset):
    plan = plan_edits(dataset / "3_style", TagEdits(add_trigger="mytrig"))
    assert {c.path.name for c in plan.changes} == {"s1.txt", "s2.txt"}
    apply(plan)
    assert (dataset / "3_style" / ".easytrain" / "undo").is_dir()
    undo(dataset / "3_style")
    assert first_line(dataset / "3_style" / "s1.txt") == "1girl, outdoors, sky, long_hair"


def test_no_edits_is_an_error(dataset):
    with pytest.raises(UserError, match="no caption edit"):
        plan_edits(dataset, TagEdits())


def test_report_counts(dataset):
    write_captioned(dataset / "3_style", "s3", "very " * 100 + "long")
    write_captioned(dataset / "3_style", "s4", "cat " * 230)
    report = caption_report(dataset)
    assert (report.images, report.captions, len(report.without_caption)) == (9, 8, 1)
    assert report.without_caption[0].name == "a5.png"
    assert dict(report.top)["1girl"] == 6  # captions that hold it, a repeat counted once
    assert dict(report.top)["long_hair"] == 3
    assert report.in_every_caption == ()
    assert [p.name for p, tags in report.repeated] == ["a1.txt"] and report.repeated[0][1] == ("smile",)
    assert [(p.name, n) for p, n in report.too_long[75]] == [("s3.txt", 101), ("s4.txt", 230)]
    assert [(p.name, n) for p, n in report.too_long[225]] == [("s4.txt", 230)]
    per_folder = {f.folder.name: dict(f.top) for f in report.folders}
    assert per_folder["3_style"]["sky"] == 2 and "alice" not in per_folder["3_style"]
    text = "\n".join(format_report(report))
    assert "a5.png" in text and "Longer than 75 tokens (2" in text and "3_style/s4.txt: 230 tokens" in text


def test_report_tags_in_every_caption(tmp_path):
    folder = tmp_path / "5_bob"
    write_captioned(folder, "1", "bob, 1boy, red scarf, smile")
    write_captioned(folder, "2", "1boy, bob, red scarf, outdoors")
    report = caption_report(folder, keep_tokens=0)
    assert set(report.in_every_caption) == {"bob", "1boy", "red scarf"}
    report = caption_report(folder)  # the first tag of each caption is kept in front: never a removal hint
    assert report.in_every_caption == ("red scarf",) and set(report.kept_in_front) == {"bob", "1boy"}


def test_token_counts_match_transformers_clip_tokenizer():
    from transformers import CLIPTokenizer

    reference = CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), local_files_only=True)
    captions = ["a photo of a cat", "1girl, long_hair, ^_^, >_<, blue eyes", "Café  naïve,ÉTÉ x2 3000 don't",
                "tab\tand\nnewline,,  double, (masterpiece:1.2), [[best quality]]", "日本語, emoji 😀", ""]
    counts = count_tokens(captions)
    assert counts.exact
    assert list(counts.counts) == [len(reference(c, add_special_tokens=False).input_ids) for c in captions]
    assert counts.counts[0] == 5  # 320 1125 539 320 2368


def test_token_counts_fall_back_to_an_estimate(tmp_path):
    counts = count_tokens(["a photo of a cat"], tokenizer_dir=tmp_path)
    assert not counts.exact and "estimate" in counts.note and counts.counts[0] == 5


def test_cli_dry_run_leaves_tree_byte_identical_then_apply_and_undo(dataset):
    before = tree_digest(dataset)
    dry = run_cli("tags", dataset, "--add-trigger", "mytrig", "--remove", "smile", "--underscores")
    assert dry.returncode == 0, dry.stderr
    assert "6 of 6 caption files change" in dry.stdout and "Dry run" in dry.stdout
    assert "+ mytrig, alice, 1girl, long hair, ^_^" in dry.stdout
    assert "1 image(s) have no caption file" in dry.stdout
    assert tree_digest(dataset) == before
    applied = run_cli("tags", dataset, "--add-trigger", "mytrig", "--apply")
    assert applied.returncode == 0, applied.stderr
    assert first_line(dataset / "3_style" / "s1.txt").startswith("mytrig, ")
    undone = run_cli("tags", dataset, "--undo")
    assert undone.returncode == 0, undone.stderr
    assert tree_digest(dataset, skip_tools_dir=True) == before


def test_cli_report_and_bad_input(dataset, tmp_path):
    report = run_cli("tags", dataset)
    assert report.returncode == 0 and "Top tags" in report.stdout
    assert_clean_error(run_cli("tags", tmp_path / "missing"), str(tmp_path / "missing"), "does not exist")
    assert_clean_error(run_cli("tags", dataset, "--replace", "nonsense"), "--replace", "OLD=NEW")
    assert_clean_error(run_cli("tags", dataset, "--undo"), "nothing to undo")
    write_captioned(dataset / "3_style", "bad", b"\xff\xfe caf\xe9")
    dry = run_cli("tags", dataset, "--dedupe")
    assert dry.returncode == 0 and "bad.txt: caption file is not UTF-8" in dry.stdout


def test_tags_report_never_suggests_removing_the_trigger(demo_images):
    out = run_cli("tags", demo_images)
    assert out.returncode == 0, out.stderr
    assert ("In every caption (besides shapes, kept in front by --keep-tokens): simple background"
            in out.stdout)


def test_add_trigger_with_underscores_edits_the_tag_it_pushed_out_of_the_head(demo_images):
    caption = demo_images / "5_shapes" / "shape_00.txt"
    caption.write_text("long_hair, red circle\n", encoding="utf-8")
    out = run_cli("tags", demo_images, "--add-trigger", "zzchar", "--underscores", "--apply")
    assert out.returncode == 0, out.stderr
    assert caption.read_text(encoding="utf-8") == "zzchar, long hair, red circle\n"
