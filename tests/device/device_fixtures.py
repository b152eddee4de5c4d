"""Remote code whose tree depends on the device, as real Hub code does, and a simulated GPU server.

``write_device_model(root)`` writes a trust_remote_code folder modelled on Qwen-7B's ``modeling_qwen.py``:

* at import: ``SUPPORT_CUDA = torch.cuda.is_available()``, ``SUPPORT_BF16 = SUPPORT_CUDA and
  torch.cuda.is_bf16_supported()``, ``SUPPORT_FP16 = SUPPORT_CUDA and torch.cuda.get_device_capability(0)[0] >= 7``;
* in the model's ``__init__``: precision picked from those (``config.bf16``...), then ``use_flash_attn="auto"``
  resolved from it, flash-attn imported (``try: from flash_attn.flash_attn_interface import ...``), and every
  attention layer given a ``core_attention_flash`` submodule when flash-attn imported and the precision is not
  fp32 -- the extra modules a GPU server builds and a CPU client does not;
* in each block's ``__init__``: the MLP class chosen from ``torch.cuda.get_device_capability()`` (a fused
  gate/up projection on Hopper, two projections elsewhere: different parameters, not only modules);
* ``torch.cuda.device_count()`` and ``get_device_properties(0).multi_processor_count`` read in ``__init__`` (no
  effect on the tree, recorded by the report).

``server_prelude(folder)`` is Python that turns a CPU process into what such code sees on an H100 server: every
``torch.cuda`` query answers as the GPU would, for everyone, and a ``flash_attn`` package is installed.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from fixtures.code_folder import write_code_folder

CONFIGURATION = '''
from transformers import PretrainedConfig


class DevQConfig(PretrainedConfig):
    model_type = "devq"

    def __init__(self, vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=3,
                 num_attention_heads=2, use_flash_attn="auto", bf16=False, fp16=False, fp32=False, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.use_flash_attn = use_flash_attn
        self.bf16 = bf16
        self.fp16 = fp16
        self.fp32 = fp32
        super().__init__(**kwargs)
'''

MODELING = '''
import torch
from torch import nn
from transformers import PreTrainedModel

from .configuration_devq import DevQConfig

SUPPORT_CUDA = torch.cuda.is_available()
SUPPORT_BF16 = SUPPORT_CUDA and torch.cuda.is_bf16_supported()
SUPPORT_FP16 = SUPPORT_CUDA and torch.cuda.get_device_capability(0)[0] >= 7

flash_attn_unpadded_func = None


def _import_flash_attn():
    global flash_attn_unpadded_func
    try:
        from flash_attn.flash_attn_interface import flash_attn_varlen_func as __flash_attn_unpadded_func
        flash_attn_unpadded_func = __flash_attn_unpadded_func
    except ImportError:
        pass


class FlashSelfAttention(nn.Module):
    def __init__(self, causal=False, softmax_scale=None):
        super().__init__()
        assert flash_attn_unpadded_func is not None, "Please install FlashAttention first"
        self.causal = causal
        self.softmax_scale = softmax_scale


class DevQAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_attn = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.c_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.is_fp32 = not (config.bf16 or config.fp16)
        if config.use_flash_attn and flash_attn_unpadded_func is not None and not self.is_fp32:
            self.core_attention_flash = FlashSelfAttention(causal=True)


class FusedGateUpMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gate_up = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)


class SplitMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.w1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.w2 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.c_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)


class DevQBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size)
        self.attn = DevQAttention(config)
        self.ln_2 = nn.LayerNorm(config.hidden_size)
        hopper = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9
        self.mlp = FusedGateUpMLP(config) if hopper else SplitMLP(config)


class DevQPreTrainedModel(PreTrainedModel):
    config_class = DevQConfig
    base_model_prefix = "transformer"

    def _init_weights(self, module):
        pass


class DevQModel(DevQPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.h = nn.ModuleList([DevQBlock(config) for _ in range(config.num_hidden_layers)])
        self.ln_f = nn.LayerNorm(config.hidden_size)
        self.post_init()


class DevQForCausalLM(DevQPreTrainedModel):
    def __init__(self, config):
        autoset_precision = config.bf16 + config.fp16 + config.fp32 == 0
        if autoset_precision:
            if SUPPORT_BF16:
                config.bf16 = True
            elif SUPPORT_FP16:
                config.fp16 = True
            else:
                config.fp32 = True
        if config.use_flash_attn == "auto":
            config.use_flash_attn = bool(config.bf16 or config.fp16)
        if config.use_flash_attn:
            _import_flash_attn()
        super().__init__(config)
        self.gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        self.sms = torch.cuda.get_device_properties(0).multi_processor_count if self.gpus else 0
        self.transformer = DevQModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
'''

# An H100 as remote code sees it, for every caller in the process: what "built on the server" means in a test.
_SERVER_PRELUDE = textwrap.dedent('''
    import os, sys
    import torch

    class _Props:
        name, (major, minor), multi_processor_count = GPU
        total_memory, is_integrated, is_multi_gpu_board, warp_size = 85520809984, 0, 0, 32

    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: 1
    torch.cuda.current_device = lambda: 0
    torch.cuda.is_bf16_supported = lambda including_emulation=True: True
    torch.cuda.get_device_capability = lambda device=None: (_Props.major, _Props.minor)
    torch.cuda.get_device_name = lambda device=None: _Props.name
    torch.cuda.get_device_properties = lambda device=None: _Props()
    sys.path.insert(0, PACKAGES)  # flash-attn installed, as on the server
''')

_FLASH_ATTN = {
    "flash_attn/__init__.py": "__version__ = '2.7.4'\nfrom .flash_attn_interface import flash_attn_func, flash_attn_varlen_func\n",
    "flash_attn/flash_attn_interface.py": "def flash_attn_func(*a, **k):\n    raise RuntimeError('test double')\n"
    "def flash_attn_varlen_func(*a, **k):\n    raise RuntimeError('test double')\n",
    "flash_attn/bert_padding.py": "def pad_input(*a, **k): ...\ndef unpad_input(*a, **k): ...\ndef index_first_axis(*a, **k): ...\n",
    "flash_attn-2.7.4.dist-info/METADATA": "Metadata-Version: 2.1\nName: flash_attn\nVersion: 2.7.4\n",
    "flash_attn-2.7.4.dist-info/RECORD": "",
}


H100 = ("NVIDIA H100 80GB HBM3", (9, 0), 132)
A100 = ("NVIDIA A100-SXM4-80GB", (8, 0), 108)


def server_prelude(packages: Path, gpu: tuple = H100) -> str:
    """Python run first in a subprocess that plays the GPU server (an H100 unless ``gpu`` says otherwise,
    flash-attn installed)."""
    for name, text in _FLASH_ATTN.items():
        path = packages / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return f"PACKAGES = {str(packages)!r}\nGPU = {gpu!r}\n" + _SERVER_PRELUDE


def run_on_server(tmp_path: Path, code: str, gpu: tuple = H100, *, hybridload_active: bool = False) -> None:
    """Run ``code`` in a subprocess playing the GPU server (its own modules cache)."""
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / f"server-modules-{gpu[1][0]}{gpu[1][1]}"))
    if not hybridload_active:
        env["HYBRIDLOAD_DISABLE"] = "1"
    result = subprocess.run([sys.executable, "-c", server_prelude(tmp_path / "site", gpu) + code], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


def server_signature(tmp_path: Path, folder: Path, gpu: tuple = H100) -> Any:
    """Sign the tree a GPU server builds: a process where torch.cuda answers as ``gpu`` does (for everyone)
    and flash-attn is installed; plain transformers, hybridload's integration off."""
    import hybridload

    out = tmp_path / f"server-{gpu[1][0]}{gpu[1][1]}.json"
    run_on_server(tmp_path, f"""
import torch
from transformers import AutoConfig, AutoModelForCausalLM
import hybridload
config = AutoConfig.from_pretrained({str(folder)!r}, trust_remote_code=True)
with torch.device("meta"):
    model = AutoModelForCausalLM.from_config(config, trust_remote_code=True)
open({str(out)!r}, "w").write(hybridload.signature(model).to_json())
""", gpu)
    return hybridload.TreeSignature.read(out)


def write_device_model(root: Path, name: str = "devq_model", **config: Any) -> Path:
    return write_code_folder(
        root / name, {"configuration_devq.py": CONFIGURATION, "modeling_devq.py": MODELING},
        model_type="devq", architecture="DevQForCausalLM",
        auto_map={"AutoConfig": "configuration_devq.DevQConfig", "AutoModelForCausalLM": "modeling_devq.DevQForCausalLM"},
        config=config,
    )
