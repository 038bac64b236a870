"""Run configs: YAML keys are field paths, dotted overrides, clear errors naming the key path; every shipped config
loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from tooltune.cli import main
from tooltune.errors import InputError
from tooltune.train.config import config_from_dict, dump_config, load_config
from tooltune.train.methods import METHODS
from tooltune.pretrain.model import load_pretrain_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_every_method_has_a_shipped_config_and_each_loads():
    names = set()
    for path in CONFIGS.glob("*.yaml"):
        if path.name.startswith("pretrain"):
            assert load_pretrain_config(str(path), []).gpt2.n_layer > 0
            continue
        cfg = load_config(path)
        if path.name.startswith("demo"):  # the demo's own run (tests/test_demo.py checks it against the demo)
            continue
        assert cfg.train.out.endswith(cfg.method.name)
        names.add(cfg.method.name)
    assert names == set(METHODS)


def test_overrides_are_dotted_paths_parsed_as_yaml(tmp_path):
    cfg = load_config(CONFIGS / "lora.yaml", ["method.r=32", "train.lr=5e-5", "method.target_modules=[q_proj, o_proj]",
                                              "model.gradient_checkpointing=true"])
    assert (cfg.method.r, cfg.train.lr, cfg.method.target_modules) == (32, 5e-5, ("q_proj", "o_proj"))
    assert cfg.model.gradient_checkpointing is True
    dump_config(cfg, tmp_path / "as_run.yaml")  # the config as run round-trips
    assert load_config(tmp_path / "as_run.yaml") == cfg


@pytest.mark.parametrize("override, where", [
    ("method.rank=4", "method.rank: unknown key"),
    ("trian.lr=1", "trian: unknown key"),
    ("train.lr=-1", "train.lr: must be positive"),
    ("train.batch_size=2.5", "train.batch_size: must be an integer"),
    ("method.name=lorra", "method.name: unknown method 'lorra'"),
    ("train.schedule=step", "train.schedule: must be one of"),
    ("model.gradient_checkpointing=maybe", "model.gradient_checkpointing: must be true or false"),
    ("method.target_r=99", "method.target_r: must not exceed"),
])
def test_bad_values_are_errors_naming_the_key_path(override, where):
    with pytest.raises(InputError) as err:
        load_config(CONFIGS / "lora.yaml", [override])
    assert where in str(err.value) and "lora.yaml" in str(err.value)


def test_cli_reports_config_errors_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: fast\n")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "train.lr: must be a number" in err and "Traceback" not in err
    assert main(["train", str(CONFIGS / "lora.yaml"), "model.path=/nonexistent/model"]) == 2
    assert "model.path" in capsys.readouterr().err


from tooltune.hardware import cpu_flags as read_cpu_flags  # noqa: E402  (the unpatched reader)

AVX2_CPUINFO = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
BF16_CPUINFO = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"


def _on_cpu(monkeypatch, cpuinfo: str, capability: str) -> None:
    import torch

    from tooltune import hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: read_cpu_flags(cpuinfo))
    hardware.native_bf16.cache_clear()


def test_bf16_on_a_cpu_without_native_bf16_is_warned_about(monkeypatch):
    from tooltune import hardware
    from tooltune.train.recipe import cpu_bf16_warning

    bf16 = config_from_dict({"model": {"path": "m", "dtype": "bfloat16"}})
    fp32 = config_from_dict({"model": {"path": "m", "dtype": "float32"}})
    _on_cpu(monkeypatch, AVX2_CPUINFO, "AVX2")
    assert "model.dtype=float32" in cpu_bf16_warning(bf16)
    assert cpu_bf16_warning(fp32) is None
    # torch says only "AVX512" on a CPU with AVX512-BF16: the CPU's own flags decide
    _on_cpu(monkeypatch, BF16_CPUINFO, "AVX512")
    assert cpu_bf16_warning(bf16) is None
    hardware.native_bf16.cache_clear()


def test_dtype_auto_follows_the_hardware(monkeypatch):
    from tooltune import hardware
    from tooltune.hardware import torch_dtype

    import torch

    assert config_from_dict({"model": {"path": "m"}}).model.dtype == "auto"  # the default
    _on_cpu(monkeypatch, BF16_CPUINFO, "AVX512")
    assert hardware.resolve_dtype("auto") == "bfloat16" and torch_dtype("auto") is torch.bfloat16
    assert "native bf16" in hardware.describe("auto")
    _on_cpu(monkeypatch, AVX2_CPUINFO, "AVX2")
    assert hardware.resolve_dtype("auto") == "float32" and torch_dtype("auto") is torch.float32
    assert hardware.resolve_dtype("bfloat16") == "bfloat16"  # an explicit dtype is kept
    hardware.native_bf16.cache_clear()


def test_cpu_flags_are_read_from_cpuinfo():
    from tooltune.hardware import cpu_flags

    assert "avx512_bf16" in cpu_flags(BF16_CPUINFO)
    assert "avx512_bf16" not in cpu_flags(AVX2_CPUINFO)
    assert cpu_flags("no flags line here") == set()


def test_cpu_name_is_read_from_cpuinfo():
    from tooltune.hardware import cpu_name

    assert cpu_name("processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu\n") == "AMD EPYC 9B14"
    assert cpu_name("processor\t: 0\n")  # no model name line: the platform's word, never empty
