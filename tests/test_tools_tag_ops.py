"""Caption tag edits on tag lists: each edit, their combination, kaomoji, keep-tokens, parsing."""

from __future__ import annotations

import pytest

from easytrain.errors import UserError
from easytrain.tools.tag_ops import (
    TagEdits, edit_tags, is_kaomoji, parse_merge, parse_replace, parse_tag_list, repeated_tags,
)

CAPTION = ["alice", "1girl", "long_hair", "smile", "^_^", "smile", "blue_eyes"]


def test_add_trigger_goes_first_and_never_twice():
    once = edit_tags(CAPTION, TagEdits(add_trigger="mytrig"))
    assert once == ["mytrig"] + CAPTION
    assert edit_tags(once, TagEdits(add_trigger="mytrig")) == once


def test_add_trigger_already_present_later_moves_to_front():
    assert edit_tags(["1girl", "mytrig", "smile"], TagEdits(add_trigger="mytrig")) == ["mytrig", "1girl", "smile"]


def test_remove_every_copy():
    assert edit_tags(CAPTION, TagEdits(remove=("smile", "^_^"))) == ["alice", "1girl", "long_hair", "blue_eyes"]


def test_replace_in_place_without_creating_a_duplicate():
    assert edit_tags(["a", "b", "c"], TagEdits(replace=(("b", "x"),))) == ["a", "x", "c"]
    assert edit_tags(["a", "b", "c", "x"], TagEdits(replace=(("b", "x"),))) == ["a", "x", "c"]


def test_merge_keeps_first_position():
    edits = TagEdits(merge=((("blonde hair", "yellow hair"), "blonde hair"),))
    assert edit_tags(["1girl", "yellow hair", "smile", "blonde hair"], edits) == ["1girl", "blonde hair", "smile"]
    assert edit_tags(["1girl", "smile"], edits) == ["1girl", "smile"]


def test_underscores_keep_kaomoji():
    tags = ["x", "long_hair", "^_^", ">_<", "o_o", "0_0", "x_x", ";_;", "blue_eyes"]
    assert edit_tags(tags, TagEdits(underscores=True, keep_tokens=0)) == [
        "x", "long hair", "^_^", ">_<", "o_o", "0_0", "x_x", ";_;", "blue eyes"]


@pytest.mark.parametrize("tag", ["^_^", ">_<", "o_o", "0_0", "x_x", "=_=", "@_@", "T_T", "^_^;", "(o)_(o)", "|_|"])
def test_kaomoji_recognised(tag):
    assert is_kaomoji(tag)


@pytest.mark.parametrize("tag", ["long_hair", "1_girl", "hair_ornament", "red_hero_(game)", "smile"])
def test_ordinary_tags_are_not_kaomoji(tag):
    assert not is_kaomoji(tag)


def test_keep_tokens_protect_the_head_from_untargeted_edits():
    tags = ["my_trig", "long_hair", "my_trig"]
    assert edit_tags(tags, TagEdits(underscores=True, keep_tokens=1)) == ["my_trig", "long hair", "my trig"]
    assert edit_tags(tags, TagEdits(dedupe=True, keep_tokens=1)) == ["my_trig", "long_hair"]
    assert edit_tags(tags, TagEdits(underscores=True, keep_tokens=0)) == ["my trig", "long hair", "my trig"]


def test_keep_tokens_do_not_protect_a_targeted_head():
    assert edit_tags(["alice", "smile"], TagEdits(remove=("alice",))) == ["smile"]
    assert edit_tags(["alice", "smile"], TagEdits(replace=(("alice", "bob"),))) == ["bob", "smile"]


def test_dedupe_keeps_first_copy():
    assert edit_tags(CAPTION, TagEdits(dedupe=True)) == ["alice", "1girl", "long_hair", "smile", "^_^", "blue_eyes"]


def test_all_edits_in_one_pass():
    edits = TagEdits(add_trigger="mytrig", remove=("1girl",), replace=(("blue_eyes", "blue eyes"),),
                     merge=((("smile", "grin"), "smile"),), underscores=True, dedupe=True, keep_tokens=1)
    tags = ["alice", "1girl", "grin", "long_hair", "^_^", "smile", "blue_eyes", "long_hair"]
    assert edit_tags(tags, edits) == ["mytrig", "alice", "smile", "long hair", "^_^", "blue eyes"]
    assert edit_tags(edit_tags(tags, edits), edits) == edit_tags(tags, edits)  # applying twice changes nothing


def test_repeated_tags():
    assert repeated_tags(CAPTION) == ["smile"]
    assert repeated_tags(["a", "b"]) == []


def test_parsing_the_command_line_forms():
    assert parse_tag_list(["a, b", "c"]) == ("a", "b", "c")
    assert parse_replace(" blonde hair = yellow hair ") == ("blonde hair", "yellow hair")
    assert parse_merge("a, b, c = a") == (("a", "b", "c"), "a")
    for bad in ("nothing", "=x", "x=", "a,b=c"):
        with pytest.raises(UserError, match="--replace"):
            parse_replace(bad)
    for bad in ("a, b", "= a", "a, b = c, d"):
        with pytest.raises(UserError, match="--merge"):
            parse_merge(bad)


def test_head_protection_follows_the_final_order():
    edits = TagEdits(add_trigger="zzchar", underscores=True, keep_tokens=1)
    assert edit_tags(["long_hair", "blue_eyes"], edits) == ["zzchar", "long hair", "blue eyes"]
    assert edit_tags(["my_char", "long_hair"], TagEdits(add_trigger="my_char", underscores=True)) == [
        "my_char", "long hair"]                                      # the trigger itself is the head
    assert edit_tags(["a_b", "a_b"], TagEdits(add_trigger="t", dedupe=True, keep_tokens=2)) == ["t", "a_b"]
