"""Audio encoder + adapter: checkpoint names, output lengths, batch padding invariance, bf16."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine import audio
from engine.adapter import Adapter
from engine.encoder import AudioEncoder
from tests.helpers import DATA, speech

N_STATE, N_HEAD, LLM_DIM = 64, 2, 96


def small_modules(dtype: torch.dtype = torch.float32) -> tuple[AudioEncoder, Adapter]:
    torch.manual_seed(0)
    encoder = AudioEncoder(n_mels=128, n_ctx=1500, n_state=N_STATE, n_head=N_HEAD, n_layer=2)
    adapter = Adapter(N_STATE, LLM_DIM, kernel_size=3, stride=2)
    # Non-trivial norms and biases, so masking mistakes cannot hide behind default init.
    with torch.no_grad():
        for module in (encoder, adapter):
            for param in module.parameters():
                param.add_(0.1 * torch.randn_like(param))
    return encoder.to(dtype).eval(), adapter.to(dtype).eval()


def run(encoder: AudioEncoder, adapter: Adapter, waves: list[np.ndarray]):
    mels, lengths = audio.batch_mels([audio.log_mel(w) for w in waves])
    with torch.no_grad():
        h, enc_lengths = encoder(mels.to(encoder.conv1.weight.dtype), lengths)
        return adapter(h, enc_lengths)


def test_parameter_names_and_shapes_follow_the_checkpoint() -> None:
    manifest = json.loads((DATA / "step-audio2-mini-tensors.json").read_text())
    expected = {
        name: shape for name, shape in manifest.items()
        if name.startswith(("encoder.", "adapter."))
    }
    with torch.device("meta"):
        encoder = AudioEncoder(n_mels=128, n_ctx=1500, n_state=1280, n_head=20, n_layer=32)
        adapter = Adapter(1280, 3584, kernel_size=3, stride=2)
    ours = {f"encoder.{k}": list(v.shape) for k, v in encoder.state_dict().items()}
    ours |= {f"adapter.{k}": list(v.shape) for k, v in adapter.state_dict().items()}
    assert ours == expected
    assert list(ours) == list(expected)  # same order as the released state dict


@pytest.mark.parametrize("n_samples", [1_600, 16_000, 16_160, 16_320, 16_480, 57_777])
def test_output_length_equals_placeholder_count(n_samples: int) -> None:
    encoder, adapter = small_modules()
    rng = np.random.default_rng(n_samples)
    y, tok_lengths = run(encoder, adapter, [rng.standard_normal(n_samples).astype(np.float32)])
    n = audio.placeholder_count(n_samples)
    assert tok_lengths.tolist() == [n]
    assert y.shape[0] == 1 and y.shape[2] == LLM_DIM and y.shape[1] >= n
    assert torch.isfinite(y).all()


def test_full_chunk_gives_313_tokens_and_too_long_input_is_refused() -> None:
    encoder, adapter = small_modules()
    y, tok_lengths = run(encoder, adapter, [np.zeros(audio.CHUNK_SAMPLES, dtype=np.float32)])
    assert tok_lengths.tolist() == [313] and y.shape[1] >= 313
    too_long = torch.zeros(1, 128, 3002)
    with pytest.raises(ValueError, match="limit"):
        encoder(too_long, torch.tensor([3000]))


def test_padded_batch_gives_the_same_valid_outputs_as_each_item_alone() -> None:
    encoder, adapter = small_modules()
    # 16_000 and 16_100 samples give an odd number of encoder frames (25), the case where the
    # adapter conv reads one frame past the valid ones; the long item pads both in the batch.
    long = speech("A much longer sentence, spoken slowly and clearly.")
    waves = [speech("Good morning, everybody.")[:16_000], long, long[-16_100:], long[:15_245]]
    y_batch, lengths = run(encoder, adapter, waves)
    assert lengths.tolist() == [audio.placeholder_count(len(w)) for w in waves]
    for i, wave in enumerate(waves):
        y_alone, n_alone = run(encoder, adapter, [wave])
        n = int(n_alone[0])
        assert n == int(lengths[i])
        torch.testing.assert_close(y_batch[i, :n], y_alone[0, :n], atol=1e-4, rtol=1e-4)


def test_bf16_runs_and_stays_close_to_fp32() -> None:
    wave = speech("Testing half precision.")
    y32, n32 = run(*small_modules(torch.float32), [wave])
    y16, n16 = run(*small_modules(torch.bfloat16), [wave])
    assert y16.dtype == torch.bfloat16 and n16.tolist() == n32.tolist()
    n = int(n32[0])
    err = (y16[0, :n].float() - y32[0, :n]).norm() / y32[0, :n].norm()
    assert err < 0.05


def test_encoder_equals_transformers_qwen2_audio_encoder() -> None:
    """Same architecture as Qwen2-Audio's encoder (the release's initialisation, spec 0): with
    the weights renamed, an unpadded 1 s chunk (102 frames, all valid) gives the same states."""
    from transformers import Qwen2AudioEncoderConfig
    from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder

    encoder, _ = small_modules()
    mel = audio.log_mel(speech("One second of speech, more or less.")[:16_000])
    n_frames = mel.shape[1]
    assert n_frames == 102
    config = Qwen2AudioEncoderConfig(
        num_mel_bins=128, encoder_layers=2, encoder_attention_heads=N_HEAD,
        encoder_ffn_dim=4 * N_STATE, d_model=N_STATE, max_source_positions=n_frames // 2,
    )
    config._attn_implementation = "eager"
    theirs = Qwen2AudioEncoder(config).eval()
    renames = {"attn.query": "self_attn.q_proj", "attn.key": "self_attn.k_proj",
               "attn.value": "self_attn.v_proj", "attn.out": "self_attn.out_proj",
               "attn_ln": "self_attn_layer_norm", "mlp.0": "fc1", "mlp.2": "fc2",
               "mlp_ln": "final_layer_norm", "blocks.": "layers.", "after_norm": "layer_norm"}
    state = {}
    for name, value in encoder.state_dict().items():
        if name == "positional_embedding.weight":
            name, value = "embed_positions.weight", value[: n_frames // 2]
        for ours, hf in renames.items():
            name = name.replace(ours, hf)
        state[name] = value
    theirs.load_state_dict(state)
    with torch.no_grad():
        ours_h, _ = encoder(mel[None], torch.tensor([n_frames]))
        ref = theirs(mel[None]).last_hidden_state
    torch.testing.assert_close(ours_h, ref, atol=1e-4, rtol=1e-4)
