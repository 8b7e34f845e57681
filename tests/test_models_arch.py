"""Growing a network: a checkpoint of the plain layout starts a layout with the context module added."""

from __future__ import annotations

import pytest
import torch

from firespotter.models.arch import ArchitectureError, build, grow_state, load_state


def test_a_grown_context_module_starts_as_a_near_no_op_and_learns():
    torch.manual_seed(0)
    plain = build("fireseg-lite", gated=True)
    plain.eval()
    grown = build("fireseg-lite", gated=True, context=True)
    state, added = grow_state(grown, plain.state_dict())
    assert added and all(k.startswith("context.") for k in added)
    load_state(grown, state, "test")
    grown.eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        (mask_a, head_a), (mask_b, head_b) = plain(x), grown(x)
    assert torch.allclose(mask_a, mask_b, atol=0.05) and torch.allclose(head_a, head_b, atol=0.01)
    grown.train()
    mask, head = grown(x)
    (mask.mean() + head.mean()).backward()
    assert grown.context[1].weight.grad.abs().sum() > 0  # not a dead ReLU: the module can learn


def test_weights_that_do_not_fit_still_fail_with_one_line():
    plain = build("fireseg-lite")
    wider = build("fireseg-lite", widths=(16, 32, 64, 160, 320))
    state, added = grow_state(wider, plain.state_dict())
    assert added == []
    with pytest.raises(ArchitectureError, match="do not fit"):
        load_state(wider, state, "test")
