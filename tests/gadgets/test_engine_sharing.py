"""gadgets.recon.load_engine over the process's engine cache (cardiomm_core.engine.ENGINES): gadgets
of one worker process that load the same checkpoint at once share one engine, and a benchmark peer
is refused however it came into the cache."""

from __future__ import annotations

import threading

import pytest
import torch

from cardiomm_core.checkpoint import save_checkpoint
from cardiomm_core.engine import ENGINES, get_engine
from cardiomm_core.model import CardioMM, config_by_name
from gadgets.recon import check_model_setting, engine_loads, load_engine

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def clean_cache():
    ENGINES.clear()
    yield
    ENGINES.clear()


def test_gadgets_loading_one_checkpoint_at_once_share_one_engine(tmp_path, clean_cache):
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "tiny", CardioMM(config_by_name("tiny", 64)), text_encoder_name="hashing-64",
                           text_encoder_dim=64)
    before = engine_loads()
    start = threading.Barrier(4)
    engines: list[object] = []

    def load() -> None:
        start.wait(timeout=60)  # a hang guard only
        engines.append(load_engine(path, "cpu"))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(engines) == 4 and len({id(engine) for engine in engines}) == 1
    assert engine_loads() - before == 1
    assert engines[0].run_lock is load_engine(path, "cpu").run_lock  # one run lock for the shared model


def test_a_varnet_engine_already_in_the_cache_is_still_refused(tmp_path, clean_cache):
    pytest.importorskip("fastmri", reason="fastmri is not installed (pip install --no-deps fastmri==0.3.0)")
    from cardiomm_core.varnet import VarNetRecon, varnet_config_by_name

    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "peer", VarNetRecon(varnet_config_by_name("tiny", 64)),
                           text_encoder_name="hashing-64", text_encoder_dim=64)
    get_engine(path, "cpu")  # e.g. an evaluation earlier in the same process: no refusal there
    with pytest.raises(ValueError, match="E2E-VarNet benchmark peer") as info:
        load_engine(path, "cpu")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="E2E-VarNet benchmark peer"):
        check_model_setting(str(path), "cpu")
