import pytest
import torch

from qsal_lab.machine import cpu_description, torch_threads


def test_cpu_description_reads_name_and_int8_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse avx512_vnni avx_vnni\n")
    assert cpu_description(info) == ("Test CPU 9000", ["avx512_vnni", "avx_vnni"])
    info.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\nModel\t\t: Raspberry Pi 5\n")
    assert cpu_description(info) == ("Raspberry Pi 5", ["asimddp"])
    assert cpu_description(tmp_path / "missing")[0].startswith("unknown CPU")


def test_torch_threads_restores_the_count_also_on_error():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="positive integer"), torch_threads(0):
        pass
