"""federated.client: local training equals a plain torch SGD loop over the same batches."""

import pytest
import torch

from federated.client import (
    ClientConfig,
    ClientDataset,
    ClientError,
    batch_plan,
    train_client,
)
from federated.params import ParamLayout
from models.cifg import CIFGConfig, CIFGLanguageModel
from models.nwp import nwp_loss


def model(seed=0):
    return CIFGLanguageModel(CIFGConfig(vocab_size=40, embed_dim=6, hidden_dim=8),
                             generator=torch.Generator().manual_seed(seed))


def data(n=21, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(4, 40, (n, 5), generator=g)
    y[:, 3:] = 0
    return ClientDataset("alice", torch.randint(4, 40, (n, 5), generator=g), y)


def test_batch_plan_covers_each_epoch_once_and_is_seeded():
    cfg = ClientConfig(epochs=2, batch_size=4)
    plan = batch_plan(10, cfg, seed=7)
    assert [len(b) for b in plan] == [4, 4, 2, 4, 4, 2]
    assert sorted(torch.cat(plan[:3]).tolist()) == list(range(10))
    assert sorted(torch.cat(plan[3:]).tolist()) == list(range(10))
    same, other = batch_plan(10, cfg, seed=7), batch_plan(10, cfg, seed=8)
    assert all(torch.equal(a, b) for a, b in zip(plan, same, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(plan, other, strict=True))
    assert len(batch_plan(10, ClientConfig(epochs=2, batch_size=4, max_steps=4), 7)) == 4


def test_train_client_equals_torch_sgd_on_the_same_batches():
    m = model()
    layout = ParamLayout.of(m)
    params = layout.vector(m)
    d = data()
    cfg = ClientConfig(lr=0.2, epochs=2, batch_size=8)
    bound = layout.bind(model(seed=5))  # its own weights are overwritten by params
    update = train_client(bound, params, d, cfg, seed=3, loss_fn=nwp_loss, pad_id=0)

    ref = model()
    opt = torch.optim.SGD(ref.parameters(), lr=0.2)
    losses, tokens = 0.0, 0
    for idx in batch_plan(len(d), cfg, 3):
        opt.zero_grad()
        loss = nwp_loss(ref(d.x[idx]), d.y[idx])
        loss.backward()
        opt.step()
        n = int((d.y[idx] != 0).sum())
        losses, tokens = losses + float(loss) * n, tokens + n
    assert torch.allclose(update.delta, layout.vector(ref) - params, rtol=0, atol=1e-7)
    assert update.num_examples == 21 and update.steps == 6 and update.tokens == tokens
    assert update.loss_sum == pytest.approx(losses, rel=1e-6)
    assert torch.equal(params, layout.vector(m))  # the server's weights are left alone


def test_clipping_bounds_every_local_step():
    # Clip 1e-3 is far below the gradient norm: each step moves the weights by exactly lr * c.
    m = model()
    layout = ParamLayout.of(m)
    params = layout.vector(m)
    cfg = ClientConfig(lr=0.5, batch_size=21, clip_grad_norm=1e-3)  # one step
    u = train_client(layout.bind(model(1)), params, data(), cfg, 0, nwp_loss, 0)
    assert float(u.delta.norm()) == pytest.approx(0.5e-3, rel=1e-4)
    with pytest.raises(ClientError, match="clip_grad_norm"):
        ClientConfig(clip_grad_norm=0.0)


def test_errors():
    with pytest.raises(ClientError, match="lr"):
        ClientConfig(lr=0)
    with pytest.raises(ClientError, match="batch_size"):
        ClientConfig(batch_size=0)
    with pytest.raises(ClientError, match="prox_mu"):
        ClientConfig(prox_mu=-1.0)
    with pytest.raises(ClientError, match="alice"):
        ClientDataset("alice", torch.zeros(2, 3, dtype=torch.int64),
                      torch.zeros(2, 4, dtype=torch.int64))
    m = model()
    layout = ParamLayout.of(m)
    empty = ClientDataset("bob", torch.zeros(0, 5, dtype=torch.int64),
                          torch.zeros(0, 5, dtype=torch.int64))
    with pytest.raises(ClientError, match="bob: no examples"):
        train_client(layout.bind(m), layout.vector(m), empty, ClientConfig(), 0, nwp_loss, 0)
