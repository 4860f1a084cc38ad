"""Clients on a device: the names accepted, the errors, and (where torch sees a GPU) the same
round on the GPU as on the CPU, for both engines."""

import pytest
import torch

from data.config import ConfigError
from federated.client import ClientConfig, ClientDataset
from federated.config import FederatedConfig
from federated.fedavg import FedAvg, FedAvgConfig, FedAvgError, check_device
from federated.params import ParamLayout
from federated.run import client_device
from models.cifg import CIFGConfig, CIFGLanguageModel

CUDA = torch.cuda.is_available()


def _setup(sizes=(3, 17, 8, 25, 1), seq_len=6):
    model = CIFGLanguageModel(CIFGConfig(vocab_size=40, embed_dim=6, hidden_dim=8),
                              generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    clients = []
    for i, n in enumerate(sizes):
        y = torch.randint(4, 40, (n, seq_len), generator=g)
        y[:, seq_len - 2:] = 0
        clients.append(ClientDataset(f"c{i}", torch.randint(4, 40, (n, seq_len), generator=g), y))
    return model, clients


def _round(engine, device):
    model, clients = _setup()
    cfg = FedAvgConfig(ClientConfig(lr=0.4, batch_size=8, clip_grad_norm=0.5), engine=engine,
                       vmap_chunk=2, device=device)
    algo = FedAvg(model, cfg)
    state, metrics = algo.apply(algo.init(ParamLayout.of(model).vector(model)), clients, seed=5)
    return state, metrics


def test_device_names():
    assert check_device("cpu", FedAvgError) == torch.device("cpu")
    for bad in ("tpu", "gpu", "", 3, None):
        with pytest.raises(FedAvgError, match="device"):
            FedAvgConfig(device=bad)
    for bad in ("gpu", "mps", 0):
        with pytest.raises(ConfigError, match="device"):
            FederatedConfig(data="x", device=bad)
    assert FederatedConfig(data="x", device="cuda:1").device == "cuda:1"


@pytest.mark.skipif(CUDA, reason="this machine has a GPU")
def test_a_gpu_that_is_not_there_is_a_clear_error():
    with pytest.raises(FedAvgError, match="no CUDA GPU"):
        FedAvgConfig(device="cuda")


def test_torchrun_processes_take_the_gpu_of_their_local_rank(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert client_device("cuda") == "cuda" and client_device("cpu") == "cpu"
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert client_device("cuda") == "cuda:3"
    assert client_device("cuda:1") == "cuda:1" and client_device("cpu") == "cpu"


def test_client_data_moves_only_when_it_must():
    _, clients = _setup((4,))
    c = clients[0]
    assert c.to("cpu") is c and c.to(torch.device("cpu")) is c


@pytest.mark.parametrize("engine", ["sequential", "vmap"])
def test_explicit_cpu_is_the_default(engine):
    a, ma = _round(engine, "cpu")
    model, clients = _setup()
    algo = FedAvg(model, FedAvgConfig(ClientConfig(lr=0.4, batch_size=8, clip_grad_norm=0.5),
                                      engine=engine, vmap_chunk=2))
    b, mb = algo.apply(algo.init(ParamLayout.of(model).vector(model)), clients, seed=5)
    assert torch.equal(a.params, b.params) and ma == mb


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (none on this machine)")
@pytest.mark.parametrize("engine", ["sequential", "vmap"])
def test_a_round_on_the_gpu_equals_the_cpu_round(engine):
    cpu, m_cpu = _round(engine, "cpu")
    gpu, m_gpu = _round(engine, "cuda")
    assert gpu.params.device.type == "cpu"  # the server state stays on the CPU
    assert torch.allclose(gpu.params, cpu.params, rtol=0, atol=1e-5)
    assert m_gpu["train_tokens"] == m_cpu["train_tokens"]
    assert m_gpu["train_loss"] == pytest.approx(m_cpu["train_loss"], rel=1e-4)
