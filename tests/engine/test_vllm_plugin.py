"""The vLLM plugin on the tiny checkpoint: registration, loading, processor, encoder parity."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.types import AudioSegment, TextSegment
from tests.helpers import speech

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def llm(tiny_checkpoint: Path):
    """vLLM's offline LLM on the tiny checkpoint, fp32 so parity checks are tight."""
    from vllm import LLM

    engine = LLM(
        model=str(tiny_checkpoint), dtype="float32", max_model_len=2048, max_num_seqs=4,
        enforce_eager=True, seed=0,
    )
    yield engine
    engine.llm_engine.engine_core.shutdown()


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_checkpoint))


@pytest.fixture(scope="module")
def special(tokenizer):
    from engine.tokens import SpecialTokens

    return SpecialTokens.from_tokenizer(tokenizer)


def _prompt(tokenizer, special, audio: np.ndarray, text: str = "Say something.") -> dict:
    from engine.prompt import tokenize_prompt

    ids = tokenize_prompt(
        (TextSegment("<|BOT|>human\n"), AudioSegment(audio), TextSegment(f"{text}<|EOT|>"),
         TextSegment("<|BOT|>assistant\n")),
        tokenizer, special,
    )
    return {"prompt_token_ids": list(ids.ids),
            "multi_modal_data": {"audio": [(a, 16_000) for a in ids.audios]}}


def _greedy(max_tokens: int, logprobs: int | None = None):
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True,
                          logprobs=logprobs, skip_special_tokens=False, detokenize=False)


def test_entry_point_registers_config_and_model(tiny_checkpoint: Path) -> None:
    from transformers import AutoConfig
    from vllm import ModelRegistry

    from engine.config import StepAudio2Config

    plugins = {e.name: e for e in importlib.metadata.entry_points(group="vllm.general_plugins")}
    assert plugins["step_audio_2"].value == "engine.vllm_plugin:register"
    plugins["step_audio_2"].load()()
    assert "StepAudio2ForCausalLM" in ModelRegistry.get_supported_archs()
    assert isinstance(AutoConfig.from_pretrained(str(tiny_checkpoint)), StepAudio2Config)


def test_cpu_refuses_attention_heads_below_32(tiny_checkpoint: Path) -> None:
    from engine.config import load_config
    from engine.vllm_plugin.model import check_head_size

    config = load_config(tiny_checkpoint)
    check_head_size(config, on_cpu=True)  # the tiny checkpoint has 32
    config.text_config.num_attention_heads *= 2
    config.text_config.head_dim = None
    with pytest.raises(ValueError, match="head size 16 is below 32"):
        check_head_size(config, on_cpu=True)
    check_head_size(config, on_cpu=False)


def test_load_weights_fills_every_parameter_from_the_released_names(
    llm, tiny_checkpoint: Path
) -> None:
    from safetensors.torch import load_file
    from vllm.config import set_current_vllm_config

    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(tiny_checkpoint.glob("model-*.safetensors")):
        tensors.update(load_file(str(shard)))
    assert any(name.startswith("model.") for name in tensors)  # HF names, not vLLM's
    config = llm.llm_engine.vllm_config

    def load_into_fresh_model(model):
        # A fresh instance: the serving one has its linear weights repacked for the CPU.
        with set_current_vllm_config(config), torch.device("cpu"):
            fresh = type(model)(vllm_config=config, prefix="fresh")
        loaded = fresh.load_weights(iter(tensors.items()))  # raises on an unknown name
        return loaded, {name for name, _ in fresh.named_parameters()}

    ((loaded, params),) = llm.apply_model(load_into_fresh_model)
    assert loaded == params


