"""The published figures are read, not retyped: the texts derived from them read as the paper prints them."""

from knlab.studies import published


def test_fig_3_reads_as_printed():
    assert published.det_suppression_text() == "this +316%, these -124%, that +208%, those -158%"


def test_at_most_overturned_is_fig_6bs_largest_drop():
    drops = {name: before - after for name, (before, after) in published.OVERTURN.items()}
    assert published.most_overturned() == 5.2  # the paper's "at most 5.2%"
    assert max(drops, key=drops.get) == "determiner_noun_agreement_2"
