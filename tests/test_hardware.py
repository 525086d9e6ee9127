"""The CPU's model and extensions (`mlp_research.hardware`), as summaries and benchmarks name them."""

from __future__ import annotations

from mlp_research import hardware

SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: another
"""
EPYC = "processor : 0\nmodel name : AMD EPYC 7B13\nflags : fpu sse2 avx2 fma\n"


def test_extensions_are_read_from_the_first_processor():
    info = hardware.parse_cpuinfo(SAPPHIRE_RAPIDS)
    assert info["model name"] == "Intel(R) Xeon(R) Platinum 8480+" and info["model"] == "143"
    assert hardware.cpu_extensions(info) == ["AVX2", "FMA", "AVX-512", "AVX512-BF16", "AMX", "AMX-BF16", "AMX-INT8"]
    assert hardware.cpu_extensions(hardware.parse_cpuinfo(EPYC)) == ["AVX2", "FMA"]


def test_this_machine_is_described_in_one_line_and_a_dict():
    info = hardware.describe()
    assert set(info) >= {"cpu_model", "cpu_count", "extensions", "fast_bfloat16"}
    assert info["fast_bfloat16"] == bool({"AMX-BF16", "AVX512-BF16"} & set(info["extensions"]))
    assert hardware.label().startswith(info["cpu_model"])


def test_bfloat16_on_a_cpu_without_a_bfloat16_unit_runs_and_says_so(monkeypatch, capsys):
    import jax

    from conftest import tiny_config
    from mlp_research.data import load_splits
    from mlp_research.jax_backend.backend import JaxBackend

    if jax.default_backend() != "cpu":
        return
    monkeypatch.setattr(hardware, "has_fast_bfloat16", lambda: False)
    config = tiny_config(max_epochs=1, matmul_precision="bfloat16")
    trainer = JaxBackend().trainer(config, load_splits(config))
    trainer.start_epoch(0)
    for chunk in range(trainer.layout.chunks_per_epoch):
        trainer.train_chunk(chunk)
    assert trainer.epoch_sums().count == trainer.layout.num_train
    assert "no bfloat16 matrix unit" in capsys.readouterr().err
    JaxBackend().trainer(config.replace(matmul_precision="default"), load_splits(config))
    assert "bfloat16" not in capsys.readouterr().err  # float32 runs say nothing


def test_summary_names_the_hardware(tmp_path):
    from conftest import tiny_config
    from mlp_research.run.driver import train_and_evaluate

    summary = train_and_evaluate(tiny_config(max_epochs=1), str(tmp_path))
    assert summary["device"]["hardware"] == hardware.describe()
