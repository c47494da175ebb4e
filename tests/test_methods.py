import pytest

import secateur as sc


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_sparsity_outside_range_is_rejected(bad):
    with pytest.raises(sc.InvalidSparsityError, match="outside"):
        sc.Unstructured(bad)
    with pytest.raises(sc.InvalidSparsityError, match="outside"):
        sc.Structured(sparsity=bad)


def test_structured_needs_exactly_one_of_sparsity_or_target():
    with pytest.raises(sc.InvalidSparsityError, match="give one of"):
        sc.Structured()
    with pytest.raises(sc.InvalidSparsityError, match="not both"):
        sc.Structured(sparsity=0.5, target=0.5)


@pytest.mark.parametrize("bad", [0.0, 1.2])
def test_target_outside_range_is_rejected(bad):
    with pytest.raises(sc.InvalidSparsityError):
        sc.Structured(target=bad)


def test_float_target_means_macs():
    assert sc.Structured(target=0.4).target == sc.Macs(0.4)
    assert sc.Structured(target=sc.Params(0.3)).target == sc.Params(0.3)


def test_unknown_criterion_names_the_choices():
    with pytest.raises(sc.UnknownCriterionError, match="magnitude"):
        sc.Unstructured(0.5, criterion="taylorr")
    with pytest.raises(sc.UnknownCriterionError, match="l1"):
        sc.Structured(sparsity=0.5, criterion="bogus")


def test_bad_scope_and_round_to():
    with pytest.raises(ValueError, match="scope"):
        sc.Unstructured(0.5, scope="model")
    with pytest.raises(ValueError, match="round_to"):
        sc.Structured(sparsity=0.5, round_to=0)
