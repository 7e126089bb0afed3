"""Content tokens: the same number while a tensor's values stay, a new one after any change PyTorch sees."""

import torch

from gradiend_hf.adapters.content_tokens import content_token, new_token, retoken


def test_a_token_survives_reads_and_changes_with_in_place_writes_and_data_swaps():
    weight = torch.nn.Parameter(torch.zeros(4))
    first = content_token(weight)
    assert content_token(weight) == first and float(weight.sum()) == 0.0  # reading changes nothing
    with torch.no_grad():
        weight.add_(1.0)
    second = content_token(weight)
    assert second != first
    weight.data = torch.ones(4)  # a new storage
    assert content_token(weight) not in (first, second)


def test_a_writer_that_puts_known_values_back_hands_their_token_back():
    weight = torch.zeros(3)
    original = content_token(weight)
    weight.copy_(torch.ones(3))
    assert content_token(weight) != original
    weight.copy_(torch.zeros(3))
    retoken(weight, original)
    assert content_token(weight) == original and new_token() != original
