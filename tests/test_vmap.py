"""federated.vmap: many clients at once equal each client trained alone, whatever the chunk."""

import pytest
import torch

from federated.client import ClientConfig, ClientDataset, ClientError, train_client
from federated.params import ParamLayout
from federated.vmap import train_clients_vmap
from models.cifg import CIFGConfig, CIFGLanguageModel
from models.nwp import nwp_loss


def setup(sizes, seq_len=6, seed=0):
    model = CIFGLanguageModel(CIFGConfig(vocab_size=40, embed_dim=6, hidden_dim=8),
                              generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    clients = []
    for i, n in enumerate(sizes):
        y = torch.randint(4, 40, (n, seq_len), generator=g)
        y[:, seq_len - 2:] = 0
        clients.append(ClientDataset(f"c{i}", torch.randint(4, 40, (n, seq_len), generator=g), y))
    return model, ParamLayout.of(model), clients


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_equals_training_each_client_alone(chunk):
    # Sizes give 1 to 4 steps and short last batches: both kinds of padding are exercised.
    model, layout, clients = setup([3, 17, 8, 25, 1])
    params = layout.vector(model)
    cfg = ClientConfig(lr=0.4, batch_size=8, epochs=1, prox_mu=0.05, clip_grad_norm=0.05)
    seeds = [11, 12, 13, 14, 15]
    got = list(train_clients_vmap(model, layout, params, clients, cfg, seeds, nwp_loss, 0, chunk))
    bound = layout.bind(CIFGLanguageModel(model.config))
    for c, s, u in zip(clients, seeds, got, strict=True):
        ref = train_client(bound, params, c, cfg, s, nwp_loss, 0)
        assert torch.allclose(u.delta, ref.delta, rtol=0, atol=1e-6)
        assert (u.num_examples, u.steps, u.tokens) == (ref.num_examples, ref.steps, ref.tokens)
        assert u.loss_sum == pytest.approx(ref.loss_sum, rel=1e-5)
    assert torch.equal(params, layout.vector(model))  # nothing trained the model itself


def test_errors():
    model, layout, clients = setup([3, 0])
    params = layout.vector(model)
    with pytest.raises(ClientError, match="c1: no examples"):
        list(train_clients_vmap(model, layout, params, clients, ClientConfig(), [0, 1],
                                nwp_loss, 0))
    _, _, other = setup([2], seq_len=4)
    with pytest.raises(ClientError, match="sequence length"):
        list(train_clients_vmap(model, layout, params, [clients[0], other[0]], ClientConfig(),
                                [0, 1], nwp_loss, 0))
    with pytest.raises(ValueError, match="chunk"):
        list(train_clients_vmap(model, layout, params, clients, ClientConfig(), [0, 1],
                                nwp_loss, 0, chunk=0))