def test_prompt_expands_each_audio_to_its_placeholders(llm, tokenizer, special) -> None:
    from engine.audio import placeholder_count

    audios = [speech("hello there"), speech("a second and longer sentence to hear")]
    prompt = _prompt(tokenizer, special, audios[0])
    prompt["prompt_token_ids"][:0] = [special.audio_patch]
    prompt["multi_modal_data"]["audio"].insert(0, (audios[1], 16_000))
    out = llm.generate(prompt, _greedy(1), use_tqdm=False)[0]
    ids = list(out.prompt_token_ids)
    starts = [i for i, t in enumerate(ids) if t == special.audio_start]
    assert len(starts) == 2
    for start, audio in zip(starts, [audios[1], audios[0]], strict=True):
        n = placeholder_count(len(audio))
        assert ids[start + 1 : start + 1 + n] == [special.audio_patch] * n
        assert ids[start + 1 + n] == special.audio_end
    assert ids.count(special.audio_patch) == sum(placeholder_count(len(a)) for a in audios)


def test_generates_from_audio_and_text_and_audio_changes_logits(llm, tokenizer, special) -> None:
    a = _prompt(tokenizer, special, speech("what is the weather like today"))
    b = _prompt(tokenizer, special, speech("please play some music for me"))
    out_a, out_b = llm.generate([a, b], _greedy(6, logprobs=5), use_tqdm=False)
    assert len(out_a.outputs[0].token_ids) == 6
    first_a = {t: lp.logprob for t, lp in out_a.outputs[0].logprobs[0].items()}
    first_b = {t: lp.logprob for t, lp in out_b.outputs[0].logprobs[0].items()}
    assert first_a != first_b
    again = llm.generate(a, _greedy(6, logprobs=5), use_tqdm=False)[0]
    assert list(again.outputs[0].token_ids) == list(out_a.outputs[0].token_ids)


def test_encoder_and_adapter_in_vllm_equal_plain_torch(llm, tiny_checkpoint: Path) -> None:
    from safetensors.torch import load_file

    from engine.adapter import Adapter
    from engine.audio import log_mel, placeholder_count
    from engine.config import load_config
    from engine.encoder import AudioEncoder

    audios = [speech("one two three"), speech("a much longer utterance with many more words")]
    mels = [log_mel(a) for a in audios]
    counts = torch.tensor([placeholder_count(len(a)) for a in audios])

    def embed(model):
        with torch.no_grad():
            out = model.embed_multimodal(input_features=mels, audio_num_tokens=counts)
        return [e.float().cpu() for e in out]

    (plugin,) = llm.apply_model(embed)

    dims = load_config(tiny_checkpoint).audio_dims
    encoder = AudioEncoder(dims.n_mels, dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head,
                           dims.n_audio_layer)
    adapter = Adapter(dims.n_audio_state, dims.llm_dim, dims.kernel_size, dims.adapter_stride)
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(tiny_checkpoint.glob("*.safetensors")):
        tensors.update(load_file(str(shard)))
    for prefix, module in (("encoder.", encoder), ("adapter.", adapter)):
        state = {k[len(prefix):]: v.float() for k, v in tensors.items() if k.startswith(prefix)}
        module.load_state_dict(state, strict=True)
    with torch.no_grad():
        for mel, n, got in zip(mels, counts.tolist(), plugin, strict=True):
            from engine.audio import batch_mels

            batch, lengths = batch_mels([mel])
            h, enc_lengths = encoder.float()(batch, lengths)
            y, _ = adapter.float()(h, enc_lengths)
            assert got.shape == (n, dims.llm_dim)
            torch.testing.assert_close(got, y[0, :n], rtol=1e-4, atol=1e-4)


def test_too_long_audio_is_refused_and_engine_keeps_working(llm, tokenizer, special) -> None:
    long_audio = np.zeros(31 * 16_000, dtype=np.float32)
    prompt = {"prompt_token_ids": [special.audio_patch],
              "multi_modal_data": {"audio": [(long_audio, 16_000)]}}
    with pytest.raises(ValueError, match="audio chunk"):
        llm.generate(prompt, _greedy(1), use_tqdm=False)
    ok = llm.generate(_prompt(tokenizer, special, speech("still alive")), _greedy(2),
                      use_tqdm=False)[0]
    assert len(ok.outputs[0].token_ids) == 2
