"""federated.params: flat vectors and models, views both ways, tied weights once."""

import pytest
import torch

from federated.params import ParamLayout
from models.cifg import CIFGConfig, CIFGLanguageModel


def model(seed=0):
    return CIFGLanguageModel(CIFGConfig(vocab_size=30, embed_dim=4, hidden_dim=6),
                             generator=torch.Generator().manual_seed(seed))


def test_layout_counts_tied_weights_once_and_round_trips():
    m = model()
    layout = ParamLayout.of(m)
    assert layout.numel == m.num_parameters() == m.config.num_parameters()
    assert layout.names.count("embedding") == 1  # the output layer is the same tensor
    vec = layout.vector(m)
    assert vec.shape == (layout.numel,) and vec.dtype == torch.float32
    views = layout.unflatten(vec)
    for name, p in m.named_parameters():
        assert torch.equal(views[name], p)
    assert torch.equal(layout.flatten(views), vec)
    other = model(seed=1)
    layout.load(other, vec)
    assert torch.equal(layout.vector(other), vec)


def test_unflatten_keeps_leading_dimensions():
    layout = ParamLayout.of(model())
    stack = torch.arange(3 * layout.numel, dtype=torch.float32).view(3, layout.numel)
    views = layout.unflatten(stack)
    assert views["embedding"].shape == (3, 30, 4)
    views["embedding"][1, 0, 0] = -1.0  # a view: writes through
    assert stack[1, 0] == -1.0  # "embedding" comes first


def test_bind_makes_parameters_and_gradients_views_of_two_buffers():
    m = model()
    layout = ParamLayout.of(m)
    before = layout.vector(m)
    bound = layout.bind(m)
    assert torch.equal(bound.weights, before)
    x = torch.randint(4, 30, (2, 5))
    m(x).sum().backward()
    assert bound.grads.abs().sum() > 0  # backward wrote into the flat buffer
    assert torch.equal(bound.grads, layout.flatten({n: p.grad for n, p in m.named_parameters()}))
    with torch.no_grad():
        bound.weights.zero_()
    assert all(float(p.detach().abs().sum()) == 0 for p in m.parameters())
    bound.check()
    m.zero_grad(set_to_none=True)
    with pytest.raises(RuntimeError, match="no longer bound"):
        bound.check()


def test_errors():
    layout = ParamLayout.of(model())
    with pytest.raises(ValueError, match="elements"):
        layout.unflatten(torch.zeros(layout.numel + 1))
    with pytest.raises(ValueError, match="expected parameters"):
        layout.flatten({"embedding": torch.zeros(30, 4)})
    with pytest.raises(TypeError, match="float32"):
        ParamLayout.of(model().double())
